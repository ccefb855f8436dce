"""Train a bundled proxy model: a depth-12 VideoMAE ViT on a synthetic task of ``sta.data``.

``--task hard`` (the default bundled model, ``sta/models/assets/proxy_vit_hard.pth``)
trains by a fixed number of steps, deterministically: seeded clips (step s always
sees the same clips) and seeded initialisation, so the same command gives the same
weights on the same machine and torch version. ``--task easy`` is the first bundled
model (``proxy_vit.pth``), trained with a time-stretched schedule (its README).

Fresh clips are generated for every step (an endless training stream, so no
overfitting), from a ``train`` random stream that never meets the ``test``
stream the accuracy is measured on. AdamW, linear warm-up then cosine decay,
bf16 autocast on CPU. The checkpoint is written in the VideoMAE release format,
``{'model': state_dict, 'args': {...}}``, weights in float16 (the loader turns
them back into float32), ``args`` holding the model config, the training
settings, the seed, the command, the wall time and the held-out top-1 (measured
in float32 on the float16-rounded weights, i.e. on exactly what ships). Next to
it, ``<out>.curve.tsv`` holds every step's loss, so a rerun can be compared.

    # the bundled hard model (see sta/models/assets/README.md for its time and accuracy):
    python benchmarks/train_proxy.py --task hard --steps 4000 --batch-size 16 --embed-dim 128 --num-heads 4 \
        --lr 1e-3 --eval-every 250 --monitor-clips 96 --eval-clips 480 --log-every 50

    # the easy model (51.7 min on 2 CPU cores, 100% held-out top-1):
    python benchmarks/train_proxy.py --task easy --steps 100000 --schedule time --time-budget-min 52 \
        --batch-size 16 --embed-dim 64 --num-heads 2 --lr 1e-3 \
        --eval-every 200 --monitor-clips 96 --eval-clips 480 --log-every 50

``--time-budget-min`` stops training early (and still evaluates and saves)
when the budget would be exceeded; ``--schedule time`` instead stretches the
learning-rate schedule over the budget, so a slow or shared machine still
finishes its cosine decay (neither is deterministic; the hard model uses
neither). Weights start from PyTorch's default initialisation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sta import create_model
from sta.data.proxies import get_task, make_clips
from sta.measure.speed import cpu_description
from sta.models.bundled import checkpoint_path

MODEL = "vit_small_patch16_224"  # the release's ViT-S code path; width/depth/heads overridden below
EVAL_SEED = 0  # the fixed held-out set: make_clips(PROXY_TASK, eval_clips, EVAL_SEED, "test")
MONITOR_SEED = 1  # a smaller held-out set checked during training


def lr_at(progress: float, base_lr: float, warmup: float, min_lr: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction, then cosine decay to ``min_lr``."""
    if progress < warmup:
        return base_lr * progress / warmup
    t = min(1.0, (progress - warmup) / max(1e-8, 1 - warmup))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model: nn.Module, task, num_clips: int, seed: int, batch_size: int, bf16: bool) -> float:
    """Top-1 on ``num_clips`` held-out (``test`` split) clips of seed ``seed``."""
    model.eval()
    clips, labels = make_clips(task, num_clips, seed, "test")
    correct = 0
    for start in range(0, num_clips, batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(clips[start : start + batch_size])
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum().item()
    model.train()
    return correct / num_clips


def plain(value):
    """Tuples -> lists, recursively, so ``args`` loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("easy", "hard"), default="hard", help="synthetic task (sta.data.proxies)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of the run spent warming up")
    parser.add_argument("--clip-grad", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="default: the bundled file of --task")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many steps of the --steps schedule, without saving (a smoke run: its "
                             "losses are the full run's first steps)")
    parser.add_argument("--curve", default=None,
                        help="where to write the per-step curve (default: next to --out; with --stop-after: only here)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-clips", type=int, default=480, help="held-out clips for the final top-1")
    parser.add_argument("--monitor-clips", type=int, default=120, help="held-out clips checked every --eval-every")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--time-budget-min", type=float, default=None,
                        help="stop training early when over this wall time (the final eval and save still run)")
    parser.add_argument("--schedule", choices=("steps", "time"), default="steps",
                        help="learning-rate progress by step count, or by the larger of step and time fractions")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    args = parser.parse_args()
    if args.schedule == "time" and args.time_budget_min is None:
        parser.error("--schedule time needs --time-budget-min")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = get_task(args.task)
    out = Path(args.out) if args.out else checkpoint_path(args.task)
    curve = Path(args.curve) if args.curve else out.with_suffix(".curve.tsv")
    curve_rows = ["step\tloss\ttrain_acc\tlr\tmonitor_top1"]
    model = create_model(
        MODEL, num_classes=task.num_classes, num_frames=task.num_frames, img_size=task.size, tubelet_size=2,
        patch_size=args.patch_size, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.num_heads,
    )
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.999),
    )
    n_params = sum(p.numel() for p in model.parameters())
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"{command}\nmodel: {MODEL} dim {args.embed_dim} depth {args.depth} heads {args.num_heads} "
          f"patch {args.patch_size}, {n_params / 1e6:.2f} M params; task {task}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, bf16 {args.bf16}, cpu {cpu_description()}", flush=True)

    budget_s = args.time_budget_min * 60 if args.time_budget_min is not None else math.inf
    start = time.perf_counter()
    eval_reserve_s = 0.0  # grows to the measured cost of a held-out pass, so the final one fits the budget
    loss_avg, acc_avg, step = None, None, 0
    for step in range(args.steps):
        elapsed = time.perf_counter() - start
        if elapsed + eval_reserve_s > budget_s:
            print(f"time budget reached after {step} steps ({elapsed / 60:.1f} min)", flush=True)
            break
        progress = step / args.steps
        if args.schedule == "time":
            progress = max(progress, elapsed / budget_s)
        lr = lr_at(progress, args.lr, args.warmup, args.min_lr)
        for group in opt.param_groups:
            group["lr"] = lr
        # Step s of seed k always sees the same clips: train stream, seed k * 1e6 + s.
        clips, labels = make_clips(task, args.batch_size, args.seed * 1_000_000 + step, "train")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        opt.step()
        acc = (logits.argmax(1) == labels).float().mean().item()
        curve_rows.append(f"{step + 1}\t{loss.item():.9g}\t{acc:.4f}\t{lr:.6g}\t")
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        acc_avg = acc if acc_avg is None else 0.95 * acc_avg + 0.05 * acc
        if (step + 1) % args.log_every == 0:
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{args.steps}  loss {loss_avg:.3f}  train acc {acc_avg:.3f}  lr {lr:.2e}  "
                  f"{elapsed / 60:.1f} min  {elapsed / (step + 1):.2f} s/step", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            t0 = time.perf_counter()
            top1 = evaluate(model, task, args.monitor_clips, MONITOR_SEED, 2 * args.batch_size, args.bf16)
            curve_rows[-1] += f"{top1:.4f}"
            cost = time.perf_counter() - t0
            eval_reserve_s = max(eval_reserve_s, cost * (args.eval_clips / args.monitor_clips) * 3)  # fp32 ~3x
            print(f"  held-out top-1 ({args.monitor_clips} clips, seed {MONITOR_SEED}): {top1:.3f}  ({cost:.0f} s)",
                  flush=True)
        if args.stop_after is not None and step + 1 >= args.stop_after:
            if args.curve:
                curve.write_text("\n".join(curve_rows) + "\n")
            print(f"stopped after {step + 1} steps (--stop-after): no weights saved", flush=True)
            return
    else:
        step = args.steps
    steps_done = step
    train_s = time.perf_counter() - start

    # Ship float16 weights; measure the accuracy of exactly those, back in float32, without autocast.
    state = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in state.items()})
    top1 = evaluate(model, task, args.eval_clips, EVAL_SEED, 2 * args.batch_size, bf16=False)
    wall_s = time.perf_counter() - start
    print(f"held-out top-1 ({args.eval_clips} clips, test split, seed {EVAL_SEED}, float32): {top1:.4f}", flush=True)

    cfg = model.cfg
    ckpt = {
        "model": state,
        "args": plain({
            "model": MODEL, "num_classes": cfg.num_classes, "num_frames": cfg.num_frames, "img_size": cfg.img_size,
            "tubelet_size": cfg.tubelet_size, "patch_size": cfg.patch_size, "embed_dim": cfg.embed_dim,
            "depth": cfg.depth, "num_heads": cfg.num_heads, "class_names": list(task.class_names),
            "task_name": args.task, "task": dataclasses.asdict(task),
            "seed": args.seed, "steps": args.steps, "steps_done": steps_done, "batch_size": args.batch_size,
            "lr": args.lr, "min_lr": args.min_lr, "weight_decay": args.weight_decay, "warmup": args.warmup,
            "clip_grad": args.clip_grad, "schedule": args.schedule, "bf16": args.bf16, "threads": args.threads,
            "time_budget_min": args.time_budget_min if args.time_budget_min is not None else -1.0,
            "train_minutes": round(train_s / 60, 2), "wall_minutes": round(wall_s / 60, 2),
            "top1": top1, "eval_clips": args.eval_clips, "eval_seed": EVAL_SEED, "eval_split": "test",
            "command": command, "torch": str(torch.__version__), "cpu": cpu_description(),
        }),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out)
    curve.write_text("\n".join(curve_rows) + "\n")
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) and {curve.name} after {steps_done} steps, "
          f"{wall_s / 60:.1f} min wall", flush=True)


if __name__ == "__main__":
    main()
