"""sta-prune: Semantic-aware Temporal Accumulation (STA) token pruning for video transformers.

The public names below load on first use, so ``import sta`` stays light (no PyAV,
OpenCV, transformers, ONNX or OpenVINO until a feature needs them). The layers,
lowest first: ``core`` (torch only) and ``utils`` < ``data``, ``labels`` <
``models`` < ``adapters`` < ``measure`` < ``deploy`` < ``factory`` < ``evaluate``,
``vis`` < ``demo`` < ``cli``; a module imports only from its own layer or below.
"""

from __future__ import annotations

import importlib

__version__ = "0.4.0"

_LAZY = {
    "patch_hf": "sta.adapters.hf",
    "load_hf_directory": "sta.adapters.directory",
    "hf_architecture": "sta.adapters.directory",
    "sta_keep_indices": "sta.core.prune",
    "PruneStage": "sta.core.schedule",
    "build_stages": "sta.core.schedule",
    "tokens_after_stages": "sta.core.schedule",
    "ClipClassifier": "sta.core.contract",
    "ClipConfig": "sta.core.contract",
    "TokenTrace": "sta.core.contract",
    "count_flops": "sta.measure.flops",
    "flops_report": "sta.measure.flops",
    "CheckpointError": "sta.models.checkpoint",
    "load_checkpoint": "sta.models.checkpoint",
    "load_weights": "sta.models.checkpoint",
    "read_checkpoint": "sta.models.checkpoint",
    "MODEL_CONFIGS": "sta.models.vit",
    "ViTConfig": "sta.models.vit",
    "VisionTransformer": "sta.models.vit",
    "create_model": "sta.models.vit",
    "ModelRequest": "sta.factory",
    "PruningRequest": "sta.factory",
    "load_model": "sta.factory",
    "open_runner": "sta.factory",
    "StaError": "sta.errors",
    "InvalidInput": "sta.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sta' has no attribute {name!r}")
