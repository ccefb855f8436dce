"""Shipping a pruned model: export it as a static graph (``export``) and run it on a backend (``runners``).

STA's token counts follow from the configuration alone, so a pruned model is a
static graph: ONNX (ONNX Runtime, OpenVINO) and ``torch.export`` take it as it is.
"""
