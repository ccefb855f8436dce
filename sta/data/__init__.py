"""Data for evaluation: the dataset table, VideoMAE list files, PyAV decoding, test-time views, synthetic clips.

Names load on first use, so ``import sta.data`` (and the layers above that only need
its table) does not import OpenCV or PyAV.
"""

from __future__ import annotations

import importlib

_LAZY = {
    **dict.fromkeys(("ListFileError", "VideoEntry", "read_list_file"), "sta.data.listfile"),
    **dict.fromkeys(("IMAGENET_MEAN", "IMAGENET_STD", "PROTOCOLS", "ClipView", "ViewProtocol", "kinetics_test_indices",
                     "make_test_views", "normalize", "resize_short_side", "resized_hw", "spatial_crop_starts",
                     "ssv2_test_indices", "temporal_view_indices"), "sta.data.sampling"),
    **dict.fromkeys(("SampledFrames", "VideoDecodeError", "count_frames", "read_sampled_frames", "read_test_views",
                     "read_video_frames"), "sta.data.video"),
    **dict.fromkeys(("DATASETS", "Dataset", "dataset"), "sta.data.datasets"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sta.data' has no attribute {name!r}")
