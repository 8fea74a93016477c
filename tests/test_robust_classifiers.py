"""The two robust toy classifiers of issue-era papers: the time-dependent robust classifier that
guides rcg_purify (Kawar et al. Eq. 5) and the diffusion-representation AT classifier."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.training.toy_robust import (
    DiffRepConfig,
    TimeRobustConfig,
    attack_noisy,
    train_diffrep_at_classifier,
    train_time_robust_classifier,
)
from bench.zoo.toy import ToyTimeClassifier, load_toy_classifier, load_toy_time_classifier


def test_committed_robust_classifiers_load_verified_and_are_deterministic() -> None:
    x = torch.rand(4, 1, 8, 8)
    diffrep = load_toy_classifier(spec="toy-diffrep-at")
    assert torch.equal(diffrep(x), diffrep(x)) and diffrep(x).shape == (4, 10)
    guide = load_toy_time_classifier()
    t = torch.tensor([0, 10, 100, 999])
    assert torch.equal(guide(2 * x - 1, t), guide(2 * x - 1, t)) and guide(x, t).shape == (4, 10)


def test_noisy_input_attack_stays_in_the_l2_ball_and_stops_once_fooled() -> None:
    torch.manual_seed(0)
    model = ToyTimeClassifier().eval()
    x_t, t = torch.randn(16, 1, 8, 8), torch.randint(0, 1000, (16,))
    labels = model(x_t, t).argmax(1)
    labels[:4] = (labels[:4] + 1) % 10  # already misclassified: never moved
    adv = attack_noisy(model, x_t, t, labels, eps=0.5, steps=7, step_size=2.5 * 0.5 / 7)
    assert torch.equal(adv[:4], x_t[:4])
    assert float((adv - x_t).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5


def test_training_is_reproducible_from_its_seed() -> None:
    cfg = replace(TimeRobustConfig(), iterations=3, batch=8)
    a, _ = train_time_robust_classifier(cfg, progress=lambda _m: None)
    b, _ = train_time_robust_classifier(cfg, progress=lambda _m: None)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c, accuracy = train_diffrep_at_classifier(replace(DiffRepConfig(), epochs=1), progress=lambda _m: None)
    assert 0.0 <= accuracy <= 1.0 and c(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("classifier", ["toy-at", "toy-diffrep-at"])
def test_at_classifiers_pass_autoattack_standard(classifier, tmp_path) -> None:
    """Deterministic, so aa_standard runs (pyautoattack's randomness check included) and the record
    re-runs sample by sample."""
    import bench

    result = bench.evaluate("none", "aa_standard", n_samples=2, classifier=classifier,
                            attack_options={"attacks": "apgd-ce"}, db=f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert result.n == 2 and result.clean_acc.acc == 1.0
    assert result.verify(samples=2) == []
