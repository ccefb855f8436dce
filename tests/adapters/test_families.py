"""What every patched Hugging Face family must do: nothing at r=0, the reference's tokens and logits at r>0.

The references (``tests/adapters/tiny_hf.py``) run HF's own, unpatched layers on the kept tokens, with STA's
selection from ``tests/reference.py``; ViViT's keeps its CLS token first, V-JEPA 2's gives every kept token
its original position in the rotary embedding.
"""

import pytest
import torch

pytest.importorskip("transformers")

from transformers.modeling_outputs import ImageClassifierOutput  # noqa: E402

from sta import patch_hf, tokens_after_stages  # noqa: E402
from sta.adapters.hf import forward_with_trace  # noqa: E402
from tests.adapters.tiny_hf import (  # noqa: E402
    SLICES,
    SPATIAL,
    assert_positions_equal,
    hf_pixels,
    logit_close,
    tiny_vivit,
    tiny_vjepa2,
    vivit_reference,
    vjepa2_reference,
)

FAMILIES = {"vivit": (tiny_vivit, vivit_reference), "vjepa2": (tiny_vjepa2, vjepa2_reference)}
IMPLS = ["eager", "sdpa"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("impl", IMPLS)
def test_r0_is_exactly_the_unpatched_model(family, impl):
    model = FAMILIES[family][0](impl, seed=1)
    x = hf_pixels(seed=1)
    with torch.no_grad():
        plain = model(x, output_hidden_states=True)
        assert patch_hf(model, r=0) is model
        patched = model(x, output_hidden_states=True)
        model.r = 4
        pruned = model(x).logits
        model.r = 0
        again = model(x).logits
    assert torch.equal(patched.logits, plain.logits) and torch.equal(again, plain.logits)
    assert all(torch.equal(a, b) for a, b in zip(patched.hidden_states, plain.hidden_states))
    assert not torch.allclose(pruned, plain.logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("r", [4, (3, 0, 9), (15, 1, 1), (0, 10, 0)])
def test_sta_keeps_the_reference_tokens_and_gives_its_logits(family, impl, r):
    tiny, reference = FAMILIES[family]
    model = tiny(impl, seed=2)
    x = hf_pixels(3, seed=2)
    ref_logits, ref_positions = reference(model, x, r)
    patch_hf(model, r=r)
    with torch.no_grad():
        out, trace = forward_with_trace(model, x)
    assert isinstance(out, ImageClassifierOutput)
    assert [p.shape[1] for p in trace.positions] == list(tokens_after_stages(SLICES, SPATIAL, r))
    assert_positions_equal(trace.positions, ref_positions)
    logit_close(out.logits, ref_logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_size_does_not_change_results(family):
    model = patch_hf(FAMILIES[family][0](seed=6), r=(4, 6, 2))
    x = hf_pixels(3, seed=6)
    with torch.no_grad():
        together, trace = forward_with_trace(model, x)
        alone = [forward_with_trace(model, x[i : i + 1]) for i in range(3)]
    for i, (logits, single) in enumerate(alone):
        logit_close(logits.logits[0], together.logits[i])
        assert all(torch.equal(a[0], b[i]) for a, b in zip(single.positions, trace.positions))
