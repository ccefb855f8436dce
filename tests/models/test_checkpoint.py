"""Release checkpoints: wrappers, safe unpickling, and messages that say what does not fit."""

import argparse

import numpy as np
import pytest
import torch

from sta import CheckpointError, create_model, load_checkpoint
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
    with pytest.raises(CheckpointError, match="`allow_unsafe`") as err:
        load_checkpoint(model, tmp_path / "ck.pth")
    assert "NotAllowListed" in str(err.value) and "arbitrary code" in str(err.value)
    assert "weights_only" not in str(err.value)  # torch's advice to disable the safety is not ours to give
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


def test_mismatch_names_the_class_count_when_only_the_head_differs(tmp_path):
    state = tiny_model().state_dict()
    state["head.weight"], state["head.bias"] = torch.zeros(7, 32), torch.zeros(7)
    torch.save({"model": state}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError, match="head has 7 classes, the model 5: check `num_classes`"):
        load_checkpoint(tiny_model(), tmp_path / "ck.pth")


def test_mismatch_names_the_model_size(tmp_path):
    """A ViT-B file loaded into ViT-S: the size differs, not the classes."""
    torch.save({"module": create_model("vit_base_patch16_224", num_classes=5, img_size=32, depth=3).state_dict()},
               tmp_path / "b.pth")
    small = create_model("vit_small_patch16_224", num_classes=5, img_size=32, depth=3)
    with pytest.raises(CheckpointError, match="different model size: width 768, depth 3; the model has width 384"):
        load_checkpoint(small, tmp_path / "b.pth")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a PyTorch checkpoint"), (b"not a checkpoint at all", "not a PyTorch checkpoint"),
    (bytes(range(256)) * 8, "not a PyTorch checkpoint"), (None, "does not exist")])
def test_unreadable_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "ck.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tiny_model(), path)


def test_truncated_checkpoint_says_so(tmp_path):
    torch.save({"model": tiny_model().state_dict()}, tmp_path / "ck.pth")
    data = (tmp_path / "ck.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(tiny_model(), tmp_path / "cut.pth")


def test_a_directory_suggests_hf_model(tmp_path):
    with pytest.raises(CheckpointError, match="`hf_model`") as err:
        load_checkpoint(tiny_model(), tmp_path)
    assert err.value.param == "ckpt_path"


def test_checkpoint_without_tensors(tmp_path):
    torch.save({"model": {"epoch": 3}}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError, match="no tensors"):
        load_checkpoint(tiny_model(), tmp_path / "ck.pth")
