"""sta-prune: Semantic-aware Temporal Accumulation (STA) token pruning for VideoMAE video transformers."""

from sta.adapters.directory import hf_architecture, load_hf_directory
from sta.adapters.hf import patch_hf
from sta.core.prune import sta_keep_indices
from sta.core.schedule import PruneStage, build_stages, tokens_after_stages
from sta.measure.flops import count_flops, flops_report
from sta.models.checkpoint import CheckpointError, load_checkpoint, load_weights, read_checkpoint
from sta.models.vit import MODEL_CONFIGS, TokenTrace, VisionTransformer, ViTConfig, create_model

__version__ = "0.2.0"

__all__ = [
    "patch_hf", "load_hf_directory", "hf_architecture",
    "MODEL_CONFIGS", "TokenTrace", "ViTConfig", "VisionTransformer", "create_model",
    "CheckpointError", "load_checkpoint", "load_weights", "read_checkpoint",
    "count_flops", "flops_report", "sta_keep_indices",
    "PruneStage", "build_stages", "tokens_after_stages",
]
