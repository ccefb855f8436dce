"""Release <-> Hugging Face VideoMAE mapping of state dicts and configs (sta/models/hf_mapping.py). No network."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VideoMAEForVideoClassification  # noqa: E402

from sta import ViTConfig, create_model  # noqa: E402
from sta.models.hf_mapping import (  # noqa: E402
    hf_config_from_release,
    hf_to_release,
    infer_release_config,
    installed_bias_layout,
    release_config_from_hf,
    release_to_hf,
)
from tests.helpers import TINY, randomize_, tiny_model  # noqa: E402

TINY_CFG = ViTConfig(**{k: v for k, v in TINY.items() if k != "num_classes"}, num_classes=5)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def random_hf_classifier(seed: int = 0, **overrides) -> VideoMAEForVideoClassification:
    return randomize_(VideoMAEForVideoClassification(hf_config_from_release(TINY_CFG, **overrides)), seed).eval()


@pytest.mark.parametrize("layout", ["auto", "linear", "legacy"])
def test_release_to_hf_to_release_is_lossless(layout):
    state = tiny_model(seed=3).state_dict()
    hf_state = release_to_hf(state, bias_layout=layout)
    q_key = "videomae.encoder.layer.0.attention.attention." + ("q_bias" if layout == "legacy" else "query.bias")
    if layout != "auto":
        assert q_key in hf_state
    assert_same_tensors(hf_to_release(hf_state), state)


def test_hf_to_release_to_hf_is_lossless():
    state = random_hf_classifier(seed=4).state_dict()
    assert_same_tensors(release_to_hf(hf_to_release(state)), state)


def test_release_state_dict_fits_the_installed_transformers_exactly():
    model = VideoMAEForVideoClassification(hf_config_from_release(TINY_CFG))
    assert sorted(release_to_hf(tiny_model().state_dict())) == sorted(model.state_dict())
    assert installed_bias_layout() in ("linear", "legacy")


def test_qkv_is_split_in_query_key_value_order():
    state = tiny_model(seed=1).state_dict()
    hf_state = release_to_hf(state, bias_layout="linear")
    qkv = state["blocks.2.attn.qkv.weight"]
    prefix = "videomae.encoder.layer.2.attention.attention."
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf_state[prefix + name + ".weight"], qkv[32 * i: 32 * (i + 1)])
    assert torch.equal(hf_state[prefix + "query.bias"], state["blocks.2.attn.q_bias"])
    assert torch.equal(hf_state[prefix + "value.bias"], state["blocks.2.attn.v_bias"])
    assert torch.equal(hf_state["classifier.weight"], state["head.weight"])
    assert torch.equal(hf_state["fc_norm.bias"], state["fc_norm.bias"])


def test_configs_round_trip_and_use_the_release_eps():
    hf_config = hf_config_from_release(TINY_CFG)
    assert hf_config.layer_norm_eps == 1e-6 and hf_config.use_mean_pooling and hf_config.hidden_act == "gelu"
    assert getattr(hf_config, "qv_bias", getattr(hf_config, "qkv_bias", None)) is True
    assert (hf_config.image_size, hf_config.num_frames, hf_config.tubelet_size, hf_config.patch_size,
            hf_config.num_labels, hf_config.intermediate_size) == (32, 16, 2, 8, 5, 128)
    assert release_config_from_hf(hf_config) == TINY_CFG


def test_hf_configs_the_backbone_cannot_express_are_refused():
    for bad in (dict(use_mean_pooling=False), dict(hidden_act="relu"), dict(image_size=[32, 48])):
        with pytest.raises(ValueError, match="does not fit|square"):
            release_config_from_hf(hf_config_from_release(TINY_CFG, **bad))


def test_infer_release_config_from_shapes():
    assert infer_release_config(tiny_model().state_dict(), num_frames=16, img_size=32, num_heads=2) == TINY_CFG
    with torch.device("meta"):
        base = create_model("vit_base_patch16_224", num_classes=174)
    assert infer_release_config(base.state_dict()) == base.cfg  # heads from the release size table


def test_bad_state_dicts_are_value_errors():
    state = tiny_model().state_dict()
    with pytest.raises(ValueError, match="pre-training"):
        release_to_hf({**state, "encoder.blocks.0.norm1.weight": torch.ones(32)})
    hf_state = release_to_hf(state)
    with pytest.raises(ValueError, match="key bias"):
        hf_to_release({**hf_state, "videomae.encoder.layer.0.attention.attention.key.bias": torch.ones(32)})
    with pytest.raises(ValueError, match="no release counterpart"):
        hf_to_release({**hf_state, "decoder.head.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="bias_layout"):
        release_to_hf(state, bias_layout="fused")


def test_fixed_pos_embed_is_dropped_and_learned_one_refused():
    core = tiny_model()
    state = core.state_dict()
    assert_same_tensors(release_to_hf({**state, "pos_embed": core.pos_embed.clone()}), release_to_hf(state))
    with pytest.raises(ValueError, match="sin-cos"):
        release_to_hf({**state, "pos_embed": torch.randn_like(core.pos_embed)})
