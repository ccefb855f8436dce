"""The synthetic proxy task (sta.data.synthetic) and the model bundled with the package."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sta.data import IMAGENET_MEAN, IMAGENET_STD
from sta.data.synthetic import CLASS_NAMES, PROXY_TASK, ProxyTask, _stream_seed, make_clips
from sta.models.bundled import BUNDLED_CHECKPOINT, load_bundled_model

SMALL = dataclasses.replace(PROXY_TASK, size=32)  # faster clips for the generator tests
HELD_OUT_CLIPS = 240  # 20 per class
HELD_OUT_SEED = 0


def denormalise(clips: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None, None]
    return clips * std + mean


def test_classes():
    assert PROXY_TASK.num_classes == len(CLASS_NAMES) == 12
    assert len(set(CLASS_NAMES)) == 12
    assert CLASS_NAMES[0] == "square_left" and CLASS_NAMES[-1] == "triangle_down"


def test_shape_dtype_and_normalisation():
    clips, labels = make_clips(PROXY_TASK, 12, seed=5)
    assert clips.shape == (12, 3, 16, 64, 64) and clips.dtype == torch.float32 and clips.is_contiguous()
    assert labels.shape == (12,) and labels.dtype == torch.int64
    assert torch.isfinite(clips).all()
    pixels = denormalise(clips)  # back to 0..1, as frames were before ImageNet normalisation
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert 0.3 < pixels.mean() < 0.7 and pixels.std() > 0.1


def test_deterministic():
    a, la = make_clips(SMALL, 24, seed=3, split="train")
    b, lb = make_clips(SMALL, 24, seed=3, split="train")
    assert torch.equal(a, b) and torch.equal(la, lb)


def test_seed_changes_clips_not_balance():
    a, la = make_clips(SMALL, 36, seed=3)
    b, lb = make_clips(SMALL, 36, seed=4)
    assert not torch.equal(la, lb)  # a different order of classes...
    assert (a - b).abs().mean() > 0.1  # ...and different clips
    assert torch.equal(torch.bincount(la, minlength=12), torch.full((12,), 3))
    assert torch.equal(torch.bincount(lb, minlength=12), torch.full((12,), 3))


def test_balance_when_not_a_multiple():
    _, labels = make_clips(SMALL, 30, seed=0)
    counts = torch.bincount(labels, minlength=12)
    assert counts.sum() == 30 and counts.max() - counts.min() <= 1


def test_train_and_test_differ():
    train, _ = make_clips(SMALL, 24, seed=0, split="train")
    test, _ = make_clips(SMALL, 24, seed=0, split="test")
    assert (train - test).abs().mean() > 0.1
    # Disjoint random streams: no (seed, split) pair shares a generator seed with another.
    streams = [_stream_seed(s, split) for s in range(1000) for split in ("train", "test")]
    assert len(set(streams)) == len(streams)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_clips(SMALL, 4, seed=0, split="val")
    with pytest.raises(ValueError):
        make_clips(SMALL, 4, seed=-1)
    with pytest.raises(ValueError):
        make_clips(SMALL, 0, seed=0)


def test_background_mostly_static():
    """Most tokens repeat across frames: the redundancy STA removes (static clips, before noise)."""
    task = dataclasses.replace(PROXY_TASK, pan_prob=0.0, noise_std=0.0)
    clips, _ = make_clips(task, 12, seed=1)
    # 8 x 8 pixel patches that are identical between consecutive frames.
    diff = (clips[:, :, 1:] - clips[:, :, :-1]).abs().amax(1)  # B x T-1 x H x W
    patches = diff.unflatten(2, (8, 8)).unflatten(4, (8, 8)).amax((3, 5))  # B x T-1 x 8 x 8
    assert (patches < 1e-5).float().mean() > 0.6


# ---- the bundled model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_model():
    if not BUNDLED_CHECKPOINT.is_file():
        pytest.fail(f"bundled checkpoint missing: {BUNDLED_CHECKPOINT}")
    return load_bundled_model(proxy="easy")


@pytest.fixture(scope="module")
def held_out():
    return make_clips(PROXY_TASK, HELD_OUT_CLIPS, HELD_OUT_SEED, "test")


def predict(model, clips: torch.Tensor, batch: int = 60) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(clips[i : i + batch]).argmax(1) for i in range(0, len(clips), batch)])


def test_bundled_checkpoint_small_and_safe():
    assert BUNDLED_CHECKPOINT.stat().st_size <= 10 * 2**20
    ckpt = torch.load(BUNDLED_CHECKPOINT, map_location="cpu", weights_only=True)
    args = ckpt["args"]
    assert args["depth"] == 12 and args["num_classes"] == PROXY_TASK.num_classes
    assert args["num_frames"] == PROXY_TASK.num_frames and args["img_size"] == PROXY_TASK.size
    task = dataclasses.asdict(ProxyTask())
    assert args["task"] == {k: list(v) if isinstance(v, tuple) else v for k, v in task.items()}
    assert args["top1"] >= 0.95


def test_loader(proxy_model):
    assert not proxy_model.training
    assert all(p.dtype == torch.float32 for p in proxy_model.parameters())
    assert proxy_model.cfg.depth == 12 and proxy_model.r == (0, 0, 0)
    assert load_bundled_model(r=8).r == (8, 8, 8)


def test_bundled_model_top1(proxy_model, held_out):
    clips, labels = held_out
    top1 = (predict(proxy_model, clips) == labels).float().mean().item()
    assert top1 >= 0.95, f"unpruned held-out top-1 {top1:.3f}"


def test_bundled_model_needs_motion(proxy_model, held_out):
    """One frame repeated carries no direction (mid-clip position is uniform on a torus): accuracy collapses.

    No classifier can beat 1/4 on such clips in expectation; the model should not come close to its
    real accuracy, which shows it reads motion rather than a single-frame shortcut.
    """
    clips, labels = held_out
    clips, labels = clips[:120], labels[:120]
    frozen = clips[:, :, 7:8].expand_as(clips).contiguous()
    top1 = (predict(proxy_model, frozen) == labels).float().mean().item()
    assert top1 < 0.45, f"top-1 on frozen clips {top1:.3f}"
