"""The names ``sta.demo.proxy`` offered in 0.2 (kept for a release): the proxy task and the bundled model.

The task now lives in :mod:`sta.data.synthetic`, the model in :mod:`sta.models.bundled`.
"""

from sta.data.synthetic import CLASS_NAMES, PROXY_TASK, ProxyTask, make_clips, write_videos
from sta.models.bundled import BUNDLED_CHECKPOINT as DEFAULT_CHECKPOINT
from sta.models.bundled import load_bundled_model as load_proxy_model

__all__ = ["CLASS_NAMES", "DEFAULT_CHECKPOINT", "PROXY_TASK", "ProxyTask", "load_proxy_model", "make_clips",
           "write_videos"]
