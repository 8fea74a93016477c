"""AutoAttack for stochastic defenses: the fixed selection, agreement with the official code on a
deterministic model, and fixed <= original on a stochastic toy defense."""

from __future__ import annotations

import pytest
import torch

from attacks import apgd as autoattack
from bench.core.attack import ATTACKS
from attacks.apgd import APGDRunner, select_fixed
from bench.core.config import build_config
from bench.core.errors import ConfigError
from bench.harness.runner import RunRequest, execute_run, start_run
from bench.harness.store import open_store
from tests.conftest import make_target, tiny_model


class FakeRunner:
    """APGD stand-in: candidate pixels encode their own expected accuracy (value = accuracy)."""

    def __init__(self, target, candidate_accuracy: dict[str, list[float]]) -> None:  # noqa: ANN001
        self.target, self.candidate_accuracy, self.calls = target, candidate_accuracy, []

    def run(self, attack, x, y, ids):  # noqa: ANN001, ANN201
        self.calls.append((attack, list(ids)))
        values = torch.tensor([self.candidate_accuracy[attack][i] for i in ids])
        return values.view(-1, 1, 1, 1).expand_as(x).clone(), values == 0

    def gradient_draws(self, ids):  # noqa: ANN001, ANN201
        return [0] * len(ids)


def test_fixed_selection_never_keeps_a_worse_candidate(monkeypatch) -> None:
    monkeypatch.setattr(autoattack, "expected_correct", lambda target, x, y, ids, draws, r: x[:, 0, 0, 0].clone())
    x = torch.tensor([0.9, 0.5, 0.0, 0.7]).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()  # clean accuracies
    y = torch.zeros(4, dtype=torch.long)
    runner = FakeRunner(None, {"apgd-ce": [0.95, 0.2, 0.1, 0.7], "apgd-dlr": [0.3, 0.4, 0.0, 0.0]})
    x_adv, report = select_fixed(runner, ("apgd-ce", "apgd-dlr"), x, y, [0, 1, 2, 3], draws=20)
    # sample 0: ce worse (0.95 > 0.9) -> kept clean; dlr better (0.3). sample 1: ce 0.2, dlr worse 0.4 -> ce.
    # sample 2: already at 0 -> never attacked. sample 3: ce equal (not lower) -> clean; dlr 0.0.
    assert report.reported_correct == pytest.approx([0.3, 0.2, 0.0, 0.0])
    assert report.chosen_by == ["apgd-dlr", "apgd-ce", "clean", "apgd-dlr"]
    assert x_adv[:, 0, 0, 0].tolist() == pytest.approx([0.3, 0.2, 0.0, 0.0])
    assert runner.calls == [("apgd-ce", [0, 1, 3]), ("apgd-dlr", [0, 1, 3])]


def test_fixed_matches_the_official_apgd_ce_on_a_deterministic_model(monkeypatch) -> None:
    """Same start point as pyautoattack's APGD-CE (its seeded global RNG), then per-sample
    identical verdicts from ``aa_rand_fixed`` and ``AutoAttack(version='standard')``'s APGD-CE."""
    from pyautoattack import AutoAttack

    from bench.zoo.classifiers import load_classifier
    from bench.zoo.datasets import load_test_split
    from bench.core.defense import DEFENSES, DefendedClassifier

    split = load_test_split("toy")
    x, y = split.images[:24], split.labels[:24]
    model = DefendedClassifier(DEFENSES.get("none")(DEFENSES.get("none").config_cls()), load_classifier("toy")).eval()
    eps, seed = 0.1, 7

    def official_start(self, x_sub, ids, attack):  # noqa: ANN001, ANN202
        torch.random.manual_seed(seed)
        return (x_sub + eps * self.apgd.normalize(2 * torch.rand(x_sub.shape) - 1)).clamp(0, 1)

    monkeypatch.setattr(APGDRunner, "random_start", official_start)
    fixed = ATTACKS.get("aa_rand_fixed")(build_config(ATTACKS.get("aa_rand_fixed").config_cls,
                                                      {"eps": eps, "attacks": "apgd-ce"}))
    target = make_target(model, "white", list(range(24)))
    ours = torch.tensor([row["reported_correct"] for row in fixed.perturb(target, x, y).info]) > 0

    adversary = AutoAttack(lambda inp: model.classifier(inp), norm="Linf", eps=eps, version="standard", seed=seed)
    adversary.attacks_to_run = ["apgd-ce"]  # the APGD-CE stage of the standard version
    adversary.verbose = False
    with torch.enable_grad():
        _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=24)
    official = y_adv == y
    assert 0 < int(official.sum()) < 24  # a budget where the verdicts are informative
    assert torch.equal(ours, official)


def _run(engine, attack: str, **attack_options: object) -> dict:  # noqa: ANN001
    request = RunRequest(defense="dp_ddpm", attack=attack, n_samples=16, batch_size=16, eval_draws=10, seed=0,
                         defense_options={"nfe": 10}, attack_options=attack_options)
    run_id, parts = start_run(engine, request)
    return execute_run(engine, run_id, parts=parts)


def test_fixed_is_at_most_the_original_on_a_stochastic_toy_defense(tmp_path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'aa.db'}")
    original = _run(engine, "aa_rand", n_iter=10, eot=4)
    fixed = _run(engine, "aa_rand_fixed", n_iter=10, eot=4)
    assert fixed["robust"]["expected"]["acc"] <= original["robust"]["expected"]["acc"]
    assert original["attack_reported"]["n"] == 16 and "attack_reported" in fixed


def test_aa_standard_refuses_a_stochastic_target(images) -> None:
    cls = ATTACKS.get("aa_standard")
    target = make_target(tiny_model("dp_ddpm"), "white", [0, 1, 2, 3])
    with pytest.raises(ConfigError, match="needs a deterministic target"):
        cls(build_config(cls.config_cls, {"eps": 0.1})).perturb(target, images, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("setting", ["white", "dw_fwd", "dw_both", "dw_semi:3"])
@pytest.mark.parametrize("attack", ["aa_rand", "aa_rand_fixed"])
def test_aa_attacks_honour_every_setting_and_stay_in_the_ball(attack, setting, images) -> None:
    cls = ATTACKS.get(attack)
    model = tiny_model("dp_ddpm")
    target = make_target(model, setting, [0, 1, 2, 3])
    y = torch.tensor([0, 1, 2, 3])
    adv = cls(build_config(cls.config_cls, {"eps": 0.1, "n_iter": 3, "eot": 2})).perturb(target, images, y).x_adv
    assert (adv - images).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    again = cls(build_config(cls.config_cls, {"eps": 0.1, "n_iter": 3, "eot": 2})).perturb(
        make_target(model, setting, [0, 1, 2, 3]), images, y).x_adv
    assert torch.equal(adv, again)  # reproducible from the run seed


def test_bad_aa_options() -> None:
    cls = ATTACKS.get("aa_rand_fixed")
    with pytest.raises(ConfigError, match="apgd-fab"):
        build_config(cls.config_cls, {"attacks": "apgd-ce,apgd-fab"})
    with pytest.raises(ConfigError, match="judge"):
        build_config(cls.config_cls, {"judge": "median"})


@pytest.mark.parametrize("setting", ["white", "dw_semi:3"])
def test_early_stop_retires_only_points_that_fool_every_draw(setting) -> None:
    """Inside APGD a point stops at the first iterate fooling all its EoT draws; it then costs
    nothing more. Without early stop every attacked point costs the full (n_iter+1) x EoT."""
    generator = torch.Generator().manual_seed(3)
    x = 0.2 + 0.6 * torch.rand(8, 1, 8, 8, generator=generator)
    model = tiny_model("dp_ddpm")
    y = model.classifier(x).argmax(-1)  # labels the random classifier mostly gets right, so points get attacked
    cls = ATTACKS.get("aa_rand_fixed")
    n_iter, eot = 6, 3
    spent, reports = {}, {}
    for early in (True, False):
        attack = cls(build_config(cls.config_cls, {"eps": 0.3, "n_iter": n_iter, "eot": eot,
                                                   "early_stop": str(early).lower()}))
        target = make_target(model, setting, list(range(8)))
        result = attack.perturb(target, x, y)
        assert (result.x_adv - x).abs().max() <= 0.3 + 1e-6
        reports[early] = result.info
        spent[early] = [row["gradient_draws"] for row in result.info]
    draws = 3 if setting == "dw_semi:3" else eot
    full = (n_iter + 1) * draws
    # without early stop: each attacked point pays the full budget per attack it went through
    assert all(d % full == 0 for d in spent[False])
    assert any(d > 0 for d in spent[False])
    assert all(d % draws == 0 for d in spent[True])  # whole blocks only
    assert sum(spent[True]) < sum(spent[False])
    retired_early = [d for d in spent[True] if d % full != 0]
    assert retired_early, "no point retired inside APGD at eps 0.3: the test lost its power"


def test_early_stop_needs_the_confirmation_draws(monkeypatch) -> None:
    """A point whose EoT block is all fooled but whose confirmation draws are not at zero keeps
    being attacked (here the confirmation is forced to say 'correct': nothing may retire)."""
    original = autoattack.expected_correct

    def stubborn_confirmation(target, x, y, ids, draws, round_index):  # noqa: ANN001, ANN202
        if round_index >= autoattack.CONFIRM_ROUND_BASE:
            return torch.ones(x.shape[0])
        return original(target, x, y, ids, draws, round_index)

    monkeypatch.setattr(autoattack, "expected_correct", stubborn_confirmation)
    generator = torch.Generator().manual_seed(3)
    x = 0.2 + 0.6 * torch.rand(8, 1, 8, 8, generator=generator)
    model = tiny_model("dp_ddpm")
    y = model.classifier(x).argmax(-1)
    cls = ATTACKS.get("aa_rand_fixed")
    attack = cls(build_config(cls.config_cls, {"eps": 0.3, "n_iter": 6, "eot": 3}))
    spent = [row["gradient_draws"] for row in attack.perturb(make_target(model, "white", list(range(8))), x, y).info]
    full = 7 * 3
    assert all(d % full == 0 for d in spent)
    assert any(d > 0 for d in spent)
