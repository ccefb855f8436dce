"""Clip sources for the GradNorm study: videos read as `sta eval` reads them (bad ones skipped), the proxy clips."""

from __future__ import annotations

import pytest
import torch

from sta.data import VideoEntry, ViewProtocol
from sta.data.proxies import make_clips
from sta.data.synthetic import HELD_OUT_SEED
from sta.data.synthetic_hard import HARD_TASK
from sta.evaluate.sources import clip_views, folder_source, list_file_source, proxy_source
from sta.measure.gradnorm import run_gradnorm
from tests.helpers import tiny_model
from tests.videos import noise_video

R = 4  # tokens kept: 8 x 12 -> 4 x 20 -> 2 x 36 = 72


@pytest.fixture(scope="module")
def model():
    return tiny_model(r=0, seed=11)


def test_folder_skips_and_names_bad_files(model, tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    good = noise_video(folder / "sub" / "good.mp4", num_frames=40, height=36, width=48, seed=1)
    (folder / "notes.txt").write_text("not a video\n")  # not a video suffix: not taken
    (folder / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (folder / "fake.webm").write_text("not a video either\n")
    source = folder_source(folder, clip_views(model, sampling_rate=2))
    assert len(source) == 3
    result = run_gradnorm(model, source, ["sta"], [R], batch_size=2, progress=False)
    assert result.clips == 1
    assert sorted(s.name for s in result.skipped) == ["cut.mp4", "fake.webm"]
    assert all(s.reason for s in result.skipped)
    with pytest.raises(ValueError, match="no label"):
        run_gradnorm(model, source, ["sta"], [R], target="label", progress=False)
    # a list file's entries carry labels; a missing file is skipped too
    entries = [VideoEntry(str(good), 3, 1, "sub/good.mp4"), VideoEntry(str(folder / "gone.mp4"), 1, 2, "gone.mp4")]
    result = run_gradnorm(model, list_file_source(entries, clip_views(model, sampling_rate=2)), ["norm"], [R],
                          target="label", progress=False)
    assert result.clips == 1 and [s.name for s in result.skipped] == ["gone.mp4"]
    assert result.rows[0].top1 in (0.0, 100.0)
    with pytest.raises(ValueError, match="one view"):
        list_file_source(entries, ViewProtocol(num_segments=2, num_crops=1))


def test_proxy_source():
    items = list(proxy_source(3))
    expected, labels = make_clips(HARD_TASK, 3, seed=HELD_OUT_SEED, split="test")  # the default proxy's
    assert [item.label for item in items] == labels.tolist()
    torch.testing.assert_close(torch.stack([item.clip for item in items]), expected)
