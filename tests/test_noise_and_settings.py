import pytest
import torch

from bench.core.errors import ConfigError, UnknownNameError
from bench.core.noise import NoiseSource, StreamSpec, derive_seed
from bench.core.settings import KNOWN, parse_setting

SPEC = {"forward": StreamSpec(1, (1, 2, 2)), "reverse": StreamSpec(3, (1, 2, 2))}


def test_derive_seed_is_stable_and_distinguishes_types() -> None:
    assert derive_seed(0, 1, "forward", "eval", 0) == derive_seed(0, 1, "forward", "eval", 0)
    assert derive_seed(0, 1) != derive_seed(0, "1")
    assert 0 <= derive_seed("x") < 2**63


def test_noise_of_a_sample_does_not_depend_on_its_batch() -> None:
    source = NoiseSource(7)
    key = {"forward": ("eval", 0), "reverse": ("eval", 0)}
    alone = source.batch(SPEC, [5], [key])
    in_batch = source.batch(SPEC, [3, 9, 5], [key] * 3)
    for name in SPEC:
        assert alone[name].shape == (SPEC[name].steps, 1, 1, 2, 2)
        assert torch.equal(alone[name][:, 0], in_batch[name][:, 2])
    assert not torch.equal(in_batch["reverse"][:, 0], in_batch["reverse"][:, 2])


def test_different_keys_or_seeds_give_different_noise() -> None:
    a = NoiseSource(0).batch(SPEC, [1], [{"forward": ("eval", 0), "reverse": ("eval", 0)}])
    b = NoiseSource(0).batch(SPEC, [1], [{"forward": ("eval", 1), "reverse": ("eval", 0)}])
    c = NoiseSource(1).batch(SPEC, [1], [{"forward": ("eval", 0), "reverse": ("eval", 0)}])
    assert not torch.equal(a["forward"], b["forward"]) and torch.equal(a["reverse"], b["reverse"])
    assert not torch.equal(a["forward"], c["forward"])


STREAMS = ["forward", "reverse"]


def test_white_resamples_everything() -> None:
    s = parse_setting("white")
    keys = [s.attack_keys(STREAMS, step, d) for step in range(2) for d in range(3)]
    assert len({tuple(k.values()) for k in keys}) == 6
    evals = [s.eval_keys(STREAMS, 0, 1, j) for j in range(3)]
    assert not {v for k in evals for v in k.values()} & {v for k in keys for v in k.values()}
    assert s.attack_draws(10) == 10


def test_dw_fwd_knows_forward_only() -> None:
    s = parse_setting("dw_fwd")
    attack = s.attack_keys(STREAMS, 0, 0)
    evals = [s.eval_keys(STREAMS, 0, 1, j) for j in range(3)]
    assert attack["forward"] == KNOWN and all(e["forward"] == KNOWN for e in evals)
    assert attack["reverse"] not in {e["reverse"] for e in evals}
    assert len({e["reverse"] for e in evals}) == 3


def test_dw_both_is_deterministic() -> None:
    s = parse_setting("dw_both")
    assert s.attack_draws(10) == 1
    assert s.attack_keys(STREAMS, 4, 0) == s.eval_keys(STREAMS, 0, 1, 7) == {"forward": KNOWN, "reverse": KNOWN}


def test_dw_semi_evaluation_uses_one_of_the_known_sets() -> None:
    s = parse_setting("dw_semi:4")
    assert s.name == "dw_semi:4" and s.attack_draws(10) == 4
    known = {tuple(s.attack_keys(STREAMS, 0, d).values()) for d in range(4)}
    chosen = [tuple(s.eval_keys(STREAMS, 0, sid, j).values()) for sid in range(20) for j in range(5)]
    assert set(chosen) <= known and len(set(chosen)) == 4


@pytest.mark.parametrize("bad", ["dw_semi", "dw_semi:0", "dw_semi:x", "dw_semi:\u00b2", "dw_semi:\u0663"])
def test_bad_semi_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="positive number"):
        parse_setting(bad)


def test_unknown_setting_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'dw_both'.*Valid settings: white, dw_fwd, dw_both, dw_semi:K"):
        parse_setting("dw_bth")


@pytest.mark.parametrize("name", ["white", "dw_fwd", "dw_both", "dw_semi:4"])
def test_selection_draws_are_independent_of_evaluation_draws(name: str) -> None:
    """The attacker's selection draws (which choose each image's strongest attack on the
    leaderboard) never reuse an evaluation draw's fresh keys; known keys stay known."""
    s = parse_setting(name)
    evals = {v for j in range(5) for v in s.eval_keys(STREAMS, 0, 1, j).values()}
    selects = {v for j in range(5) for v in s.selection_keys(STREAMS, 0, 1, j).values()}
    if name == "white":
        assert not evals & selects and len(selects) == 5
    elif name == "dw_fwd":
        assert evals & selects == {KNOWN}
    elif name == "dw_both":
        assert evals == selects == {KNOWN}
    else:  # one of the K known sets, chosen by its own random draw
        assert selects <= {("semi", k) for k in range(4)}
