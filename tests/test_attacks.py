import pytest
import torch

from bench.core.attack import ATTACKS, project
from bench.zoo.classifiers import load_classifier
from bench.core.config import build_config
from bench.zoo.datasets import load_test_split
from bench.core.defense import DEFENSES, DefendedClassifier
from bench.core.errors import ConfigError
from bench.harness.runner import THREAT_DEFAULTS
from tests.conftest import make_target, tiny_model

PGD = ATTACKS.get("pgd_eot")


def test_dw_both_attack_forward_reproduces_the_evaluation(images: torch.Tensor) -> None:
    model = tiny_model("dp_ddpm")
    y = torch.tensor([0, 1, 2, 3])
    target = make_target(model, "dw_both", [4, 5, 6, 7], seed=3)
    x_adv = PGD(build_config(PGD.config_cls, {"eps": 0.1, "step_size": 0.05, "steps": 3, "eot": 5})).perturb(target, images, y).x_adv
    attack_logits = target.attack_logits(x_adv, step=99)
    eval_preds = target.eval_predictions(x_adv, draws=4)
    assert (eval_preds == eval_preds[:, :1]).all(), "dw_both evaluation draws must be identical"
    assert torch.equal(attack_logits.argmax(1), eval_preds[:, 0])


def test_white_evaluation_uses_noise_the_attacker_never_saw(images: torch.Tensor) -> None:
    model = tiny_model("dp_ddpm")
    target = make_target(model, "white", [0, 1, 2, 3])
    with torch.no_grad():
        attack = torch.stack([target.attack_logits(images, step=0, draw=d) for d in range(3)])
    evals = target.eval_predictions(images, draws=3)
    assert evals.shape == (4, 3)
    assert not torch.allclose(attack[0], attack[1])


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.3)])
def test_pgd_stays_in_the_ball_and_box(norm: str, eps: float, images: torch.Tensor) -> None:
    model = tiny_model("dp_ddim")
    target = make_target(model, "white", [0, 1, 2, 3])
    config = build_config(PGD.config_cls, {"norm": norm, "eps": eps, "step_size": eps / 2, "steps": 3, "eot": 2, "random_start": True})
    x_adv = PGD(config).perturb(target, images, torch.tensor([0, 1, 2, 3])).x_adv
    delta = (x_adv - images).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (size > 0).all()


def test_projection_l2_scales_onto_the_sphere() -> None:
    x = torch.full((1, 1, 2, 2), 0.5)
    out = project(x, x + torch.tensor([0.3, 0.4, 0.0, 0.0]).view(1, 1, 2, 2), "l2", 0.25)
    assert (out - x).flatten().norm() == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"eps": 0.0}, "eps=0.0 must be a positive"),
    ({"eps": 2.0}, "valid: 0 < eps <= 1"),
    ({"eps": -1.0, "norm": "l2"}, "must be a positive"),
    ({"norm": "l1"}, "is not one of 'linf', 'l2'"),
    ({"steps": 0}, "steps=0 must be at least 1"),
    ({"eot": 0}, "eot=0"),
    ({"eps": "abc"}, "'abc' is not a valid float"),
    ({"foo": 1}, "no option\\(s\\) foo; valid options: eot, eps, gradient, loss, norm"),
])
def test_bad_attack_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(PGD.config_cls, options)


def test_pgd_breaks_the_undefended_toy_classifier() -> None:
    """PGD-20 ℓ∞ at the toy ε drives the classifier alone to ≤ 2% robust accuracy."""
    split = load_test_split("toy")
    x, y = split.images[:200], split.labels[:200]
    model = DefendedClassifier(DEFENSES.get("none").pretrained("toy", DEFENSES.get("none").config_cls()), load_classifier("toy"))
    eps, step = THREAT_DEFAULTS["toy"]["linf"]
    target = make_target(model, "white", list(range(200)))
    x_adv = PGD(build_config(PGD.config_cls, {"eps": eps, "step_size": step})).perturb(target, x, y).x_adv
    clean = (target.eval_predictions(x, 1)[:, 0] == y).float().mean()
    robust = (target.eval_predictions(x_adv, 1)[:, 0] == y).float().mean()
    assert clean > 0.9
    assert robust <= 0.02, f"robust accuracy {robust:.3f} at eps={eps}"


def test_pgd_eot_restarts_only_weak_samples_and_keep_the_attacker_side_best(images) -> None:
    from attacks.pgd_eot import PGDEoT, PGDEoTConfig
    from tests.conftest import make_target, tiny_model

    model = tiny_model("dp_ddpm")
    y = torch.tensor([0, 1, 2, 3])
    base = PGDEoTConfig(eps=0.1, step_size=0.025, steps=2, eot=2, loss="dlr")
    one = PGDEoT(base).perturb(make_target(model, "white", [0, 1, 2, 3]), images, y)
    assert one.info is None  # one run: the last iterate, as in the paper
    cfg = PGDEoTConfig(eps=0.1, step_size=0.025, steps=2, eot=2, loss="dlr", restarts=3, select_draws=4)
    target = make_target(model, "white", [0, 1, 2, 3])
    result = PGDEoT(cfg).perturb(target, images, y)
    torch.testing.assert_close(result.x_adv[[i for i, r in enumerate(result.info) if r["chosen_by"] == "restart 0"]],
                               one.x_adv[[i for i, r in enumerate(result.info) if r["chosen_by"] == "restart 0"]])
    for row in result.info:
        assert 0 <= row["reported_correct"] <= 1
    # restart 0 for all 4 samples (2 steps x 2 draws), later restarts only for some
    assert all(target.cost(s)["gradient_draws"] >= 4 for s in range(4))
    assert (result.x_adv - images).abs().max() <= 0.1 + 1e-6


def test_pgd_eot_rejects_an_unknown_loss() -> None:
    import pytest

    from attacks.pgd_eot import PGDEoTConfig
    from bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="loss='hinge'"):
        PGDEoTConfig(loss="hinge")


def test_pgd_eot_select_best_returns_the_best_iterate_under_a_deterministic_target(images) -> None:
    from attacks.pgd_eot import PGDEoT, PGDEoTConfig
    from tests.conftest import make_target, tiny_model

    model = tiny_model("dp_ddpm")
    y = torch.tensor([0, 1, 2, 3])
    common = dict(eps=0.3, step_size=0.1, steps=4, eot=1)
    last = PGDEoT(PGDEoTConfig(**common)).perturb(make_target(model, "dw_both", [0, 1, 2, 3]), images, y)
    target = make_target(model, "dw_both", [0, 1, 2, 3])
    best = PGDEoT(PGDEoTConfig(**common, select="best")).perturb(target, images, y)
    correct = lambda x: (target.eval_predictions(x, 1)[:, 0] == y).float()  # noqa: E731
    assert (correct(best.x_adv) <= correct(last.x_adv)).all()  # dw_both: the attacker's check is the evaluation
    assert [row["reported_correct"] for row in best.info] == correct(best.x_adv).tolist()
