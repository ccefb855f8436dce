"""Do the deployment backends predict what torch predicts? Top-1 and kept-token agreement on the bundled proxy model.

For each r of `sta demo` and each backend / dtype, on the held-out proxy clips:
the share whose top-1 class equals the one torch eager float32 gives at the same
r, the largest |logit difference|, the share of the kept positions (per clip and
stage, as sets, stages pooled) that are torch's, and top-1 accuracy against the
labels. The ONNX graph is exported once per r (checked by `sta export`'s own
comparison first, kept positions as sets). int8 rows are `sta export --quantize
int8` itself (calibrated on 300 proxy training-stream clips, guarded on these
held-out clips, written with --force so that every r has its numbers), with the
guard's verdict.

    python benchmarks/backend_agreement.py [--clips 240] [--r 16 32 48,16,8] [--int8 openvino onnxruntime]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from backends import machine_header  # benchmarks/backends.py

from sta.core.schedule import format_r, parse_r
from sta.data.proxies import DEFAULT_PROXY, PROXY_NAMES, make_clips
from sta.data.synthetic import HELD_OUT_SEED
from sta.demo.run import DEMO_RS
from sta.deploy.export import GraphForward, export_model
from sta.deploy.metadata import read_info
from sta.deploy.quantize import SUFFIXES, Clips, proxy_calibration, quantize_model
from sta.deploy.runners import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, model_info
from sta.models.bundled import load_bundled_model

CONFIGS = [("torch", "bfloat16"), ("onnxruntime", "float32"), ("openvino", "float32"), ("openvino", "bfloat16")]


def predict(runner, clips: torch.Tensor, batch: int = 16) -> tuple[torch.Tensor, ...]:
    """Logits and kept positions (torch runners: logits only)."""
    outputs = getattr(runner, "outputs", None)
    parts = [outputs(clips[i : i + batch]) if outputs else (runner(clips[i : i + batch]),)
             for i in range(0, len(clips), batch)]
    return tuple(torch.cat(column) for column in zip(*parts))


def kept_share(want: tuple[torch.Tensor, ...], got: tuple[torch.Tensor, ...]) -> float:
    if len(got) < 4:
        return float("nan")
    same = sum(len(set(a.tolist()) & set(b.tolist())) for w, g in zip(want[1:], got[1:]) for a, b in zip(w, g))
    return same / sum(w.numel() for w in want[1:])


def row(r, backend: str, dtype: str, want, got, labels, guard: str = "") -> None:
    agree = 100.0 * float((got[0].argmax(-1) == want[0].argmax(-1)).float().mean())
    diff = float((got[0].float() - want[0]).abs().max())
    top1 = 100.0 * float((got[0].argmax(-1) == labels).float().mean())
    print(f"{format_r(r):>8}  {backend:<12}{dtype:<10}{agree:>8.1f}{diff:>14.2e}{100 * kept_share(want, got):>8.1f}"
          f"{top1:>8.1f}  {guard}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--r", type=parse_r, nargs="+", default=[0, *DEMO_RS])
    parser.add_argument("--int8", nargs="*", default=["openvino", "onnxruntime"], help="int8 backends to run")
    parser.add_argument("--calibration-clips", type=int, default=300)
    parser.add_argument("--proxy", choices=PROXY_NAMES, default=DEFAULT_PROXY, help="which bundled model")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(machine_header())
    clips, labels = make_clips(args.proxy, args.clips, seed=HELD_OUT_SEED, split="test")
    bundled = lambda r: load_bundled_model(r=r, proxy=args.proxy)  # noqa: E731
    print(f"agreement with torch eager float32 on {args.clips} held-out proxy clips ({args.proxy} bundled model, sta): "
          "top-1 agreement, max |logit diff|, kept positions identical (sets per stage, pooled), top-1 accuracy")
    print(f"{'r':>8}  {'backend':<12}{'dtype':<10}{'agree %':>8}{'max |dlogit|':>14}{'kept %':>8}{'top-1 %':>8}")
    for r in args.r:
        model = bundled(r)
        info = model_info(model, "bundled proxy model")
        with torch.inference_mode():
            reference = GraphForward(model)(clips)
        row(r, "torch", "float32", reference, reference, labels)
        with tempfile.TemporaryDirectory() as tmp:
            export_model(bundled(r), Path(tmp) / "m.onnx", info, ordered=False)
            for backend, dtype in CONFIGS:
                if backend == "torch":
                    runner = TorchRunner(bundled(r), info, dtype=dtype)
                else:
                    runner = (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(
                        Path(tmp) / "m.onnx", info, dtype)
                row(r, backend, dtype, reference, predict(runner, clips), labels)
            for backend in args.int8:
                out = Path(tmp) / f"int8{SUFFIXES[backend]}"
                guard = Clips("held-out proxy clips", [clips], len(clips), labels)
                check = quantize_model(bundled(r), out, info, proxy_calibration(args.calibration_clips, args.proxy),
                                       guard, backend=backend, force=True, progress=False)
                runner = (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(
                    out, read_info(out), "int8")
                row(r, backend, "int8", reference, predict(runner, clips), labels,
                    ("guard passed" if check.ok else "guard FAILED") + ", kept per stage "
                    + " / ".join(f"{100 * v:.1f}" for v in check.kept_per_stage))


if __name__ == "__main__":
    main()
