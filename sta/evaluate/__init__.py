"""Multi-view evaluation (`sta eval`): the VideoMAE test protocol, resumable predictions, torchrun."""

from sta.evaluate.run import DATASETS, EvalSettings, ResumeMismatch, evaluate

__all__ = ["DATASETS", "EvalSettings", "ResumeMismatch", "evaluate"]
