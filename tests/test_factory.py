"""sta.factory: what the user named becomes a model or a runner, and options a source decides are refused."""

from __future__ import annotations

import pytest
import torch

from sta.errors import InvalidInput
from sta.factory import (
    ModelRequest,
    PruningRequest,
    build_architecture,
    check_request,
    class_names,
    load_model,
    open_runner,
    pick_r,
    sampling_rate,
)
from sta.models.bundled import CLASS_NAMES, SAMPLING_RATE
from sta.models.bundled import class_names as bundled_class_names
from sta.models.vit import VisionTransformer

SMALL = dict(model="vit_small_patch16_224", img_size=32, num_frames=8)


def test_sources():
    assert ModelRequest().source == "bundled"
    assert ModelRequest(model="vit_small_patch16_224").source == "release"
    assert ModelRequest(ckpt_path="x.pth").source == "release"
    assert ModelRequest(hf_model="dir").source == "hf"
    assert ModelRequest(exported="m.onnx", hf_model="dir").source == "exported"


@pytest.mark.parametrize("given", [dict(num_frames=16), dict(model="vit_small_patch16_224"), dict(num_classes=5),
                                   dict(img_size=224), dict(ckpt_path="x.pth")])
def test_an_hf_directory_refuses_what_its_config_decides(given):
    with pytest.raises(InvalidInput, match="`hf_model` takes frames, size, classes and weights") as err:
        check_request(ModelRequest(hf_model="dir", **given))
    assert err.value.param == next(iter(given))


@pytest.mark.parametrize("pruning", [PruningRequest(r=0), PruningRequest(r=16), PruningRequest(method="sta"),
                                     PruningRequest(keep_ratio=0.5)])
def test_an_exported_file_refuses_pruning_options_whatever_their_value(pruning):
    """r=0 and the default method are refused too: the file fixes them, so any value given would be ignored."""
    with pytest.raises(InvalidInput, match="`exported` brings its own model, r and method"):
        check_request(ModelRequest(exported="m.onnx"), pruning)


def test_the_bundled_model_refuses_clip_options_and_names_them():
    with pytest.raises(InvalidInput, match="bundled demo model has its own frames") as err:
        load_model(ModelRequest(num_frames=8), allow_bundled=True)
    assert err.value.param == "num_frames" and "`num_frames`" in str(err.value)


def test_r_and_a_budget_exclude_each_other():
    with pytest.raises(InvalidInput, match="give one of `r`, `keep_ratio`"):
        PruningRequest(r=4, keep_ratio=0.5)


def test_release_model_with_random_weights_says_so_and_is_repeatable():
    with pytest.warns(UserWarning, match="random weights"):
        a = load_model(ModelRequest(**SMALL, num_classes=3), PruningRequest(r=1, method="norm"))
    with pytest.warns(UserWarning):
        b = load_model(ModelRequest(**SMALL, num_classes=3))
    assert isinstance(a.model, VisionTransformer) and a.random_weights and not a.bundled
    assert a.model.r == (1, 1, 1) and a.model.method == "norm" and b.model.r == (0, 0, 0)
    assert a.desc == dict(name=SMALL["model"], num_frames=8, img_size=32, tubelet_size=2, num_classes=3,
                          checkpoint=None, random_init_seed=0)
    torch.testing.assert_close(a.model.head.weight, b.model.head.weight)


def test_the_dataset_sizes_a_release_head_unless_classes_are_given():
    with pytest.warns(UserWarning):
        assert load_model(ModelRequest(**SMALL, dataset_classes=174)).model.cfg.num_classes == 174
    with pytest.warns(UserWarning):
        assert load_model(ModelRequest(**SMALL, num_classes=7, dataset_classes=174)).model.cfg.num_classes == 7


def test_the_bundled_model_when_nothing_is_named():
    loaded = load_model(ModelRequest(), PruningRequest(method="temporal"), allow_bundled=True, bundled_r=16)
    assert loaded.bundled and loaded.proxy == "hard" and loaded.sampling_rate == SAMPLING_RATE
    assert loaded.class_names == list(bundled_class_names("hard")) and loaded.class_names[0] == "digit0_left"
    assert loaded.model.r == (16, 16, 16) and loaded.model.method == "temporal"
    assert any("bundled demo model" in note for note in loaded.notes)
    assert sampling_rate(None, loaded) == 1 and sampling_rate(3, loaded) == 3
    easy = load_model(ModelRequest(proxy="easy"), allow_bundled=True)
    assert easy.proxy == "easy" and easy.class_names == list(CLASS_NAMES) and easy.model.cfg.embed_dim == 64
    assert easy.desc != loaded.desc  # an eval of one does not resume the other's predictions


def test_proxy_with_a_named_model_is_refused():
    with pytest.raises(InvalidInput, match="`proxy` picks a bundled model"):
        load_model(ModelRequest(model="vit_small_patch16_224", proxy="easy"), allow_bundled=True)


def test_a_budget_picks_r_and_says_so():
    model = build_architecture(ModelRequest(model="vit_small_patch16_224"))
    r, note = pick_r(model, PruningRequest(flops_reduction=0.35))
    assert r == (44, 44, 44) and "picked r=44" in note and "`flops_reduction` 0.35" in note
    assert pick_r(model, PruningRequest(), default=(3, 2, 1)) == ((3, 2, 1), None)
    assert model.r == (0, 0, 0)


def test_architecture_is_built_on_meta_without_weights():
    model = build_architecture(ModelRequest(model="vit_large_patch16_224"), method="tome")
    assert model.pos_embed.is_meta and model.method == "tome" and model.cfg.num_classes == 400
    with pytest.raises(InvalidInput, match="exported file is a graph"):
        build_architecture(ModelRequest(exported="m.onnx"))


def test_a_torch_runner_honours_the_model_contract():
    with pytest.warns(UserWarning):
        prepared = open_runner(ModelRequest(**SMALL, num_classes=3), PruningRequest(r=1))
    runner = prepared.runner
    assert runner.r == (1, 1, 1) and runner.method == "sta" and runner.cfg.num_frames == 8
    assert prepared.info.r == (1, 1, 1) and prepared.random_weights
    assert runner(torch.randn(2, *runner.cfg.clip_shape)).shape == (2, 3)


def test_class_names_precedence(tmp_path):
    (tmp_path / "names.txt").write_text("a\nb\nc\n")
    assert class_names(3, labels_file=str(tmp_path / "names.txt"), carried=["x", "y", "z"]) == ["a", "b", "c"]
    assert class_names(3, carried=["x", "y", "z"], dataset="Kinetics-400") == ["x", "y", "z"]
    assert class_names(174, dataset="Kinetics-400")[0] == class_names(174, dataset="SSV2")[0]  # count decides
    assert class_names(400, dataset="Kinetics-400")[0] == "abseiling"
    assert class_names(5) is None
    with pytest.raises(InvalidInput, match="3 class names for a model with 4 classes") as err:
        class_names(4, labels_file=str(tmp_path / "names.txt"))
    assert err.value.param == "labels"
    with pytest.raises(InvalidInput, match="`labels` file .*absent.txt not found"):
        class_names(3, labels_file=str(tmp_path / "absent.txt"))
