"""Pictures: which tokens a method keeps (``tokens``), GradNorm maps, and accuracy-vs-GFLOPs plots (``plot``)."""
