"""`sta vis`: the images' pixels, the GradNorm values and the JSON, not just that files exist."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sta.cli import main
from sta.measure.gradnorm import token_gradnorm
from sta.vis.tokens import GridLayout, colorize, log_scale, robust_range, sample_clip, tint, visualize
from tests.helpers import tiny_model
from tests.videos import noise_video

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return noise_video(tmp_path_factory.mktemp("vis") / "noise.mp4", num_frames=70, height=40, width=48, seed=3)


@pytest.fixture(scope="module")
def rendered(video, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    model = tiny_model(r=5, seed=4)
    summary = visualize(model, video, out, sampling_rate=2)
    return model, out, summary


def test_exactly_the_dropped_tokens_are_tinted(rendered, video):
    model, out, summary = rendered
    cfg = model.cfg
    _, frames = sample_clip(video, model, sampling_rate=2)
    image = np.asarray(Image.open(out / "kept_tokens.png").convert("RGB"))
    layout = GridLayout.for_tiles(cfg.num_frames, cfg.img_size, cfg.img_size)
    side, p = cfg.img_size // cfg.patch_size, cfg.patch_size
    for stage, kept in enumerate(summary.kept_positions):
        kept = set(kept)
        assert len(kept) == summary.tokens_per_stage[stage]
        for f in range(cfg.num_frames):
            y0, x0 = layout.origin(stage, f)
            tile = image[y0 : y0 + cfg.img_size, x0 : x0 + cfg.img_size]
            for s in range(side * side):
                y, x = divmod(s, side)
                patch = tile[y * p : (y + 1) * p, x * p : (x + 1) * p]
                token = (f // cfg.tubelet_size) * side * side + s
                original = frames[f, y * p : (y + 1) * p, x * p : (x + 1) * p]
                assert np.array_equal(patch, original if token in kept else tint(original))


def test_gradnorm_equals_direct_autograd(video):
    model = tiny_model(r=0, seed=5)
    clip, _ = sample_clip(video, model, sampling_rate=2)
    values, predicted = token_gradnorm(model, clip)
    embedding = model.patch_embed(clip[None]).detach().requires_grad_(True)
    original = model.patch_embed.forward
    model.patch_embed.forward = lambda x: embedding  # feed our leaf tensor in place of the patch embedding
    try:
        logits = model(clip[None])
    finally:
        model.patch_embed.forward = original
    (grad,) = torch.autograd.grad(logits[0, logits[0].argmax()], embedding)
    assert predicted == int(logits[0].argmax())
    assert values.shape == (model.cfg.num_slices * model.cfg.tokens_per_slice,)
    torch.testing.assert_close(values, grad[0].norm(dim=-1))


def test_json_shares_and_heat_map(rendered):
    model, out, summary = rendered
    on_disk = json.loads((out / "tokens.json").read_text())
    gradnorm = np.array(on_disk["gradnorm"])
    assert len(gradnorm) == 8 * 16
    final = on_disk["kept_positions"][-1]
    assert on_disk["gradnorm_kept_share"] == pytest.approx(gradnorm[final].sum() / gradnorm.sum())
    assert 0 <= on_disk["gradnorm_kept_share"] <= 1
    shares = on_disk["gradnorm_kept_share_per_stage"]
    assert shares == sorted(shares, reverse=True)  # each stage keeps a subset of the last
    # the heat-map row is the colour ramp of the per-token GradNorm, token by token
    image = np.asarray(Image.open(out / "gradnorm.png").convert("RGB"))
    cfg = model.cfg
    y0, x0 = GridLayout.for_tiles(cfg.num_frames, cfg.img_size, cfg.img_size).origin(0, 0)
    # log scale, 1st..99th percentile: a few extreme tokens do not turn the rest of the map black
    shown = log_scale(gradnorm)
    expected = colorize(shown, *robust_range(shown))[: cfg.tokens_per_slice].reshape(4, 4, 3)
    assert np.array_equal(image[y0 : y0 + 32 : 8, x0 : x0 + 32 : 8], expected)


def test_gif_and_determinism(rendered, video, tmp_path):
    model, out, _ = rendered
    gif = Image.open(out / "kept_tokens.gif")
    assert gif.n_frames == model.cfg.num_frames
    visualize(model, video, tmp_path, sampling_rate=2)
    for name in ("kept_tokens.png", "gradnorm.png", "kept_tokens.gif", "tokens.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_cli_vis_on_a_real_clip(sample_videos, tmp_path, capsys):
    from sta.cli import main

    assert main(["vis", str(sample_videos / "bikes.mp4"), "--model", "vit_small_patch16_224", "--input-size",
                 "32", "--r", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "tokens.json").read_text())
    assert summary["tokens_per_stage"] == [8 * 3, 4 * 5, 2 * 9]
    assert "GradNorm" in capsys.readouterr().out


def test_plot_from_summaries(tmp_path):
    pytest.importorskip("matplotlib")
    from sta.vis.plot import plot_accuracy_vs_gflops, read_summaries

    for i, (method, gflops, top1) in enumerate([("sta", 10, 80), ("sta", 6, 78), ("random", 6, 60)]):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(dict(top1=top1, gflops_per_view=gflops,
                                                             model=dict(method=method, r=[i, i, i]))))
    rows = read_summaries(sorted(tmp_path.glob("run*")))
    assert [r["method"] for r in rows] == ["sta", "sta", "random"]
    out = plot_accuracy_vs_gflops(rows, tmp_path / "plot.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[0] > 200 and len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # drawn, not blank
    (tmp_path / "nan.json").write_text('{"top1": NaN, "gflops_per_view": 6.0}')  # what a run without videos had
    with pytest.raises(ValueError, match="finite numbers for top1"):
        read_summaries([tmp_path / "nan.json"])


SMALL_MODEL = ["--model", "vit_small_patch16_224", "--input-size", "32", "--r", "1"]


@pytest.mark.parametrize(("argv", "expected"), [([], 1), (["--sampling-rate", "3"], 3), (SMALL_MODEL, 4)])
def test_cli_vis_samples_as_every_command_does(sample_videos, tmp_path, monkeypatch, argv, expected):
    """The bundled model's clips are consecutive frames: vis, predict and gradnorm all sample it with stride 1."""
    seen = {}

    def capture(model, video, out, protocol, sampling_rate, note=None):
        seen["rate"] = sampling_rate
        raise KeyboardInterrupt  # stop before drawing: only the sampling matters here

    monkeypatch.setattr("sta.cli.vis.visualize", capture)
    assert main(["vis", str(sample_videos / "bikes.mp4"), "--out", str(tmp_path), *argv]) == 130
    assert seen["rate"] == expected
