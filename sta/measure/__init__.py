"""What a model does at a given r: FLOPs in the paper's convention (``flops``), wall-clock speed (``speed``), and
how much GradNorm each method keeps (``gradnorm``, with the streaming statistics of ``stats``)."""
