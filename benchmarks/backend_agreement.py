"""Do the deployment backends predict what torch predicts? Top-1 agreement on the bundled proxy model's test clips.

For each r and each backend / dtype, the share of held-out proxy clips whose
top-1 class equals the one torch eager float32 gives at the same r, and the
largest |logit difference|. The ONNX graph is exported once per r (and checked
by `sta export`'s own comparison first).

    python benchmarks/backend_agreement.py [--clips 240] [--r 16 32 48,16,8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from sta.core.schedule import format_r, parse_r
from sta.data.synthetic import HELD_OUT_SEED, PROXY_TASK, make_clips
from sta.deploy.export import export_model
from sta.deploy.runners import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, model_info
from sta.models.bundled import load_bundled_model

CONFIGS = [("torch", "bfloat16"), ("onnxruntime", "float32"), ("openvino", "float32"), ("openvino", "bfloat16")]


def predict(runner, clips: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([runner(clips[i : i + batch]) for i in range(0, len(clips), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--r", type=parse_r, nargs="+", default=[0, 16, 32, (48, 16, 8), (56, 8, 4)])
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    clips, _ = make_clips(PROXY_TASK, args.clips, seed=HELD_OUT_SEED, split="test")
    print(f"top-1 agreement with torch eager float32 on {args.clips} held-out proxy clips (bundled model, method sta)")
    print(f"{'r':>8}  {'backend':<12}{'dtype':<10}{'agree %':>8}{'max |dlogit|':>14}")
    for r in args.r:
        model = load_bundled_model(r=r)
        info = model_info(model, "bundled proxy model")
        reference = predict(TorchRunner(model, info), clips)
        with tempfile.TemporaryDirectory() as tmp:
            export_model(load_bundled_model(r=r), Path(tmp) / "m.onnx", info)
            for backend, dtype in CONFIGS:
                if backend == "torch":
                    runner = TorchRunner(load_bundled_model(r=r), info, dtype=dtype)
                else:
                    runner = (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(
                        Path(tmp) / "m.onnx", info, dtype)
                logits = predict(runner, clips)
                agree = 100.0 * float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
                diff = float((logits - reference).abs().max())
                print(f"{format_r(r):>8}  {backend:<12}{dtype:<10}{agree:>8.1f}{diff:>14.2e}", flush=True)


if __name__ == "__main__":
    main()
