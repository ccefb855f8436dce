"""Every method in every Hugging Face family, through HFVideoClassifier as the commands use it. No network.

Token counts, valid traces, batch-size invariance (also for rlt-threshold, whose clips run one by one),
oracle's scores from a scorer, FLOPs on the meta copy, and the GradNorm study's upper bound.
"""

import pytest
import torch

pytest.importorskip("transformers")

from sta import tokens_after_stages  # noqa: E402
from sta.adapters.wrapper import HFVideoClassifier  # noqa: E402
from sta.core.methods import METHODS, Needs  # noqa: E402
from sta.measure.flops import count_flops, flops_report  # noqa: E402
from sta.measure.gradnorm import GradNormClip, oracle_scorer, oracle_scores, run_gradnorm  # noqa: E402
from sta.models.convert import hf_model_from_release  # noqa: E402
from tests.adapters.tiny_hf import tiny_vivit, tiny_vjepa2  # noqa: E402
from tests.core.clips import moving_patch_clips  # noqa: E402
from tests.helpers import tiny_clips, tiny_model  # noqa: E402

R = (5, 4, 3)
BUILD = {
    "videomae": lambda seed: hf_model_from_release(tiny_model(seed=seed).state_dict(), tiny_model().cfg),
    "vivit": lambda seed: tiny_vivit(seed=seed),
    "vjepa2": lambda seed: tiny_vjepa2(seed=seed),
}


def classifier(family: str, method: str, r=R, seed: int = 0) -> HFVideoClassifier:
    return HFVideoClassifier(BUILD[family](seed), r=r, method=method).eval()


def mixed_clips(seed: int) -> torch.Tensor:
    """Two still clips with a moving patch and two noisy ones: rlt-threshold keeps different counts."""
    return torch.cat([moving_patch_clips(2, seed=seed), tiny_clips(2, seed=seed)])


@pytest.mark.parametrize("family", sorted(BUILD))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_in_every_family_is_batch_size_invariant(family, method):
    model = classifier(family, method, seed=3)
    clips = mixed_clips(3)
    scores = torch.rand(4, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, trace = model(clips, return_trace=True, token_scores=scores)
        for i in range(4):
            one, single = model(clips[i : i + 1], return_trace=True, token_scores=scores[i : i + 1])
            torch.testing.assert_close(one[0], logits[i], rtol=1e-4, atol=1e-4)
            for k in range(3):
                width = single.positions[k].shape[1]
                assert torch.equal(single.positions[k][0], trace.positions[k][i, :width])
    assert torch.isfinite(logits).all()
    if METHODS[method].equal_budget:
        assert [p.shape[1] for p in trace.positions] == list(tokens_after_stages(8, 16, R))
    for k in range(3):  # valid, distinct positions (merges: destinations)
        for row in trace.positions[k]:
            alive = row[row >= 0]
            assert len(set(alive.tolist())) == len(alive) and int(alive.max()) < 128


@pytest.mark.parametrize("family", sorted(BUILD))
def test_oracle_scores_come_from_the_unpruned_model(family):
    model = classifier(family, "oracle", seed=4)
    clips = tiny_clips(2, seed=4)
    scores = oracle_scores(model, clips)
    with pytest.raises(ValueError, match="token_scores"):
        model(clips)
    with torch.no_grad(), model.scored_by(oracle_scorer(model)):
        logits, trace = model(clips, return_trace=True)
    torch.testing.assert_close(logits, model(clips, token_scores=scores))
    count = tokens_after_stages(8, 16, R)[-1]
    assert torch.equal(trace.positions[-1], scores.argsort(dim=1, descending=True)[:, :count].sort(dim=1).values)


@pytest.mark.parametrize("family", sorted(BUILD))
def test_flops_count_every_method_on_the_meta_copy(family):
    norm = count_flops(classifier(family, "norm"))
    for method in METHODS:
        report = flops_report(classifier(family, method))
        if method in ("norm", "random", "repshift", "oracle"):
            assert report.flops == norm, method
        elif method in ("sta", "temporal", "tome", "vidtldr", "evs"):
            assert report.flops > norm, method  # their scoring products
        else:
            assert report.flops != norm, method  # rlt, evs-q: other token counts; rlt-threshold: its upper bound
        if METHODS[method].equal_budget:
            assert report.tokens == tokens_after_stages(8, 16, R), method


def test_gradnorm_study_runs_every_method_and_oracle_keeps_the_most():
    model = classifier("vivit", "sta", seed=5)
    clips = mixed_clips(5)
    source = [GradNormClip(f"clip{i}", clip, i % 5) for i, clip in enumerate(clips)]
    for target in ("predicted", "label"):
        result = run_gradnorm(model, source, rs=[R], batch_size=3, progress=False, target=target)
        rows = {row.method: row for row in result.rows}
        assert set(rows) == {None, *METHODS} and not result.not_run
        if target == "predicted":  # the oracle keeps the k highest-GradNorm tokens: no method keeps more mass
            assert all(rows["oracle"].kept_share >= row.kept_share - 1e-9 for row in result.rows[1:])
            assert rows["oracle"].top10_kept == 1.0
        assert rows["rlt-threshold"].tokens_kept < 128  # the still clips drop their static tokens
    assert (model.r, model.method) == ((5, 4, 3), "sta")


def test_needs_reach_the_layers_only_at_stage_layers(monkeypatch):
    """The HF loop asks a layer for keys / attention probabilities only when the method reads them (every layer
    of the tiny ViViT is a stage layer); otherwise attention stays fused."""
    import sta.adapters.vivit as vivit

    seen = []
    attention = vivit.attention

    def spy(q, k, v, inp, scaling=None):
        seen.append((inp.need_keys, inp.need_probs))
        return attention(q, k, v, inp, scaling)

    monkeypatch.setattr(vivit, "attention", spy)
    for method in ("norm", "vidtldr", "sta"):
        with torch.no_grad():
            classifier("vivit", method)(tiny_clips(1))
    assert seen == [(False, False)] * 3 + [(False, True)] * 3 + [(True, False)] * 3
    assert Needs.ATTENTION in METHODS["vidtldr"].needs


@pytest.mark.parametrize("family", sorted(BUILD))
def test_a_failed_set_pruning_changes_nothing_in_any_family(family):
    model = classifier(family, "norm")
    for bad in (dict(r=999, method="tome"), dict(r=R, method="no-such-method"), dict(r=-1)):
        with pytest.raises(ValueError):
            model.set_pruning(**bad)
        assert (model.r, model.method) == (R, "norm"), bad
