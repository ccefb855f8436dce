"""Multi-view evaluation (`sta eval`): the VideoMAE test protocol, resumable predictions, torchrun."""

from sta.evaluate.records import ResumeMismatch
from sta.evaluate.run import DATASETS, EvalSettings, EvalSummary, evaluate, video_scores

__all__ = ["DATASETS", "EvalSettings", "EvalSummary", "ResumeMismatch", "evaluate", "video_scores"]
