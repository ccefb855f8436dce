"""``sta bench``: forward speed at each r on random clips, with the speed-up over r = 0."""

from __future__ import annotations

import json
from dataclasses import replace

from sta.cli.options import (
    add_backend_args,
    add_device_args,
    add_model_args,
    add_pruning_args,
    batch_size,
    int_between,
    model_request,
    pruning_request,
    rounds,
    swept_rs,
)
from sta.cli.output import format_r, print_table, r_for_json
from sta.deploy.export import runner_for
from sta.deploy.metadata import model_info
from sta.errors import InvalidInput
from sta.factory import build_architecture, open_runner
from sta.measure.speed import benchmark, time_graph

INT8 = "int8"
CALIBRATION_CLIPS = 8  # random clips: ranges good enough to time the graph, not to read its answers
SPEED_ONLY = (f"speed only: quantized on the fly, calibrated on {CALIBRATION_CLIPS} random clips, unguarded (answers "
              "come from a file `sta export --quantize int8` wrote)")
NAME = "bench"
HELP = "forward speed (ms/clip, clips/s) at each r, with the speed-up over r=0"
DESCRIPTION = ("Forward speed on random clips: the median of --repeats timed runs after --warmup untimed ones. "
               "r=0 is always measured, as the speed-up's reference.")


def add_arguments(p) -> None:
    add_model_args(p, weights=False)
    add_pruning_args(p, sweep=True)
    p.add_argument("--batch-size", "--batch_size", type=batch_size, default=1, help="clips per forward")
    add_device_args(p)
    p.add_argument("--warmup", type=rounds, default=2, help="untimed forwards first")
    p.add_argument("--repeats", type=int_between(1, 1000), default=5, help="timed forwards (the median is reported)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    add_backend_args(p)


def run(args) -> None:
    if args.exported:
        return run_exported(args)
    request, pruning = model_request(args), pruning_request(args)
    model = build_architecture(request, method=pruning.method, device="cpu").eval()
    rs = swept_rs(args, model, pruning)
    name = request.hf_model or request.model or "vit_base_patch16_224"
    backend = args.backend or "torch"
    make_runner, int8 = None, args.dtype == INT8
    if int8:
        make_runner = int8_runner(args, name, backend)
    elif backend != "torch" or args.compile:
        def make_runner(m):
            return runner_for(m, model_info(m, name), backend, args.dtype, args.device, args.compile, speed_only=True)

    rows = benchmark(model, rs, batch_size=args.batch_size, dtype="float32" if int8 else args.dtype,
                     device=args.device, warmup=args.warmup, repeats=args.repeats, make_runner=make_runner)
    rows = [replace(row, dtype=args.dtype) for row in rows]
    if args.json:
        print(json.dumps([dict(row.to_dict(), r=r_for_json(row.r), **({"speed_only": True} if int8 else {}))
                          for row in rows]))
        return
    engine = backend + (", compiled" if args.compile else "")
    note = f"; {SPEED_ONLY}" if int8 else ""
    print(f"{name}, method {model.method}, batch {args.batch_size}, {args.dtype} on {rows[0].device} ({engine}); "
          f"median of {args.repeats} runs after {args.warmup} warm-up{note}")
    table = [dict(row.to_dict(), r=format_r(row.r)) for row in rows]
    print_table(table, [("r", "r", ""), ("ms_per_clip", "ms/clip", ".1f"), ("clips_per_s", "clips/s", ".2f"),
                        ("speedup", "speed-up vs r=0", ".2f")])


def int8_runner(args, name: str, backend: str):
    """``make_runner`` for int8: the model quantized on the fly at each r, calibrated on random clips (unguarded)."""
    from sta.deploy.quantize import quantized_runner, random_calibration

    if backend not in ("openvino", "onnxruntime") or args.compile or args.device != "cpu":
        raise InvalidInput("`dtype` int8 runs on `backend` openvino or onnxruntime, on the CPU, without `compile`",
                           param="dtype")
    return lambda m: quantized_runner(m, model_info(m, name), backend, random_calibration(m, CALIBRATION_CLIPS))


def run_exported(args) -> None:
    """One exported graph's speed; there is no r=0 graph beside it to compare with."""
    if args.compile or args.device != "cpu":
        raise InvalidInput("exported files run on the CPU, without `compile`", param="exported")
    prepared = open_runner(model_request(args), pruning_request(args), args.backend, args.dtype)
    runner, info = prepared.runner, prepared.info
    timing = time_graph(runner, info.num_frames, info.img_size, args.batch_size, args.warmup, args.repeats)
    row = dict(exported=args.exported, backend=runner.backend, dtype=args.dtype, r=list(info.r), method=info.method,
               batch_size=args.batch_size, ms_per_clip=timing.ms_per_clip, clips_per_s=timing.clips_per_s,
               gflops_per_view=info.gflops_per_view)
    if args.json:
        print(json.dumps([row]))
        return
    print(f"{args.exported} ({info.model}, {info.method} r={format_r(info.r)}), batch {args.batch_size}, "
          f"{args.dtype} on {runner.backend}: {timing.ms_per_clip:.1f} ms/clip, {timing.clips_per_s:.2f} clips/s "
          f"(median of {args.repeats} after {args.warmup} warm-up)")
