"""The ADDT paper's analyses of *why* DBP resists attacks, as functions on a built defense.

The paper argues that DBP's robustness comes from stochasticity: the attacker's gradient, averaged
over fresh noise, points away from the direction that would work against the noise actually used
(the "effective attack direction"), unlike adversarial training. These functions measure that:

- :func:`gradient_similarity` (Fig. 7): cosine between the White-box EoT-k gradient and the
  DW-box gradient (the evaluation's known noise), per image, k = 1, 2, 4, ...;
- :func:`fgsm_efficacy` (Fig. 8): the loss increase (expected over fresh evaluation draws) of one
  FGSM step of one pixel level crafted with the DW-box gradient, with DW_semi-K gradients, and with
  random signs;
- :func:`pgd_iterates` (Fig. 1): the iterates of PGD under White-box EoT-1, EoT-10 and DW-box,
  for :func:`tsne_trajectories` (t-SNE from scikit-learn) and the loss landscape;
- :func:`loss_landscape` (Fig. 3, App. D): the expected loss on the plane spanned by the DW-box
  PGD direction and the orthogonal part of the White-box PGD-EoT direction (Li et al. 2018's
  filter-free 2-D slice), with both trajectories projected onto it.

Everything draws its noise from the run seed's noise source with its own keys (never the
evaluation's), so an analysis is reproducible and independent of batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.core.memory import MemoryPlan
from bench.core.noise import NoiseSource
from bench.core.settings import parse_setting
from bench.core.target import StochasticTarget


@dataclass
class Subject:
    """What an analysis runs on: a defended model, its images and labels, and its noise."""

    model: Any  # DefendedClassifier
    x: torch.Tensor  # (B, C, H, W)
    y: torch.Tensor  # (B,)
    ids: list[int]
    noise: NoiseSource
    chunk: int = 4096

    def target(self, setting: str) -> StochasticTarget:
        plan = MemoryPlan(False, self.chunk, 1)
        return StochasticTarget(self.model, parse_setting(setting), self.noise, self.ids, plan, plan)


def expected_loss(subject: Subject, x: torch.Tensor, draws: int, key: object = "analysis-eval") -> torch.Tensor:
    """(B,) cross-entropy averaged over ``draws`` fresh noise draws (keys of their own)."""
    target = subject.target("white")
    noise, n = target.attack_noise(x, key, draws)
    logits = target.logits_with_noise(x, noise, n)  # (draws, B, classes)
    return F.cross_entropy(logits.flatten(0, 1), subject.y.repeat(n), reduction="none").view(n, -1).mean(0)


def gradient_similarity(subject: Subject, eot_values: list[int]) -> dict[int, np.ndarray]:
    """{k: (B,) cosines} between the White-box EoT-k gradient (sum over k fresh draws) and the
    DW-box gradient at the clean inputs. A deterministic defense gives 1 for every k."""
    reference, _ = subject.target("dw_both").eot_gradient(subject.x, subject.y, 0, 1)
    out = {}
    for k in eot_values:
        grad, _ = subject.target("white").eot_gradient(subject.x, subject.y, ("gradsim", k), k)
        out[k] = F.cosine_similarity(grad.flatten(1), reference.flatten(1), dim=1).detach().cpu().numpy()
    return out


def fgsm_efficacy(subject: Subject, step: float, semi_sets: list[int], draws: int) -> dict[str, np.ndarray]:
    """Per image, the increase of the expected loss (``draws`` fresh draws) from one FGSM step of
    size ``step`` crafted with: the DW-box gradient (``dw_both``), DW_semi-K gradients for each K,
    and a random sign (``random``, seeded per sample). Returns {method: (B,) increases}."""
    base = expected_loss(subject, subject.x, draws)
    directions: dict[str, torch.Tensor] = {}
    grad, _ = subject.target("dw_both").eot_gradient(subject.x, subject.y, 0, 1)
    directions["dw_both"] = grad.sign()
    for k in semi_sets:
        grad, _ = subject.target(f"dw_semi:{k}").eot_gradient(subject.x, subject.y, 0, 1)
        directions[f"dw_semi:{k}"] = grad.sign()
    signs = []
    for sid in subject.ids:
        generator = subject.noise.generator(sid, "efficacy-random-sign")
        signs.append(torch.randint(0, 2, subject.x.shape[1:], generator=generator) * 2 - 1)
    directions["random"] = torch.stack(signs).to(subject.x)
    return {name: (expected_loss(subject, (subject.x + step * d).clamp(0, 1), draws) - base).detach().cpu().numpy()
            for name, d in directions.items()}


def pgd_iterates(subject: Subject, setting: str, eot: int, steps: int, eps: float, step_size: float) -> torch.Tensor:
    """(steps + 1, B, C, H, W): the clean input and every iterate of PGD-EoT (the harness's own
    ``pgd_eot``, ℓ∞, cross-entropy) under ``setting``."""
    from bench.core.attack import ATTACKS
    from bench.core.config import build_config

    pgd = ATTACKS.get("pgd_eot")  # through the registry: core modules never import a plug-in package
    attack = pgd(build_config(pgd.config_cls, {"norm": "linf", "eps": eps, "step_size": step_size, "steps": steps,
                                                 "eot": eot}))
    iterates = [subject.x.clone()]
    attack.on_step = lambda _step, x_adv: iterates.append(x_adv)
    attack.perturb(subject.target(setting), subject.x, subject.y)
    return torch.stack(iterates)


def tsne_trajectories(paths: dict[str, torch.Tensor], seed: int = 0) -> dict[str, np.ndarray]:
    """{name: (steps + 1, B, 2)}: every iterate of every path embedded together by t-SNE
    (scikit-learn), so the paths share one map."""
    from sklearn.manifold import TSNE

    names = list(paths)
    flat = np.concatenate([paths[n].flatten(2).cpu().numpy().reshape(-1, paths[n][0, 0].numel()) for n in names])
    perplexity = float(min(30, max(2, (len(flat) - 1) // 3)))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(flat)
    out, start = {}, 0
    for n in names:
        size = paths[n].shape[0] * paths[n].shape[1]
        out[n] = embedded[start:start + size].reshape(paths[n].shape[0], paths[n].shape[1], 2)
        start += size
    return out


@dataclass
class Landscape:
    """The loss on a plane through the clean input, per image, and the trajectories on it.

    ``d1`` (B, D): unit DW-box PGD direction; ``d2`` (B, D): unit orthogonal part of the White-box
    PGD-EoT direction; ``alphas`` / ``betas`` the grid coordinates; ``loss`` (B, len(betas),
    len(alphas)) the expected loss at x + a·d1 + b·d2; ``paths`` {name: (steps + 1, B, 2)} the
    iterates' coordinates on the plane (intermediate points projected; endpoints on it)."""

    d1: torch.Tensor
    d2: torch.Tensor
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    paths: dict[str, np.ndarray]
    residuals: dict[str, np.ndarray]  # (steps + 1, B): distance of each iterate from the plane


def plane(x: torch.Tensor, dw_end: torch.Tensor, white_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal (d1, d2), each (B, D): d1 along the DW-box endpoint, d2 the part of the White-box
    endpoint orthogonal to it (Gram–Schmidt; a random direction if the two are parallel)."""
    u = (dw_end - x).flatten(1)
    v = (white_end - x).flatten(1)
    d1 = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w = v - (v * d1).sum(1, keepdim=True) * d1
    w = w - (w * d1).sum(1, keepdim=True) * d1  # a second pass against rounding
    degenerate = w.norm(dim=1) < 1e-4 * v.norm(dim=1).clamp_min(1e-12)
    if degenerate.any():
        generator = torch.Generator().manual_seed(0)
        r = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        r = r - (r * d1).sum(1, keepdim=True) * d1
        r = r - (r * d1).sum(1, keepdim=True) * d1
        w = torch.where(degenerate[:, None], r, w)
    d2 = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return d1, d2


def loss_landscape(subject: Subject, paths: dict[str, torch.Tensor], dw_name: str, white_name: str,
                   grid: int, draws: int) -> Landscape:
    """The landscape of :class:`Landscape` from PGD ``paths`` ({name: (steps + 1, B, C, H, W)}): the
    plane of the endpoints of ``dw_name`` and ``white_name``, a ``grid`` × ``grid`` lattice spanning
    every path's coordinates, and the loss averaged over ``draws`` fresh draws at each point."""
    x = subject.x
    d1, d2 = plane(x, paths[dw_name][-1], paths[white_name][-1])
    coords, residuals = {}, {}
    for name, iterates in paths.items():
        rel = (iterates - x.unsqueeze(0)).flatten(2)  # (T, B, D)
        a, b = (rel * d1).sum(-1), (rel * d2).sum(-1)
        coords[name] = torch.stack([a, b], -1).detach().cpu().numpy()
        residuals[name] = (rel - a[..., None] * d1 - b[..., None] * d2).norm(dim=-1).detach().cpu().numpy()
    every = np.concatenate([c.reshape(-1, 2) for c in coords.values()])
    span = float(np.abs(every).max()) * 1.15 or 1.0
    alphas = np.linspace(-span, span, grid)
    betas = np.linspace(-span, span, grid)
    loss = np.zeros((x.shape[0], grid, grid))
    for j, b in enumerate(betas):
        for i, a in enumerate(alphas):
            point = x + (float(a) * d1 + float(b) * d2).view_as(x)
            loss[:, j, i] = expected_loss(subject, point.clamp(0, 1), draws, key=("landscape", i, j)).detach().cpu().numpy()
    return Landscape(d1, d2, alphas, betas, loss, coords, residuals)
