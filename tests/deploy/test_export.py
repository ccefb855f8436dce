"""`sta export` and the backends: the exported graph reproduces the eager model, or nothing is written."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sta.core.methods import METHODS, method_refusal
from sta.deploy.export import (
    CHECK_BATCH,
    ExportError,
    GraphForward,
    compare,
    export_model,
    rounding_decided,
    runner_for,
)
from sta.deploy.metadata import ModelInfo, model_info, read_info
from sta.deploy.runners import open_exported
from tests.helpers import tiny_clips, tiny_model

onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.slow  # each ONNX export takes seconds on 2 cores


@pytest.fixture(scope="module")
def model():
    return tiny_model(r=(3, 2, 1), seed=5)


@pytest.fixture(scope="module")
def info(model) -> ModelInfo:
    return model_info(model, "tiny", class_names=[f"c{i}" for i in range(5)])


@pytest.fixture(scope="module")
def onnx_file(model, info, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    check = export_model(model, path, info)
    assert check.ok and check.max_abs_diff < 1e-4
    return path


def eager(model, clips):
    with torch.inference_mode():
        return GraphForward(model)(clips)


def test_onnx_carries_its_info_and_outputs_positions(model, info, onnx_file):
    assert replace(read_info(onnx_file), digest=None) == info and read_info(onnx_file).digest
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "positions_0", "positions_1", "positions_2"]
    clips = tiny_clips(3, seed=9)  # a batch size the export never saw: the batch is dynamic
    outputs = session.run(None, {"clips": clips.numpy()})
    expected = eager(model, clips)
    np.testing.assert_allclose(outputs[0], expected[0].numpy(), atol=1e-4)
    for got, want in zip(outputs[1:], expected[1:]):
        assert np.array_equal(got, want.numpy())


@pytest.mark.parametrize(("backend", "dtype", "atol"), [("onnxruntime", "float32", 1e-4), ("openvino", "float32", 1e-4),
                                                        ("openvino", "bfloat16", 0.5)])
def test_backends_agree_with_eager(model, onnx_file, backend, dtype, atol):
    if backend == "openvino":
        pytest.importorskip("openvino")
    runner = open_exported(onnx_file, backend, dtype)
    clips = tiny_clips(4, seed=2)
    got, want = runner(clips), eager(model, clips)[0]
    assert got.shape == want.shape and float((got - want).abs().max()) <= atol
    if dtype == "float32":
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_pt2_round_trip(model, info, tmp_path):
    export_model(model, tmp_path / "tiny.pt2", info)
    assert replace(read_info(tmp_path / "tiny.pt2"), digest=None) == info
    clips = tiny_clips(3, seed=4)
    assert torch.equal(open_exported(tmp_path / "tiny.pt2", "torch")(clips), eager(model, clips)[0])


def test_disagreeing_graph_is_refused_and_nothing_written(model, info, tmp_path, monkeypatch):
    def wrong(graph, clips, path, info):
        path.write_bytes(b"half-written")
        logits, *positions = eager(model, clips)
        return (logits + 1.0, *positions)

    monkeypatch.setattr("sta.deploy.export._export_onnx", wrong)
    with pytest.raises(ExportError, match="was not written"):
        export_model(model, tmp_path / "bad.onnx", info)
    assert list(tmp_path.iterdir()) == []


def test_a_clip_float_rounding_decides_is_left_out_and_said_but_a_wrong_graph_is_still_refused(
        model, info, tmp_path, monkeypatch):
    n = CHECK_BATCH + 2  # the random check clips, a static one and a repeated-frame one

    def one_clip_reordered(graph, clips, path, info):  # what a near-tie does: another order, then other tokens
        path.write_bytes(b"graph")
        logits, *positions = (t.clone() for t in eager(model, clips))
        positions[0][1] = positions[0][1].flip(-1)
        return (logits + torch.tensor([0.0, 0.5] + [0.0] * (n - 2))[:, None], *positions)

    monkeypatch.setattr("sta.deploy.export._export_onnx", one_clip_reordered)
    with pytest.raises(ExportError, match=f"same kept positions: False, on {n} clips"):  # float64 keeps clip 1's
        export_model(model, tmp_path / "a.onnx", info)
    assert list(tmp_path.iterdir()) == []
    decided = torch.zeros(n, dtype=torch.bool)
    decided[1] = True
    monkeypatch.setattr("sta.deploy.export.rounding_decided", lambda *_: decided)
    check = export_model(model, tmp_path / "a.onnx", info)
    assert check.ok and (check.clips, check.rounding_decided) == (n - 1, 1) and "1 more left out" in check.describe()


def test_a_check_that_cannot_decide_refuses_an_export_but_not_a_speed_only_graph(model, info, tmp_path, monkeypatch,
                                                                                  caplog):
    """`sta bench` on random weights once failed with "disagrees ... on 0 clips": every clip was rounding-decided,
    which proves nothing either way. An export is refused with that reason; a graph only timed runs, and says so."""
    n = CHECK_BATCH + 2

    def tie_moved(graph, clips, path, info):
        path.write_bytes(b"graph")
        logits, *positions = (t.clone() for t in eager(model, clips))
        positions[0] = positions[0].flip(-1)
        return (logits, *positions)

    monkeypatch.setattr("sta.deploy.export._export_onnx", tie_moved)
    monkeypatch.setattr("sta.deploy.export.rounding_decided", lambda *_: torch.ones(n, dtype=torch.bool))
    with pytest.raises(ExportError, match="cannot be checked: float rounding decides the kept tokens of all"):
        export_model(model, tmp_path / "b.onnx", info)
    assert not (tmp_path / "b.onnx").exists()
    import logging

    monkeypatch.setattr(logging.getLogger("sta"), "propagate", True)  # the CLI, run earlier in this process, stops it
    with caplog.at_level("WARNING", logger="sta"):
        check = export_model(model, tmp_path / "b.onnx", info, speed_only=True)
    assert check.undecided and (tmp_path / "b.onnx").is_file() and "answers are unchecked" in caplog.text


def test_rounding_decided_flags_the_clips_float64_selects_otherwise(model):
    clips = tiny_clips(3, seed=6)
    logits, *positions = (t.clone() for t in eager(model, clips))
    assert not rounding_decided(model, clips, (logits, *positions)).any()  # this tiny model has no near-tie here
    positions[1][2] = positions[1][2].flip(-1)
    assert rounding_decided(model, clips, (logits, *positions)).tolist() == [False, False, True]
    assert next(model.parameters()).dtype == torch.float32  # the float64 run was on a copy


def test_rounding_decided_nudges_the_clips_to_find_near_ties(model):
    clips = tiny_clips(3, seed=6)
    expected = eager(model, clips)
    assert not rounding_decided(model, clips, expected).any()  # rounding-sized nudges move nothing here
    assert not rounding_decided(model, clips, expected, nudges=0, noise=1e-2).any()  # nor float64 alone
    assert rounding_decided(model, clips, expected, noise=1e-2).all()  # nudges far above rounding move every clip


def test_compare_needs_identical_positions():
    logits = torch.tensor([[1.0, 2.0]])
    same = compare((logits, torch.tensor([[0, 1]])), (logits, torch.tensor([[0, 1]])))
    moved = compare((logits, torch.tensor([[0, 1]])), (logits, torch.tensor([[1, 0]])))
    assert same.ok and not moved.ok and not moved.same_positions


def test_runner_for_exports_on_the_fly(model, info):
    clips = tiny_clips(2, seed=3)
    got = runner_for(model, info, "onnxruntime")(clips)
    np.testing.assert_allclose(got.numpy(), eager(model, clips)[0].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="`compile` is for `backend` torch") as err:
        runner_for(model, info, "onnxruntime", compile=True)
    assert err.value.param == "compile"
    with pytest.raises(ValueError, match="float32"):
        runner_for(model, info, "onnxruntime", dtype="bfloat16")


def test_bad_exported_files_are_one_line_errors(tmp_path, onnx_file):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        read_info(tmp_path / "junk.onnx")
    plain = onnx.load(str(onnx_file))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="no sta metadata"):
        read_info(tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="run it with `backend` onnxruntime or openvino"):
        open_exported(onnx_file, "torch")


def test_large_graphs_keep_their_weights_beside_the_file(model, info, tmp_path, monkeypatch):
    """Protobuf caps a file at 2 GB (ViT-g's weights are 4): big graphs write NAME.onnx.data next to NAME.onnx."""
    monkeypatch.setattr("sta.deploy.export.ONNX_SINGLE_FILE_LIMIT", 1000)
    export_model(model, tmp_path / "big.onnx", info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    clips = tiny_clips(2, seed=8)
    got = open_exported(tmp_path / "big.onnx", "onnxruntime")(clips)
    np.testing.assert_allclose(got.numpy(), eager(model, clips)[0].numpy(), atol=1e-4)


EXPORTABLE = sorted(m for m in METHODS if method_refusal(m, "export") is None)


@pytest.mark.parametrize("method", EXPORTABLE)
def test_every_exportable_method_records_the_token_counts_it_keeps(method):
    """The counts came from STA's arithmetic whatever the method (evs-q r=16 recorded 384 -> 320 -> 288 while its
    graph kept 288 at every stage). What is recorded is what the eager model keeps, for every method."""
    model = tiny_model(r=(3, 2, 1), seed=5)
    model.set_pruning(method=method)
    with torch.no_grad():
        _, trace = model(tiny_clips(2, seed=1), return_trace=True)
    assert model_info(model, "tiny").tokens_per_stage == [p.shape[1] for p in trace.positions]


@pytest.mark.parametrize("method", ["evs-q", "rlt", "vidtldr"])  # counts of their own; vid-TLDR's ONNX export
def test_the_graph_keeps_the_recorded_counts(method, tmp_path):
    """...and the exported graph's positions_k outputs agree (vid-TLDR failed to export to ONNX at every r)."""
    import onnxruntime

    model = tiny_model(r=(3, 2, 1), seed=5)
    model.set_pruning(method=method)
    info = model_info(model, "tiny")
    path = tmp_path / f"{method}.onnx"
    export_model(model, path, info)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    positions = session.run(["positions_0", "positions_1", "positions_2"], {"clips": tiny_clips(2, seed=1).numpy()})
    assert read_info(path).tokens_per_stage == [p.shape[1] for p in positions]
