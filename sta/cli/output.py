"""How commands print: tables, r, token counts, and library messages in the CLI's own spelling."""

from __future__ import annotations

import re
import sys

from sta.core.schedule import R, format_r

__all__ = ["FLAGS", "format_r", "format_tokens", "print_notes", "print_table", "r_for_json", "spell_flags"]

# The library names a parameter by its Python name in backticks (`hf_model`); the CLI shows the flag.
FLAGS = {
    "model": "--model", "ckpt_path": "--ckpt-path", "hf_model": "--hf-model", "exported": "--exported",
    "num_frames": "--num-frames", "img_size": "--input-size", "tubelet_size": "--tubelet-size",
    "num_classes": "--nb-classes", "allow_unsafe": "--allow-unsafe-checkpoint", "r": "--r", "method": "--method",
    "flops_reduction": "--flops-reduction", "keep_ratio": "--keep-ratio", "backend": "--backend",
    "dtype": "--dtype", "device": "--device", "compile": "--compile", "output_dir": "--output-dir",
    "log_dir": "--log-dir", "labels": "--labels", "data_set": "--data-set", "sampling_rate": "--sampling-rate",
    "num_segments": "--test-num-segment", "num_crops": "--test-num-crop", "views": "--views", "format": "--format",
    "out": "--out", "debug": "--debug", "skip_verify": "--skip-verify",
    "batch_size": "--batch-size", "num_workers": "--num-workers", "num_clips": "--clips",
    "quantize": "--quantize", "calibration": "--calibration", "calibration_clips": "--calibration-clips",
    "force": "--force",
}


def spell_flags(message: str) -> str:
    """``"use `hf_model`"`` -> ``"use --hf-model"``; backticked words that are not parameters stay as they are."""
    return re.sub(r"`(\w+)`", lambda m: FLAGS.get(m.group(1), m.group(0)), message)


def print_notes(command: str, notes: list[str]) -> None:
    """What the library decided for the user (the bundled model, a budget's r), on stderr."""
    for note in notes:
        print(f"sta {command}: {spell_flags(note)}", file=sys.stderr)


def r_for_json(r: R) -> int | list[int]:
    """r as the CLI's JSON rows have always written it: one int when every stage is the same."""
    return r[0] if len(set(r)) == 1 else list(r)


def format_tokens(tokens) -> str:
    return " -> ".join(map(str, tokens))


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    cells = [[format(row[key], spec) if spec else str(row[key]) for key, _, spec in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))
