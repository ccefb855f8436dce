"""Small videos written with PyAV for the evaluation and visualisation tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode ``N x H x W x 3`` uint8 frames as near-lossless H.264 (yuv420p, so H and W even)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0", "preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def solid_video(path: Path, grey: int, num_frames: int = 40, height: int = 36, width: int = 48) -> Path:
    """A video whose every pixel is ``grey``: a stand-in whose class a test model can read off."""
    return write_video(path, np.full((num_frames, height, width, 3), grey, dtype=np.uint8))


def noise_video(path: Path, num_frames: int = 40, height: int = 36, width: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8))
