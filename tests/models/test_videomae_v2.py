"""VideoMAE V2 checkpoints: ViT-g, key prefixes, refused options, Kinetics-710 heads.

Equality with VideoMAE V2's own model is checked against a test-only re-statement of
its forward (``videomae_v2_reference.py``) on tiny configurations; ViT-g itself is
only ever built on the meta device.
"""

import warnings

import pytest
import torch

from sta import MODEL_CONFIGS, CheckpointError, create_model, load_checkpoint
from sta.factory import ModelRequest, PruningRequest, load_model
from sta.labels import k710_to_k400
from sta.measure.flops import flops_report
from sta.models.checkpoint import extract_state_dict
from sta.models.heads import k710_to_k400_head, select_head_rows
from tests.helpers import TINY, randomize_, tiny_clips, tiny_model
from tests.models.videomae_v2_reference import V2VisionTransformer
from tests.reference import reference_forward

# Tiny models with ViT-g's peculiarities: 14-pixel patches and MLP ratio 48/11 (hidden
# exactly 44 * 48/11 = 192, as 1408 -> 6144; or truncated, 40 -> int(174.5) = 174),
# depth a multiple of 3 like 40 -> 0, 13, 26; and a V1-like one (patch 8, ratio 4).
CONFIGS = {
    "g-like": dict(embed_dim=44, depth=6, num_heads=4, mlp_ratio=48 / 11, patch_size=14, img_size=56),
    "g-like-truncated": dict(embed_dim=40, depth=3, num_heads=4, mlp_ratio=48 / 11, patch_size=14, img_size=28),
    "v1-like": dict(embed_dim=32, depth=3, num_heads=2, mlp_ratio=4.0, patch_size=8, img_size=32),
}


def v2_model(cfg: dict, seed: int = 0, num_classes: int = 5, **options) -> V2VisionTransformer:
    ref = V2VisionTransformer(cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["mlp_ratio"],
                              patch=cfg["patch_size"], img=cfg["img_size"], num_classes=num_classes, **options)
    return randomize_(ref, seed).eval()


def ours(cfg: dict, num_classes: int = 5, r=0):
    return create_model("vit_giant_patch14_224", num_classes=num_classes, r=r, **cfg).eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_videomae_v2_model(tmp_path, name):
    cfg = CONFIGS[name]
    ref = v2_model(cfg, seed=3)
    model = ours(cfg)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    torch.save({"module": ref.state_dict(), "epoch": 34}, tmp_path / "v2.pth")  # DeepSpeed-style wrapper
    load_checkpoint(model, tmp_path / "v2.pth")
    clips = tiny_clips(2, seed=4, size=cfg["img_size"])
    with torch.no_grad():
        torch.testing.assert_close(model(clips), ref(clips), rtol=1e-5, atol=1e-5)


def test_g_like_model_prunes_as_the_sta_reference():
    """Patch 14 and ratio 48/11 through all three stages (blocks 0, 2, 4 of 6), token for token."""
    cfg, r = CONFIGS["g-like"], (3, 5, 7)
    model = ours(cfg, r=r)
    model.load_state_dict(v2_model(cfg, seed=5).state_dict())
    clips = tiny_clips(2, seed=5, size=cfg["img_size"])
    with torch.no_grad():
        logits, trace = model(clips, return_trace=True)
    ref_logits, ref_positions = reference_forward(model.state_dict(), clips, patch_size=14, tubelet_size=2,
                                                  num_heads=cfg["num_heads"], r=r)
    assert [p.shape[1] for p in trace.positions] == [8 * 13, 4 * 21, 2 * 35]
    for b in range(2):
        assert [p[b].tolist() for p in trace.positions] == ref_positions[b]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_vit_g_size_on_meta():
    with torch.device("meta"):
        model = create_model("vit_giant_patch14_224", r=64)
    assert all(p.is_meta for p in model.parameters())
    cfg = model.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.mlp_hidden) == (1408, 40, 16, 14, 6144)
    assert model.blocks[0].mlp.fc1.weight.shape == (6144, 1408)
    assert cfg.tokens_per_slice == 256 and cfg.head_dim == 88
    assert [s.block for s in model.stages] == [0, 13, 26]
    assert [s.tokens_out for s in model.stages] == [8 * 192, 4 * 320, 2 * 576]
    C, H, L = 1408, 6144, 40
    block = 2 * 2 * C + 3 * C * C + 2 * C + C * C + C + C * H + H + H * C + C  # norms, qkv, q/v bias, proj, mlp
    backbone = 3 * 2 * 14 * 14 * C + C + L * block + 2 * C  # tubelet embedding, blocks, fc_norm
    count = sum(p.numel() for p in model.parameters())
    assert count == backbone + 400 * C + 400 == 1_012_174_352
    assert abs(backbone - 1_011e6) / 1_011e6 < 1e-3  # VideoMAE V2 paper: 1,011M for ViT-g


def test_vit_g_flops_match_videomae_v2_published_cost():
    """The paper's K400 cost at 64 x 266^2 is 160.30 TFLOPs for 2 x 3 views, in multiply-adds as ours."""
    with torch.device("meta"):
        big = create_model("vit_giant_patch14_224", num_frames=64, img_size=266)
        base = create_model("vit_giant_patch14_224")
    assert abs(6 * flops_report(big).gflops / 1e3 - 160.30) < 0.01
    assert abs(flops_report(base).gflops - 2543.94) < 0.01


@pytest.mark.parametrize(("name", "dim", "depth", "heads"), [  # VideoMAE V2's modeling_finetune.py sizes
    ("vit_small_patch16_224", 384, 12, 6), ("vit_base_patch16_224", 768, 12, 12),
    ("vit_large_patch16_224", 1024, 24, 16), ("vit_huge_patch16_224", 1280, 32, 16)])
def test_v2_sizes_are_v1_sizes(name, dim, depth, heads):
    with torch.device("meta"):
        cfg = create_model(name).cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden, cfg.patch_size) == (dim, depth, heads,
                                                                                           4 * dim, 16)


# ------------------------------------------------------------------------------------------ key prefixes

@pytest.mark.parametrize("prefix", ["_orig_mod.", "backbone.", "encoder.", "_orig_mod.module.", "module._orig_mod."])
def test_prefixes_are_stripped(tmp_path, prefix):
    source, target = tiny_model(seed=1), tiny_model(seed=2)
    torch.save({"model": {prefix + k: v for k, v in source.state_dict().items()}}, tmp_path / "ck.pth")
    load_checkpoint(target, tmp_path / "ck.pth")
    with torch.no_grad():
        torch.testing.assert_close(target(tiny_clips(1)), source(tiny_clips(1)), rtol=0, atol=0)


def test_compile_prefix_on_some_keys_is_stripped_key_by_key(tmp_path):
    """VideoMAE V2's loader strips ``_orig_mod.`` from each key that has it: such a file loads there, so here too."""
    source, target = tiny_model(seed=1), tiny_model(seed=2)
    mixed = {("_orig_mod." + k if k.startswith("blocks.") else k): v for k, v in source.state_dict().items()}
    torch.save({"model": mixed}, tmp_path / "ck.pth")
    load_checkpoint(target, tmp_path / "ck.pth")
    with torch.no_grad():
        torch.testing.assert_close(target(tiny_clips(1)), source(tiny_clips(1)), rtol=0, atol=0)
    clash = {**source.state_dict(), "_orig_mod.head.bias": torch.zeros(5)}
    with pytest.raises(CheckpointError, match="two weights for one parameter"):
        extract_state_dict(clash)


def test_prefix_on_some_keys_only_is_kept():
    state = tiny_model().state_dict()
    mixed = {("encoder." + k if k.startswith("blocks.") else k): v for k, v in state.items()}
    assert extract_state_dict(mixed) == mixed
    pretraining = {**{"encoder." + k: v for k, v in state.items()}, "decoder.head.weight": torch.zeros(2, 2)}
    assert extract_state_dict(pretraining) == pretraining


def test_pretraining_checkpoint_is_named(tmp_path):
    state = tiny_model().state_dict()
    torch.save({"model": {**{"encoder." + k: v for k, v in state.items()}, "decoder.norm.weight": torch.ones(32)}},
               tmp_path / "pt.pth")
    with pytest.raises(CheckpointError, match="pre-training checkpoint"):
        load_checkpoint(tiny_model(), tmp_path / "pt.pth")


# ------------------------------------------------------------------------------------------ refused options

@pytest.mark.parametrize(("options", "feature", "keys"), [
    (dict(init_values=0.1), "layer scale", ["blocks.0.gamma_1", "blocks.0.gamma_2", "blocks.2.gamma_2"]),
    (dict(cos_attn=True), "cosine attention", ["blocks.0.attn.scale", "blocks.1.attn.scale", "blocks.2.attn.scale"]),
    (dict(use_mean_pooling=False), "use_mean_pooling=False", ["norm.weight", "norm.bias"]),
])
def test_unsupported_v2_options_are_refused_by_name(tmp_path, options, feature, keys):
    cfg = CONFIGS["v1-like"]
    torch.save({"module": v2_model(cfg, **options).state_dict()}, tmp_path / "ck.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ours(cfg), tmp_path / "ck.pth")
    text = str(err.value)
    assert feature in text and "not support" in text and all(k in text for k in keys), text
    assert "unexpected" not in text


def test_refused_options_change_the_output():
    """Why they are refused rather than ignored: dropping them gives a different model."""
    cfg, clips = CONFIGS["v1-like"], tiny_clips(1, seed=2)
    for options in (dict(init_values=0.1), dict(cos_attn=True)):
        ref = v2_model(cfg, seed=6, **options)
        plain = v2_model(cfg, seed=6)
        plain.load_state_dict(ref.state_dict(), strict=False)
        with torch.no_grad():
            assert not torch.allclose(ref(clips), plain(clips), atol=1e-3)


# ------------------------------------------------------------------------------------------ Kinetics-710 heads

def k710_state(seed: int = 0) -> dict:
    return tiny_model(seed=seed, num_classes=710).state_dict()


def test_k710_head_keeps_the_mapped_rows_in_k400_order():
    state = k710_state()
    before = {k: v.clone() for k, v in state.items()}
    out = k710_to_k400_head(state)
    rows = list(k710_to_k400())
    assert out["head.weight"].shape == (400, 32) and out["head.bias"].shape == (400,)
    for i in (0, 1, 199, 399):
        assert torch.equal(out["head.weight"][i], state["head.weight"][rows[i]])
        assert out["head.bias"][i] == state["head.bias"][rows[i]]
    assert all(torch.equal(state[k], before[k]) for k in state)  # pure: the input is untouched
    assert all(out[k] is state[k] for k in state if not k.startswith("head."))
    with pytest.raises(ValueError, match="710"):
        k710_to_k400_head(out)
    with pytest.raises(ValueError, match="out of range"):
        select_head_rows(state, [0, 710])
    with pytest.raises(ValueError, match="no classifier head"):
        select_head_rows({"fc_norm.weight": torch.ones(3)}, [0])


def test_load_checkpoint_maps_a_k710_head_for_400_classes(tmp_path):
    source = tiny_model(seed=7, num_classes=710)
    torch.save({"module": source.state_dict()}, tmp_path / "k710.pth")
    target = tiny_model(seed=8, num_classes=400)
    with pytest.warns(UserWarning, match="710 classes.*k710->k400"):
        load_checkpoint(target, tmp_path / "k710.pth")
    clips = tiny_clips(2, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(target(clips), source(clips)[:, list(k710_to_k400())], rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="head has 710 classes, the model 400"):
        load_checkpoint(tiny_model(num_classes=400), tmp_path / "k710.pth", head_map=None)
    with pytest.raises(CheckpointError, match="maps only to 400"):
        load_checkpoint(tiny_model(num_classes=600), tmp_path / "k710.pth")
    with pytest.raises(ValueError, match="head_map"):
        load_checkpoint(target, tmp_path / "k710.pth", head_map="k600")


@pytest.fixture
def tiny_release_name(monkeypatch):
    """``sta.factory.load_model`` builds by release name: register a tiny one for the test."""
    sizes = {k: v for k, v in TINY.items() if k in ("embed_dim", "depth", "num_heads", "patch_size")}
    monkeypatch.setitem(MODEL_CONFIGS, "tiny_test", sizes)
    return "tiny_test"


def test_load_model_maps_k710_to_k400_and_records_it(tmp_path, tiny_release_name):
    source = tiny_model(seed=9, num_classes=710)
    torch.save({"model": source.state_dict()}, tmp_path / "k710.pth")
    request = ModelRequest(model=tiny_release_name, ckpt_path=str(tmp_path / "k710.pth"), num_classes=400, img_size=32)
    with pytest.warns(UserWarning, match="Kinetics-400 rows"):
        loaded = load_model(request, PruningRequest(r=2))
    model, desc = loaded.model, loaded.desc
    assert desc["head"] == "k710->k400" and model.r == (2, 2, 2)
    clips = tiny_clips(1, seed=9)
    with torch.no_grad():
        model.r = 0
        torch.testing.assert_close(model(clips), source(clips)[:, list(k710_to_k400())], rtol=1e-5, atol=1e-5)


def test_load_model_keeps_k710_for_710_classes(tmp_path, tiny_release_name):
    source = tiny_model(seed=10, num_classes=710)
    torch.save({"model": source.state_dict()}, tmp_path / "k710.pth")
    request = ModelRequest(model=tiny_release_name, ckpt_path=str(tmp_path / "k710.pth"), num_classes=710, img_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model(request)
    model, desc = loaded.model, loaded.desc
    assert "head" not in desc and desc["num_classes"] == 710
    clips = tiny_clips(1, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(model(clips), source(clips), rtol=0, atol=0)
