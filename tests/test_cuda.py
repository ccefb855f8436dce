"""The CUDA path: every method and family on the GPU, equal to the CPU; eval, torchrun, compile, fused attention.

Marked ``cuda``: deselected where there is no GPU (tests/conftest.py). ``benchmarks/gpu_check.sh`` runs them on a
GPU; ``benchmarks/gpu_check.sh --dry-run`` runs the same tests on the CPU (``STA_TEST_DEVICE=cpu``), so the code
paths are exercised before device time is spent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sta.core.methods import METHODS
from sta.data.proxies import write_videos
from sta.measure.gradnorm import oracle_scorer
from sta.models.bundled import load_bundled_model

pytestmark = pytest.mark.cuda
DEVICE = os.environ.get("STA_TEST_DEVICE", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ON_GPU = DEVICE.startswith("cuda")
# Pruned counts that are not multiples of 8: 512 -> 8 x 61 = 488 -> 4 x (122 - 3) = 476 -> 2 x (238 - 3) = 470
# for the proxy's 8 x 64 tokens (stage 1 and 2 keep 476 / 2 = 238 and 470 / 2 = 235 tokens per clip-pair group).
ODD_R = (3, 3, 3)
HF_R = (5, 4, 3)


@pytest.fixture(autouse=True)
def exact_float32():
    """Float32 on CUDA as on the CPU: no TF32 in convolutions (cuDNN's default) or matmuls."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def proxy_clips(n: int = 8):
    from sta.data.proxies import make_clips

    return make_clips("easy", n, seed=11, split="test")[0]


def run(model, clips, device: str, dtype: torch.dtype):
    """Logits (float32, CPU) and kept positions of ``model`` on ``device`` in ``dtype``."""
    model = model.to(device=device, dtype=dtype)
    with torch.no_grad() if model.method != "oracle" else torch.enable_grad():
        logits, trace = model(clips.to(device=device, dtype=dtype), return_trace=True)
    return logits.detach().float().cpu(), [p.cpu() for p in trace.positions]


def overlap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The share of kept positions two runs agree on, over clips and stages (-1: padding of variable counts)."""
    same = total = 0
    for pa, pb in zip(a, b):
        for ra, rb in zip(pa, pb):
            keep_a, keep_b = set(ra.tolist()) - {-1}, set(rb.tolist()) - {-1}
            same += len(keep_a & keep_b)
            total += max(len(keep_a), len(keep_b), 1)
    return same / total


# rlt-threshold keeps the patches whose pixels change beyond a fixed threshold: in half precision the clip itself is
# rounded first, so patches near the threshold flip and the count changes. Only its float32 run is held to the CPU's.
VARIABLE_IN_HALF = {"rlt-threshold"}


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_of_our_vit_on_the_device_matches_the_cpu(method, dtype):
    clips = proxy_clips()
    cpu = load_bundled_model(r=16, proxy="easy")
    cpu.set_pruning(method=method)
    cpu.use_scorer(oracle_scorer(cpu))
    ref_logits, ref_positions = run(cpu, clips, "cpu", torch.float32)
    model = load_bundled_model(r=16, proxy="easy")
    model.set_pruning(method=method)
    model.use_scorer(oracle_scorer(model))
    logits, positions = run(model, clips, DEVICE, DTYPES[dtype])
    assert torch.isfinite(logits).all()
    if dtype == "float32":
        assert all(torch.equal(a, b) for a, b in zip(positions, ref_positions)), "kept positions differ from the CPU"
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    elif method not in VARIABLE_IN_HALF:  # half precision changes the features STA scores: near-ties may flip
        assert overlap(positions, ref_positions) >= 0.9
        assert (logits.argmax(1) == ref_logits.argmax(1)).float().mean() >= 0.75
        assert (logits - ref_logits).abs().max() < 0.1 * ref_logits.abs().max() + 0.5
    else:  # other tokens, so other logits: the answers still mostly agree
        assert (logits.argmax(1) == ref_logits.argmax(1)).float().mean() >= 0.5


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("family", ["videomae", "vivit", "vjepa2"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_of_every_hf_family_on_the_device(family, method, dtype):
    pytest.importorskip("transformers")
    from tests.adapters.test_methods import classifier, mixed_clips

    clips = mixed_clips(3)
    scores = torch.rand(4, 128, generator=torch.Generator().manual_seed(3))
    ref = classifier(family, method, r=HF_R, seed=3)
    with torch.no_grad():
        ref_logits, ref_trace = ref(clips, return_trace=True, token_scores=scores)
    model = classifier(family, method, r=HF_R, seed=3).to(device=DEVICE, dtype=DTYPES[dtype])
    with torch.no_grad():
        logits, trace = model(clips.to(DEVICE, DTYPES[dtype]), return_trace=True, token_scores=scores.to(DEVICE))
    logits = logits.float().cpu()
    positions = [p.cpu() for p in trace.positions]
    assert torch.isfinite(logits).all()
    assert [p.shape for p in positions] == [p.shape for p in ref_trace.positions]
    if dtype == "float32":
        assert all(torch.equal(a, b) for a, b in zip(positions, ref_trace.positions))
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    elif method not in VARIABLE_IN_HALF:
        assert overlap(positions, ref_trace.positions) >= 0.8


def test_compiled_model_on_the_device_matches_eager():
    model = load_bundled_model(r=16, proxy="easy").to(DEVICE)
    clips = proxy_clips(4).to(DEVICE)
    with torch.no_grad():
        eager = model(clips)
        compiled = torch.compile(model)(clips)
    torch.testing.assert_close(compiled.float().cpu(), eager.float().cpu(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_pruned_attention_runs_a_fused_kernel_at_counts_not_multiples_of_8(dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = load_bundled_model(r=ODD_R, proxy="easy").to(DEVICE, DTYPES[dtype])
    clips = proxy_clips(4).to(DEVICE, DTYPES[dtype])
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    if not ON_GPU:
        backends.append(SDPBackend.MATH)  # the dry run: the CPU has no efficient-attention kernel for every dtype
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ON_GPU else [])
    with sdpa_kernel(backends), torch.no_grad(), profile(activities=activities) as prof:
        logits, trace = model(clips, return_trace=True)  # no fused kernel for a shape: sdpa_kernel raises
    assert torch.isfinite(logits.float()).all()
    assert [p.shape[1] for p in trace.positions] == [488, 476, 470]
    if ON_GPU:
        names = " ".join(event.key.lower() for event in prof.key_averages())
        assert "flash" in names or "efficient" in names or "fmha" in names, "no fused attention kernel ran"


def sta_cli(*args: str, env: dict | None = None, torchrun: int = 0) -> subprocess.CompletedProcess:
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
              "-m", "sta", "--"] if torchrun else [sys.executable, "-m", "sta"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def eval_top1(out, videos: int) -> tuple[float, dict[int, int]]:
    """The run's top-1 and each video's predicted class (the argmax of its views' mean logits)."""
    from sta.evaluate.records import load_predictions

    summary = json.loads((out / "summary.json").read_text())
    views = load_predictions(out, None, videos)
    predicted = {i: int(torch.tensor(list(v.values())).mean(0).argmax()) for i, v in views.items()}
    return summary["top1"], predicted


def test_eval_on_the_device_and_with_two_processes_on_one_gpu_equals_the_cpu(tmp_path):
    videos = tmp_path / "videos"
    write_videos(videos, 12, task="easy")
    common = ["eval", "--proxy", "easy", "--data-path", str(videos), "--test-num-segment", "2",
              "--test-num-crop", "1", "--r", "16", "--num-workers", "0", "--no-progress"]
    done = {}
    for name, extra, procs in (("cpu", ["--device", "cpu"], 0), ("device", ["--device", DEVICE], 0),
                               ("two", ["--device", DEVICE], 2)):
        out = tmp_path / name
        result = sta_cli(*common, *extra, "--output-dir", str(out), torchrun=procs)
        assert result.returncode == 0, result.stderr[-3000:]
        done[name] = eval_top1(out, 12)
    assert done["device"][0] == done["cpu"][0] == done["two"][0]
    assert len(done["cpu"][1]) == 12 and done["device"][1] == done["cpu"][1] == done["two"][1]
