"""The binarization test (bench/harness/binarization.py): the construction has an adversarial
example inside the ball, an exact attack finds it, and BPDA fails it on a purifier that BPDA
misreads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks.pgd_eot import PGDEoT, PGDEoTConfig
from bench.core.defense import DefendedClassifier, Defense, DefenseConfig
from bench.core.noise import NoiseBatch, StreamSpec
from bench.harness.binarization import run_binarization
from tests.conftest import TinyClassifier, tiny_model

EPS = 0.25


@dataclass(frozen=True)
class _InvertConfig(DefenseConfig):
    pass


class _Invert(Defense):
    """A deterministic "purifier" that inverts the image: the identity (BPDA) points the wrong way."""

    name = "invert"
    config_cls = _InvertConfig

    def noise_spec(self, sample_shape):
        return {}

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: bool = False) -> torch.Tensor:
        return 1 - x

    @classmethod
    def pretrained(cls, dataset, config):  # pragma: no cover
        return cls(config)

    @classmethod
    def for_testing(cls, config=None, channels=1, size=8):
        return cls(config or _InvertConfig())


def _images(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=generator), torch.zeros(n, dtype=torch.long)


def _attack(gradient: str = "exact") -> PGDEoT:
    return PGDEoT(PGDEoTConfig(eps=EPS, step_size=EPS / 4, steps=20, eot=1, gradient=gradient))


def test_the_construction_has_an_adversarial_example_that_an_exact_attack_finds() -> None:
    model = tiny_model("none")
    x, y = _images()
    report = run_binarization(model, _attack(), x, y, [0, 1, 2, 3], EPS, "white", 4, 0, "none", "pgd_eot")
    assert report.usable, "x_b must be class 1 and the image class 0 after the head is fitted"
    assert all(o.boundary_rate > 0.5 for o in report.usable)
    rate, low, high = report.pass_rate
    assert rate == 1.0 and low > 0 and high == 1.0


def test_bpda_fails_the_test_on_a_purifier_it_misreads() -> None:
    model = DefendedClassifier(_Invert.for_testing(), TinyClassifier()).eval()
    x, y = _images()
    exact = run_binarization(model, _attack(), x, y, [0, 1, 2, 3], EPS, "white", 4, 0, "invert", "pgd_eot")
    bpda = run_binarization(model, _attack("bpda"), x, y, [0, 1, 2, 3], EPS, "white", 4, 0, "invert",
                            "pgd_eot[gradient=bpda]")
    assert exact.usable and exact.pass_rate[0] == 1.0
    assert bpda.usable and bpda.pass_rate[0] == 0.0


def test_the_binary_head_supports_autoattacks_dlr_loss() -> None:
    """APGD-DLR (AutoAttack-Rand, DiffHammer's DLR restart) needs three logits: the head's third is
    never the argmax, the loss is finite, and AutoAttack-Rand (fixed) passes the test."""
    from pyautoattack.autopgd_base import APGDAttack

    from attacks.aa_rand_fixed import AARandFixed
    from bench.harness.binarization import BinaryHead

    torch.manual_seed(0)
    head = BinaryHead(TinyClassifier(), torch.randn(8 * 64), torch.tensor(0.1))
    logits = head(torch.rand(16, 1, 8, 8))
    assert logits.shape == (16, 3) and bool((logits.argmax(1) < 2).all())
    assert torch.isfinite(APGDAttack.dlr_loss(None, logits, torch.zeros(16, dtype=torch.long))).all()
    model = tiny_model("none")
    x, y = _images(2)
    attack = AARandFixed(AARandFixed.config_cls(eps=EPS, n_iter=10, eot=1, eval_draws=2))
    report = run_binarization(model, attack, x, y, [0, 1], EPS, "white", 4, 0, "none", "aa_rand_fixed")
    assert report.usable and report.pass_rate[0] == 1.0


def test_a_multi_path_defense_is_binarized_on_its_combined_score() -> None:
    """GDMP purifies several paths and combines their logits: the head is fitted on the paths' mean
    features and the exact attack finds the constructed example."""
    model = tiny_model("gdmp")
    x, y = _images(2)
    report = run_binarization(model, _attack(), x, y, [0, 1], EPS, "white", 2, 0, "gdmp", "pgd_eot")
    assert len(report.outcomes) == 2 and all(0.0 <= o.boundary_rate <= 1.0 for o in report.outcomes)


def test_a_too_weak_attack_is_flagged_on_the_site(tmp_path) -> None:
    """A sanity report whose attack failed the test puts a flag beside that attack's number."""
    import csv  # noqa: F401

    from bench.harness.perf import write_synthetic_records
    from bench.publish.leaderboard import build_site, load_tracks, slugify
    from bench.publish.sanity import ImageResult, SanityReport, write_report

    results = tmp_path / "results"
    write_synthetic_records(results, 72)
    track = next(t for t in load_tracks(results) if t.ranked)
    entry = track.ranked[0].entry
    write_report(SanityReport(test="binarization", defense=entry, defense_config={}, attack="pgd_eot[gradient=bpda]",
                              attack_config={"gradient": "bpda"}, dataset=track.dataset, threat=track.threat,
                              setting="white", eval_draws=4, seed=0, git_commit=None,
                              images=[ImageResult(index=i, constructed=True, passed=i == 0, boundary_rate=1.0,
                                                  attack_rate=1.0 if i == 0 else 0.0) for i in range(4)]), results)
    build_site(results, tmp_path / "site")
    assert "too weak for this defense" in (tmp_path / "site" / "index.html").read_text()
    page = (tmp_path / "site" / "entries" / f"{slugify(entry)}.html").read_text()
    assert "binarization test" in page and "passed 25%" in page


def test_a_report_without_a_constructed_example_is_inconclusive_not_too_weak() -> None:
    """When the head cannot be fitted on any image (a purifier so noisy that the ball's points are
    not separable), the test says nothing about the attack: no flag, and the report says so."""
    from bench.publish.sanity import ImageResult, SanityReport

    common = dict(test="binarization", defense="none", defense_config={}, attack="pgd_eot", attack_config={},
                  dataset="toy", threat="linf-0.25", setting="white", eval_draws=4, seed=0, git_commit=None)
    failed = [ImageResult(index=i, constructed=False, passed=False, boundary_rate=0.2, attack_rate=0.0) for i in range(3)]
    empty = SanityReport(**common, images=failed)
    assert empty.inconclusive and not empty.too_weak
    weak = SanityReport(**common, images=failed + [ImageResult(index=9, constructed=True, passed=False,
                                                               boundary_rate=1.0, attack_rate=0.0)])
    assert weak.too_weak and not weak.inconclusive


def test_the_published_construction_narrows_the_region_and_still_has_an_example(tmp_path) -> None:
    """Zimmermann et al.'s own construction (999 inner points within 0.95 ε) still puts x_b in class 1
    and is found by an exact attack; its report is stored beside, not over, the default one."""
    import pytest

    from bench.harness.binarization import Construction
    from bench.publish.sanity import SanityReport, write_report

    model = tiny_model("none")
    x, y = _images(2)
    published = Construction(inner_points=999, inner_radius=0.95)
    report = run_binarization(model, _attack(), x, y, [0, 1], EPS, "white", 4, 0, "none", "pgd_eot", published)
    assert report.usable and report.pass_rate[0] == 1.0
    for bad in ({"inner_points": 0}, {"inner_radius": 0.0}, {"inner_radius": 1.5}):
        with pytest.raises(ValueError, match="inner_"):
            Construction(**bad)
    common = dict(test="binarization", defense="none", defense_config={}, attack="pgd_eot", attack_config={},
                  dataset="toy", threat="linf-0.25", setting="white", eval_draws=4, seed=0, git_commit=None, images=[])
    default_path = write_report(SanityReport(**common), tmp_path)
    published_path = write_report(SanityReport(**common, inner_points=999, inner_radius=0.95), tmp_path)
    assert default_path != published_path and default_path.exists() and published_path.exists()
    assert "999 inner points within 0.95 ε" == SanityReport(**common, inner_points=999, inner_radius=0.95).construction


def test_the_head_is_rescaled_so_a_cross_entropy_attack_has_a_gradient() -> None:
    """Separable points drive logistic regression's weights up until the image's score underflows a
    float32 cross-entropy gradient (the toy gdmp: score -119, gradient exactly 0). The fitted head is
    rescaled so that x_b scores +1 on the fit draws: here, a deterministic defense, exactly 1."""
    from bench.harness.binarization import binarize

    model = tiny_model("none")
    x, _ = _images(1)
    binary, x_b = binarize(model, DefendedClassifier, x, 0, EPS, 0)
    head = binary.classifier
    with torch.no_grad():
        score_b = head(x_b)[0, 1]
        score_x = head(x)[0, 1]
    assert torch.isclose(score_b, torch.tensor(1.0), atol=1e-4) and score_x < 0
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(head(xr), torch.zeros(1, dtype=torch.long)), xr)
    assert grad.abs().max() > 0
