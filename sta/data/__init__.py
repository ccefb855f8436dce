"""Data loading for VideoMAE evaluation: list files, PyAV decoding, test-time views."""

from sta.data.listfile import ListFileError, VideoEntry, read_list_file
from sta.data.sampling import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PROTOCOLS,
    ClipView,
    ViewProtocol,
    kinetics_test_indices,
    make_test_views,
    normalize,
    resize_short_side,
    resized_hw,
    spatial_crop_starts,
    ssv2_test_indices,
    temporal_view_indices,
)
from sta.data.video import (
    SampledFrames,
    VideoDecodeError,
    count_frames,
    read_sampled_frames,
    read_test_views,
    read_video_frames,
)

__all__ = [
    "ListFileError", "VideoEntry", "read_list_file",
    "IMAGENET_MEAN", "IMAGENET_STD", "PROTOCOLS", "ClipView", "ViewProtocol",
    "kinetics_test_indices", "ssv2_test_indices", "temporal_view_indices",
    "resize_short_side", "resized_hw", "spatial_crop_starts", "normalize", "make_test_views",
    "SampledFrames", "VideoDecodeError", "count_frames", "read_sampled_frames",
    "read_test_views", "read_video_frames",
]
