"""GFLOPs per view of every supported model family at r = 0 and two pruning levels (the README's table).

Counted like `sta flops` (one multiply-add = one FLOP, matmuls, convolutions,
LayerNorms and attention, on the meta device: no weights, no memory). The
Hugging Face models are built from their published configurations
(transformers' defaults, sizes of the released checkpoints), so nothing is
downloaded.

    python benchmarks/flops_table.py
"""

from __future__ import annotations

import torch

from sta import create_model, flops_report
from sta.core.schedule import format_r

# (label, how to build it on meta, frames x size, two pruning levels)
RELEASE = [
    ("VideoMAE ViT-S/16", "vit_small_patch16_224", (32, 64)),
    ("VideoMAE ViT-B/16", "vit_base_patch16_224", (32, 64)),
    ("VideoMAE ViT-L/16", "vit_large_patch16_224", (32, 64)),
    ("VideoMAE ViT-H/16", "vit_huge_patch16_224", (32, 64)),
    ("VideoMAE V2 ViT-g/14", "vit_giant_patch14_224", (64, 100)),
]


def hf_models():
    """ViViT-B and V-JEPA 2 L / g classifiers on meta, wrapped like `--hf-model` wraps them."""
    from transformers import VivitConfig, VivitForVideoClassification, VJEPA2Config, VJEPA2ForVideoClassification

    from sta.adapters.wrapper import HFVideoClassifier

    vivit = VivitConfig(num_labels=400)  # google/vivit-b-16x2-kinetics400: 32 frames of 224, tubelet 2x16x16
    vjepa_l = VJEPA2Config(frames_per_clip=16, crop_size=256, num_labels=174)  # vjepa2-vitl-fpc16-256-ssv2
    vjepa_g = VJEPA2Config(frames_per_clip=64, crop_size=384, hidden_size=1408, num_hidden_layers=40,
                           num_attention_heads=22, mlp_ratio=48 / 11, num_labels=174)  # vjepa2-vitg-fpc64-384-ssv2
    for label, cls, config, rs in [("ViViT-B/16x2 (HF)", VivitForVideoClassification, vivit, (32, 64)),
                                   ("V-JEPA 2 ViT-L/16 (HF)", VJEPA2ForVideoClassification, vjepa_l, (48, 96)),
                                   ("V-JEPA 2 ViT-g/16 (HF)", VJEPA2ForVideoClassification, vjepa_g, (96, 192))]:
        with torch.device("meta"):
            yield label, HFVideoClassifier(cls(config).eval()), rs


def main() -> None:
    models = [(label, _meta(name), rs) for label, name, rs in RELEASE]
    try:
        models += list(hf_models())
    except ImportError:
        print("(transformers not installed: Hugging Face families left out)")
    print(f"{'model':<24}{'input':>10}  {'r=0':>9}  {'r':>5} {'GFLOPs':>9} {'saved':>6}  {'r':>5} {'GFLOPs':>9} "
          f"{'saved':>6}  tokens after stages (last r)")
    for label, model, rs in models:
        cfg = model.cfg
        with model.pruning(r=0):
            base = flops_report(model).gflops
        cells = []
        for r in rs:
            with model.pruning(r=r):
                report = flops_report(model)
            cells.append(f"{format_r(r):>5} {report.gflops:>9.2f} {1 - report.gflops / base:>6.1%}")
        tokens = " / ".join(map(str, report.tokens))
        print(f"{label:<24}{f'{cfg.num_frames}x{cfg.img_size}':>10}  {base:>9.2f}  {'  '.join(cells)}  {tokens}",
              flush=True)


def _meta(name: str):
    with torch.device("meta"):
        return create_model(name)


if __name__ == "__main__":
    main()
