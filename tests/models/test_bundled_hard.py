"""The hard bundled model (sta/models/assets/proxy_vit_hard.pth): what ships, its accuracy band, and that its
documented training command repeats its first steps exactly."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sta.data.proxies import make_clips
from sta.data.synthetic import HELD_OUT_CLIPS, HELD_OUT_SEED
from sta.data.synthetic_hard import HARD_TASK
from sta.measure.speed import cpu_description
from sta.models.bundled import checkpoint_path, load_bundled_model

ROOT = Path(__file__).resolve().parents[2]
CURVE = checkpoint_path("hard").with_suffix(".curve.tsv")


@pytest.fixture(scope="module")
def args() -> dict:
    return torch.load(checkpoint_path("hard"), map_location="cpu", weights_only=True)["args"]


def test_what_ships_is_small_safe_and_says_what_it_is(args):
    assert checkpoint_path("hard").stat().st_size <= 10 * 2**20
    assert args["task_name"] == "hard" and args["depth"] == 12 and args["num_classes"] == 12
    task = dataclasses.asdict(HARD_TASK)
    assert args["task"] == {k: list(v) if isinstance(v, tuple) else v for k, v in task.items()}
    assert args["schedule"] == "steps" and args["steps_done"] == args["steps"]  # a fixed number of steps
    assert 0.85 <= args["top1"] <= 0.97  # the band the task was made for, on 480 held-out clips
    assert CURVE.is_file() and len(CURVE.read_text().splitlines()) == args["steps"] + 1


@pytest.mark.slow
def test_held_out_top1_is_in_the_band_on_the_demo_clips():
    model = load_bundled_model(proxy="hard")
    clips, labels = make_clips("hard", HELD_OUT_CLIPS, HELD_OUT_SEED, "test")
    with torch.inference_mode():
        predicted = torch.cat([model(clips[i : i + 40]).argmax(1) for i in range(0, len(clips), 40)])
    assert 0.83 <= (predicted == labels).float().mean().item() <= 0.98


def first_losses(tmp_path: Path, steps: int, name: str, args: dict) -> list[str]:
    """The documented command's first ``steps`` losses (the shipped model's settings), as the curve file holds them."""
    curve = tmp_path / f"{name}.tsv"
    command = [sys.executable, str(ROOT / "benchmarks" / "train_proxy.py"), "--task", "hard",
               "--steps", str(args["steps"]), "--batch-size", str(args["batch_size"]),
               "--embed-dim", str(args["embed_dim"]), "--num-heads", str(args["num_heads"]), "--lr", str(args["lr"]),
               "--threads", str(args["threads"]), "--stop-after", str(steps), "--eval-every", "0",
               "--log-every", "1", "--out", str(tmp_path / f"{name}.pth"), "--curve", str(curve)]
    subprocess.run(command, check=True, capture_output=True, timeout=600, cwd=tmp_path)
    return [line.split("\t")[1] for line in curve.read_text().splitlines()[1:]]


@pytest.mark.slow
def test_the_training_command_repeats_its_first_steps_exactly(tmp_path, args):
    """Seeded clips and initialisation: the same command gives the same losses, to the last digit the curve keeps;
    on the machine and torch the model was trained with, the shipped curve's too."""
    first, again = first_losses(tmp_path, 3, "a", args), first_losses(tmp_path, 3, "b", args)
    assert first == again and len(first) == 3
    shipped = [line.split("\t")[1] for line in CURVE.read_text().splitlines()[1:4]]
    if (args["cpu"], args["torch"]) == (cpu_description(), str(torch.__version__)):
        assert first == shipped  # the shipped weights' own first steps
    else:  # another CPU rounds bf16 matmuls its own way: close, not equal
        assert all(abs(float(a) - float(b)) <= 1e-2 * abs(float(b)) for a, b in zip(first, shipped))
