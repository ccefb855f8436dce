"""Cost of a model: FLOPs in the paper's convention (``flops``) and wall-clock speed (``speed``)."""
