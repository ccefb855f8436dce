"""Release checkpoints: wrappers, safe unpickling, and messages that say what does not fit."""

import argparse

import numpy as np
import pytest
import torch

from sta import CheckpointError, load_checkpoint
from tests.helpers import tiny_clips, tiny_model


class NotAllowListed:  # stands for any pickled object whose unpickling could run code
    pass


@pytest.mark.parametrize("wrap", ["model", "module", "bare", "ddp-prefix"])
def test_release_wrappers_load_the_same_weights(tmp_path, wrap):
    source, target = tiny_model(seed=1), tiny_model(seed=2)
    state = source.state_dict()
    if wrap == "bare":
        payload = state
    elif wrap == "ddp-prefix":
        payload = {"model": {f"module.{k}": v for k, v in state.items()}}
    else:  # release files also carry args and numpy scalars next to the weights
        payload = {wrap: state, "args": argparse.Namespace(lr=1e-3, model="vit"), "epoch": 29,
                   "best_acc": np.float64(81.5), "hist": np.arange(3)}
    torch.save(payload, tmp_path / "ck.pth")
    load_checkpoint(target, tmp_path / "ck.pth")
    with torch.no_grad():
        torch.testing.assert_close(target(tiny_clips(1)), source(tiny_clips(1)), rtol=0, atol=0)


def test_file_needing_code_is_refused_unless_opted_in(tmp_path):
    model = tiny_model()
    torch.save({"model": model.state_dict(), "extra": NotAllowListed()}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError, match="allow-unsafe-checkpoint") as err:
        load_checkpoint(model, tmp_path / "ck.pth")
    assert "NotAllowListed" in str(err.value)
    load_checkpoint(model, tmp_path / "ck.pth", allow_unsafe=True)


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path):
    model = tiny_model()
    state = model.state_dict()
    del state["blocks.1.attn.q_bias"]
    state["blocks.9.attn.q_bias"] = torch.zeros(32)
    state["head.weight"] = torch.zeros(7, 32)
    torch.save({"model": state}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, tmp_path / "ck.pth")
    text = str(err.value)
    assert "missing (1): blocks.1.attn.q_bias" in text
    assert "unexpected (1): blocks.9.attn.q_bias" in text
    assert "head.weight: checkpoint (7, 32) vs model (5, 32)" in text
    assert "num_classes" in text


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_unreadable_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "ck.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="does not exist" if content is None else "not a readable"):
        load_checkpoint(tiny_model(), path)


def test_checkpoint_without_tensors(tmp_path):
    torch.save({"model": {"epoch": 3}}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(tiny_model(), tmp_path / "ck.pth")
