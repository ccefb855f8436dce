"""Pictures: which tokens a method keeps (``tokens``), the GradNorm study's figures (``gradnorm_plots``), and
accuracy-vs-GFLOPs plots (``plot``). The measuring itself is :mod:`sta.measure`."""
