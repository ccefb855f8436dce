"""Tests for sta.data.video: PyAV decoding, frame numbering, and broken inputs."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sta.data import (
    SampledFrames,
    VideoDecodeError,
    ViewProtocol,
    count_frames,
    make_test_views,
    read_sampled_frames,
    read_test_views,
    read_video_frames,
    temporal_view_indices,
)
from tests.helpers import SAMPLE_VIDEOS

NUM_FRAMES, HEIGHT, WIDTH = 40, 48, 64
# Lossless H.264 still goes through yuv420p and back, so allow a few levels.
TOLERANCE = 4


def _expected_colour(i: int) -> np.ndarray:
    """Solid RGB colour of synthetic frame ``i``: the index in R (and G), B fixed."""
    return np.array([6 * i, 255 - 6 * i, 128])


def _write_video(path: Path, codec: str, options: dict[str, str], n: int = NUM_FRAMES) -> Path:
    """Encode ``n`` solid-colour frames (``_expected_colour``) with PyAV."""
    if codec not in av.codecs_available:
        pytest.skip(f"encoder {codec} not available in this PyAV build")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(n):
            rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
            rgb[...] = _expected_colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic clips: H.264 with B-frames in MP4 and MKV, MPEG-4 Part 2 in AVI."""
    root = tmp_path_factory.mktemp("videos")
    x264 = {"crf": "0", "preset": "ultrafast", "bframes": "2"}
    return {
        "mp4": _write_video(root / "clip.mp4", "libx264", x264),
        "mkv": _write_video(root / "clip.mkv", "libx264", x264),
        "avi": _write_video(root / "clip.avi", "mpeg4", {"qscale": "1"}),
    }


def _assert_frames_match(frames: np.ndarray, indices: list[int], tolerance: int = TOLERANCE) -> None:
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), HEIGHT, WIDTH, 3)
    for frame, i in zip(frames, indices):
        error = np.abs(frame.astype(int) - _expected_colour(i)).max()
        assert error <= tolerance, f"frame {i}: max error {error}"


# ------------------------------------------------------------ decoding


@pytest.mark.parametrize("kind", ["mp4", "mkv", "avi"])
def test_count_and_read_all_frames(videos: dict[str, Path], kind: str) -> None:
    path = videos[kind]
    assert count_frames(path) == NUM_FRAMES
    # MPEG-4 Part 2 at qscale 1 is lossy, so it gets a looser bound.
    _assert_frames_match(read_video_frames(path), list(range(NUM_FRAMES)), TOLERANCE if kind != "avi" else 16)


def test_mkv_has_no_container_frame_count(videos: dict[str, Path]) -> None:
    # The reason frame counts must come from decoding.
    with av.open(str(videos["mkv"])) as container:
        assert container.streams.video[0].frames == 0


def test_read_selected_frames_in_requested_order(videos: dict[str, Path]) -> None:
    indices = [39, 0, 5, 5, 17]
    _assert_frames_match(read_video_frames(videos["mp4"], indices), indices)
    _assert_frames_match(read_video_frames(videos["mkv"], np.array(indices)), indices)


def test_index_out_of_range(videos: dict[str, Path]) -> None:
    with pytest.raises(IndexError, match=r"frame 40 requested .* only 40 decodable frames"):
        read_video_frames(videos["mp4"], [0, 40])


@pytest.mark.parametrize(("indices", "error"), [([], ValueError), ([-1], ValueError), ([1.5], TypeError)])
def test_invalid_indices(videos: dict[str, Path], indices: list, error: type) -> None:
    with pytest.raises(error):
        read_video_frames(videos["mp4"], indices)


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
@pytest.mark.parametrize("hint", [None, 7, 40, 1000])
def test_read_sampled_frames_is_exact_whatever_the_length_guess(
    videos: dict[str, Path], kind: str, hint: int | None
) -> None:
    def sampler(n: int) -> list[np.ndarray]:
        return temporal_view_indices(n, ViewProtocol.for_dataset("ssv2"))

    sampled = read_sampled_frames(videos[kind], sampler, num_frames_hint=hint)
    assert isinstance(sampled, SampledFrames)
    assert sampled.num_video_frames == NUM_FRAMES
    needed = np.unique(np.concatenate(sampler(NUM_FRAMES)))
    assert sampled.indices.tolist() == needed.tolist()
    _assert_frames_match(sampled.frames, needed.tolist())
    _assert_frames_match(sampled.take([needed[-1], needed[0]]), [int(needed[-1]), int(needed[0])])
    with pytest.raises(KeyError):
        sampled.take([int(needed[-1]) + 1000])


def test_read_test_views_equals_views_of_fully_decoded_video(videos: dict[str, Path]) -> None:
    path = videos["mkv"]
    once = read_test_views(path, "kinetics", crop_size=32, num_crops=3)
    full = make_test_views(read_video_frames(path), ViewProtocol(crop_size=32, num_crops=3))
    assert len(once) == 15
    for a, b in zip(once, full):
        assert (a.segment, a.crop) == (b.segment, b.crop)
        assert torch.equal(a.clip, b.clip)


# ---------------------------------------------------------- bad inputs


def _assert_decode_error(path: Path, reason: str) -> None:
    with pytest.raises(VideoDecodeError) as info:
        read_video_frames(path)
    message = str(info.value)
    assert str(path) in message and reason in message, message
    with pytest.raises(VideoDecodeError):
        count_frames(path)


def test_missing_file(tmp_path: Path) -> None:
    _assert_decode_error(tmp_path / "absent.mp4", "file not found")


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    _assert_decode_error(tmp_path, "not a regular file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    _assert_decode_error(path, "empty file")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 8000, dtype=np.uint8).tobytes())
    _assert_decode_error(path, "cannot open as a video")


@pytest.mark.parametrize("name", ["test.csv", "notes.txt"])
def test_text_file_is_not_a_video(tmp_path: Path, name: str) -> None:
    # FFmpeg's tty demuxer would render a .txt file as ANSI-art "video".
    path = tmp_path / name
    path.write_text("some/video.mp4 3\n" * 200)
    _assert_decode_error(path, "not a video")


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    _assert_decode_error(path, "no video stream")


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9])
def test_truncated_mp4(videos: dict[str, Path], tmp_path: Path, fraction: float) -> None:
    data = videos["mp4"].read_bytes()
    path = tmp_path / f"cut_{fraction}.mp4"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VideoDecodeError) as info:
        read_video_frames(path)
    assert str(path) in str(info.value)


def test_truncated_avi_reports_damaged_packet(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos["avi"].read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: int(len(data) * 0.9)])
    _assert_decode_error(path, "truncated or corrupt stream")


def test_corrupt_bytes_inside_stream(videos: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(videos["mp4"].read_bytes())
    rng = np.random.default_rng(1)
    start = len(data) // 4
    data[start : start + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    _assert_decode_error(path, "truncated or corrupt stream")


@pytest.mark.parametrize("where", [0.35, 0.5, 0.75])
def test_zeroed_bytes_that_ffmpeg_would_conceal_are_corrupt(sample_videos: Path, tmp_path: Path, where) -> None:
    """A few hundred zeroed bytes mid-file decode, by default, into smeared frames without an error: refused."""
    data = bytearray((sample_videos / "bikes.mp4").read_bytes())
    start = int(len(data) * where)
    data[start : start + 400] = bytes(400)
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError, match=r"corrupt stream: the decoder reported damaged data after \d+ good"):
        read_video_frames(path)
    with pytest.raises(VideoDecodeError) as err:
        read_video_frames(path)
    assert "Errno" not in str(err.value)


def test_decode_error_is_a_runtime_error() -> None:
    assert issubclass(VideoDecodeError, RuntimeError)


# --------------------------------------------------------- real clips


@pytest.fixture(scope="module", params=sorted(SAMPLE_VIDEOS.glob("*.mp4")), ids=lambda p: p.name)
def real_clip(request: pytest.FixtureRequest) -> tuple[Path, int, dict[int, np.ndarray]]:
    """A sample clip of the repository, its frame count and a few frames, all by plain PyAV."""
    path = request.param
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame)
    n = len(frames)
    picks = {i: frames[i].to_ndarray(format="rgb24") for i in {0, 1, n // 2, n - 1}}
    return path, n, picks


def test_real_clip_count_and_frames(real_clip: tuple[Path, int, dict[int, np.ndarray]]) -> None:
    path, n, picks = real_clip
    assert count_frames(path) == n
    indices = sorted(picks)
    frames = read_video_frames(path, indices)
    for frame, i in zip(frames, indices):
        assert np.array_equal(frame, picks[i])


def test_real_clip_test_views(real_clip: tuple[Path, int, dict[int, np.ndarray]]) -> None:
    path, n, _ = real_clip
    views = read_test_views(path, "kinetics")
    assert [(v.segment, v.crop) for v in views] == [(c, k) for c in range(5) for k in range(3)]
    for view in views:
        assert view.clip.shape == (3, 16, 224, 224)
        assert torch.isfinite(view.clip).all()
    ssv2 = read_test_views(path, "ssv2", num_crops=1)
    assert len(ssv2) == 2 and ssv2[0].clip.shape == (3, 16, 224, 224)
    # Different temporal views of real footage differ.
    assert not torch.equal(ssv2[0].clip, ssv2[1].clip)
    assert n >= 16


# --------------------------------------------------------- truncated Matroska / WebM


def _webm(path: Path, codec: str = "libvpx-vp9", height: int = HEIGHT, width: int = WIDTH) -> Path:
    if codec not in av.codecs_available:
        pytest.skip(f"encoder {codec} not available in this PyAV build")
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(NUM_FRAMES):  # noise: every frame costs bytes, so any cut loses frames
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def matroska(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mkv")
    return {"vp9.webm": _webm(root / "vp9.webm"), "vp8.webm": _webm(root / "vp8.webm", "libvpx"),
            "odd.mkv": _webm(root / "odd.mkv", "libx264", height=50, width=66)}


@pytest.mark.parametrize("name", ["vp9.webm", "vp8.webm", "odd.mkv"])
def test_whole_matroska_files_decode_fully(matroska: dict[str, Path], name: str) -> None:
    assert count_frames(matroska[name]) == NUM_FRAMES


@pytest.mark.parametrize("name", ["vp9.webm", "odd.mkv"])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.5, 0.7, 0.9, 0.999])
def test_truncated_matroska_is_an_error_not_a_shorter_video(matroska: dict[str, Path], name: str,
                                                            fraction: float, tmp_path: Path) -> None:
    data = matroska[name].read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VideoDecodeError, match="truncated"):
        count_frames(cut)


def test_truncation_is_caught_by_duration_when_the_segment_size_is_unknown(matroska: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """A muxer that wrote no Segment size (as when streaming): the declared duration still gives a cut away."""
    data = bytearray(matroska["vp9.webm"].read_bytes())
    segment = data.index(bytes.fromhex("18538067"))
    assert data[segment + 4] == 0x01  # FFmpeg writes an 8-byte size: make it "unknown" (all value bits set)
    data[segment + 5 : segment + 12] = b"\xff" * 7
    whole = tmp_path / "unknown_size.webm"
    whole.write_bytes(bytes(data))
    assert count_frames(whole) == NUM_FRAMES  # still whole: no false alarm
    cut = tmp_path / "cut.webm"
    cut.write_bytes(bytes(data[: int(len(data) * 0.6)]))
    with pytest.raises(VideoDecodeError, match=r"truncated file: \d+ frames decoded up to"):
        count_frames(cut)


def test_sample_clips_and_other_containers_are_not_flagged(sample_videos: Path, videos: dict[str, Path]) -> None:
    for path in [*sorted(sample_videos.glob("*.mp4")), *videos.values()]:
        assert count_frames(path) > 0


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_a_still_image_renamed_mp4_is_not_a_video(tmp_path: Path, suffix: str) -> None:
    """It used to decode as a one-frame video: predicted, calibrated on and scored by `sta compare`."""
    import cv2

    image = tmp_path / f"picture{suffix}"
    cv2.imwrite(str(image), np.full((32, 48, 3), 128, np.uint8))
    renamed = tmp_path / "clip.mp4"
    renamed.write_bytes(image.read_bytes())
    with pytest.raises(VideoDecodeError, match="not a video: a still image"):
        read_video_frames(renamed)
