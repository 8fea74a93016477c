"""The binarization test (Zimmermann et al., NeurIPS 2022, "Increasing Confidence in Adversarial
Robustness Evaluations"): is an attack strong enough *for this defense*?

For each image, the classifier's head is replaced by a binary linear head on its penultimate
features **of the purified input**, fitted so that the image and random points of its ε-ball are
class 0 and one point of the ball, x_b, is class 1. An adversarial example then exists inside the
ball by construction (x_b itself), and the attack, run against the binarized defense, passes the
test if it finds one. Adapted to a stochastic purifier under the noise contract: the head is fitted
on features of several purification draws of each point (keys of its own), and x_b must be class 1
on more than half of fresh draws (checked; images where the construction fails are reported, not
counted). An attack passes on an image when its final point is class 1 on more than half of the
harness's K fresh evaluation draws, as x_b is. The pass rate over images, with its Wilson interval,
says whether the attack is strong enough. A failed test is evidence of a too-weak attack; a passed
one is weaker evidence of strength: BPDA fails it on a purifier whose Jacobian is far from the
identity (tests/test_binarization.py), but passes it on the toy dp_ddpm (41 of 41 images with a
constructed example, 64 tried; and 5 of 5 under Zimmermann et al.'s published construction of 999
inner points within 0.95 ε, ``--inner-points 999 --inner-radius 0.95``), where it still leaves 10
points of robust accuracy that exact gradients remove: one boundary point in a linear head's
half-space is easier to reach than the ten-class decision. And it passed exact PGD on rcg_purify
(38 of 38) although PGD with detached guidance takes 31 more points of ten-class robust accuracy:
a pass is weak evidence. Nor does more noise make BPDA fail: dp_ddpm at t* = 200 passes it with
BPDA and with exact gradients (19 of 19 constructed images, 45 of 64 not constructed); at t* = 400
no image can be constructed and the report is inconclusive. The fitted head is rescaled (below): unscaled, the toy gdmp's head scored
the image at about −119, PGD's cross-entropy gradient underflowed to zero in float32, and PGD
"failed" on 19 of 64 images whatever its gradient — a property of the construction, not the attack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.memory import MemoryPlan
from bench.core.metrics import wilson_interval
from bench.core.noise import NoiseSource
from bench.core.settings import parse_setting
from bench.core.target import StochasticTarget

log = logging.getLogger(__name__)


class BinaryHead(nn.Module):
    """The classifier's penultimate features (its ``penultimate(z)`` method) -> logits (0, s, min(0, s) − 1)
    with s = w·φ + b. The third logit is never the largest, so the head still decides between classes
    0 and 1; it is there because AutoAttack's DLR loss (APGD-DLR, DiffHammer's DLR restart) divides by
    the gap between the largest and the third-largest logit, which two classes do not have."""

    def __init__(self, classifier: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        if not hasattr(classifier, "penultimate"):
            raise ValueError(f"{type(classifier).__name__} has no penultimate(z) method; the binarization test "
                             "reads the classifier's penultimate features")
        self.classifier = classifier
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        score = self.classifier.penultimate(z) @ self.weight + self.bias
        zero = torch.zeros_like(score)
        return torch.stack([zero, score, torch.minimum(zero, score) - 1], dim=1)


@dataclass
class ImageOutcome:
    index: int
    constructed: bool  # x_b is class 1 on > half of fresh draws and the image is class 0
    passed: bool
    boundary_rate: float  # fresh-draw rate at which x_b is class 1
    attack_rate: float  # fresh-draw rate at which the attack's point is class 1


@dataclass
class BinarizationReport:
    defense: str
    attack: str
    outcomes: list[ImageOutcome]

    @property
    def usable(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.constructed]

    @property
    def pass_rate(self) -> tuple[float, float, float]:
        usable = self.usable
        rate = sum(o.passed for o in usable) / len(usable) if usable else 0.0
        return (rate, *wilson_interval(rate, len(usable)))


def _class1_rate(target: StochasticTarget, x: torch.Tensor, draws: int, key: object) -> torch.Tensor:
    noise, n = target.attack_noise(x, key, draws)
    return (target.logits_with_noise(x, noise, n).argmax(-1) == 1).float().mean(0)


@dataclass(frozen=True)
class Construction:
    """How the binary head is fitted (Zimmermann et al., 2022, Sec. 4 and their
    ``decision_boundary_binarization._create_raw_data``): ``inner_points`` random points of the ℓ∞
    ball of radius ``inner_radius`` × ε around the image are class 0 (with the image itself), one
    corner x_b of the ε-ball is class 1. Their published runs use 999 inner points at radius 0.95 ε:
    the more inner points, the smaller the region of class 1 around x_b, and the harder the test."""

    inner_points: int = 24
    inner_radius: float = 1.0

    def __post_init__(self) -> None:
        if self.inner_points < 1:
            raise ValueError(f"inner_points must be >= 1, got {self.inner_points}")
        if not 0.0 < self.inner_radius <= 1.0:
            raise ValueError(f"inner_radius is a fraction of eps in (0, 1], got {self.inner_radius}")


def binarize(model: nn.Module, defended_cls: type, x: torch.Tensor, index: int, eps: float, seed: int,
             construction: Construction = Construction(), draws: int = 4, steps: int = 300,
             ) -> tuple[nn.Module, torch.Tensor]:
    """A binarized copy of the defended ``model`` for one image ``x`` (1, C, H, W): the head fitted on
    purified features (x and ``construction.inner_points`` random points of the ℓ∞ ball of radius
    ``inner_radius``·ε: class 0; the corner x_b: class 1), and x_b. Logistic regression by gradient
    descent (a few hundred steps on the points' features)."""
    noise = NoiseSource(seed)
    generator = noise.generator(index, "binarization-points")
    shape = x.shape[1:]
    inner, radius = construction.inner_points, construction.inner_radius * eps
    x_b = (x + eps * (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(x)).clamp(0, 1)
    others = (x + radius * (torch.rand((inner, *shape), generator=generator) * 2 - 1).to(x)).clamp(0, 1)
    points = torch.cat([x, others, x_b])
    labels = torch.cat([torch.zeros(inner + 1), torch.ones(1)]).to(x)
    plan = MemoryPlan(False, 4096, 1)
    ids = [index] * points.shape[0]
    target = StochasticTarget(model, parse_setting("white"), noise, ids, plan, plan)
    key_noise, n = target.attack_noise(points, ("binarization-fit",), draws)
    with torch.no_grad():
        purified = target.purify_with_noise(points, key_noise, n).flatten(0, 1)  # (draws·P, [paths,] C, H, W)
        if purified.dim() == 5:
            # a multi-path defense (GDMP) classifies every path and combines them: with mean logits the
            # head's score is the mean of the paths' scores, so it is fitted on the paths' mean features
            phi = model.classifier.penultimate(purified.flatten(0, 1)).unflatten(0, purified.shape[:2]).mean(1)
        else:
            phi = model.classifier.penultimate(purified)
    y = labels.repeat(n)
    weights = torch.where(y > 0, float(inner + 1), 1.0)  # balance the one positive point against the rest
    w = torch.zeros(phi.shape[1], dtype=phi.dtype, requires_grad=True)
    b = torch.zeros((), dtype=phi.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        loss = (F.binary_cross_entropy_with_logits(phi @ w + b, y, reduction="none") * weights).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    w, b = w.detach(), b.detach()
    # Logit rescaling (Zimmermann et al. rescale the readout too): logistic regression on separable
    # points drives |w| up until the image's score is around -100, where a float32 cross-entropy
    # gradient underflows to exactly zero and a CE attack cannot move at all (measured on the toy
    # gdmp). A positive scale changes no decision, only the loss landscape: x_b's mean score on the
    # fit draws becomes +1.
    positive = phi.unflatten(0, (n, -1))[:, -1] @ w + b  # (draws,) scores of x_b
    if float(positive.mean()) > 0:
        w, b = w / positive.mean(), b / positive.mean()
    head = BinaryHead(model.classifier, w, b)
    return defended_cls(model.defense, head).eval(), x_b


def run_binarization(model: nn.Module, attack: object, x: torch.Tensor, y: torch.Tensor, ids: list[int], eps: float,
                     setting: str, eval_draws: int, seed: int, defense: str, attack_name: str,
                     construction: Construction = Construction()) -> BinarizationReport:
    """Binarize the defense for each image, run ``attack`` (an :class:`bench.core.attack.Attack`)
    against it from the image, and report per image whether it found class 1."""
    from bench.core.defense import DefendedClassifier

    outcomes = []
    plan = MemoryPlan(False, 4096, 1)
    for j, index in enumerate(ids):
        xi = x[j : j + 1]
        binary, x_b = binarize(model, DefendedClassifier, xi, index, eps, seed, construction)
        target = StochasticTarget(binary, parse_setting(setting), NoiseSource(seed), [index], plan, plan)
        boundary = float(_class1_rate(target, x_b, eval_draws, ("binarization-check",))[0])
        clean = float(_class1_rate(target, xi, eval_draws, ("binarization-check",))[0])
        constructed = boundary > 0.5 and clean < 0.5
        passed, rate = False, 0.0
        if constructed:
            from bench.core.gradient_modes import parse_gradient_mode

            target.gradient_mode = parse_gradient_mode(getattr(attack.config, "gradient", "exact"))
            x_adv = attack.perturb(target, xi, torch.zeros(1, dtype=torch.long, device=xi.device)).x_adv
            rate = float((target.eval_predictions(x_adv, eval_draws) == 1).float().mean())
            passed = rate > 0.5
        outcomes.append(ImageOutcome(index, constructed, passed, boundary, rate))
        log.info("binarization image %d: constructed %s, passed %s (x_b %.2f, attack %.2f)", index, constructed,
                 passed, boundary, rate)
    return BinarizationReport(defense, attack_name, outcomes)
