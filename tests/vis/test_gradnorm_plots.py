"""`sta gradnorm`'s files: the JSON next to the two figures (mean map per slice, GradNorm kept vs tokens kept)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sta.measure.gradnorm import GradNormClip, run_gradnorm
from sta.vis.gradnorm_plots import write_gradnorm
from tests.helpers import tiny_clips, tiny_model

R = 4  # tokens kept: 8 x 12 -> 4 x 20 -> 2 x 36 = 72


def test_json_and_figures(tmp_path):
    pytest.importorskip("matplotlib")
    model, clips = tiny_model(r=0, seed=11), tiny_clips(batch=7, seed=12)
    labels = [0, 1, 2, 3, 4, 0, 1]
    source = [GradNormClip(f"clip{i}", clip, labels[i]) for i, clip in enumerate(clips)]
    result = run_gradnorm(model, source, ["sta", "random", "tome"], [R, (9, 1, 1)], target="label", batch_size=4,
                          progress=False)
    files = write_gradnorm(result, tmp_path / "out")
    assert sorted(files) == ["json", "map", "share"]
    on_disk = json.loads(files["json"].read_text())
    assert on_disk["rows"] == json.loads(json.dumps(result.to_rows()))
    assert on_disk["clips"] == 7 and on_disk["grid"] == [8, 4, 4] and on_disk["ci"].startswith("95%")
    assert np.allclose(on_disk["mean_map"], result.mean_map)
    from PIL import Image

    for kind in ("map", "share"):
        with Image.open(files[kind]) as image:
            assert image.size[0] > 300 and image.size[1] > 200
