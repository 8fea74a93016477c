"""Two robust toy classifiers from the papers this benchmark is built on (``bench toy train``).

- ``classifier-time-robust``: the *time-dependent adversarially robust classifier* of the
  robust-classifier-guidance paper (Kawar, Ganz & Elad, TMLR 2023, Sec. 4.2, Eq. 5):
  min_φ E_{(x,y), t~U{0..T-1}, x_t~q(x_t|x)} CE(h_φ(x̃_t, t), y), x̃_t = PGD on x_t (ℓ2, ε = 0.5 in
  [-1, 1] pixel units, 7 steps of 2.5ε/7, no random start, no clamping, a sample stops being
  attacked once it is misclassified), cross-entropy on the attacked noisy input only; AdamW,
  weight decay 0.05, learning rate 3e-4 annealed linearly to 6e-5 (their Sec. 5.1 / App. E).
  It guides ``rcg_purify`` and is never the evaluated classifier.
- ``classifier-diffrep-at``: PGD adversarial training (Madry et al. 2018, the toy threat model
  of ``toy-at``) with an auxiliary *diffusion-representation alignment* (Huang, Chen & Lin,
  arXiv:2602.19931). Only that paper's abstract is available here; its summaries describe a
  REPA-style cosine alignment, through a small MLP head, between the classifier's representation
  and a frozen diffusion model's features at a fixed timestep. The nearest honest version, with
  every unknown a named choice of ours: L = CE(f(x_adv), y) + λ·(1 − cos(g(φ_f(x_adv)),
  sg(φ_D(x_t*)))) with φ_f the CNN's 1024-d penultimate features, g a 2-layer MLP head
  (discarded after training), φ_D the toy DDPM UNet's mid-block output (256-d) on the *clean*
  image noised to t* = 50, λ = 0.5. The saved network is a plain toy CNN, usable as
  ``--classifier toy-diffrep-at`` anywhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.zoo.toy import TOY_TRAIN_TIMESTEPS, ToyClassifier, ToyTimeClassifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeRobustConfig:
    """Kawar et al.'s recipe at toy scale (their CIFAR-10 ablation's best threat model)."""

    seed: int = 0
    iterations: int = 4000
    batch: int = 128
    lr: float = 3e-4
    final_lr: float = 6e-5
    weight_decay: float = 0.05
    eps: float = 0.5  # ℓ2, in [-1, 1] pixel units
    steps: int = 7

    @property
    def step_size(self) -> float:
        return 2.5 * self.eps / self.steps


def attack_noisy(model: ToyTimeClassifier, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                 eps: float, steps: int, step_size: float) -> torch.Tensor:
    """Untargeted ℓ2 PGD on x_t (B, 1, 8, 8) around x_t itself, stopping per sample once it is
    misclassified (Kawar et al. Sec. 4.2: without it heavily noised inputs overwhelm training)."""
    x_adv = x_t.detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv, t)
        active = (logits.argmax(1) == y).float().view(-1, 1, 1, 1)
        if not bool(active.any()):
            break
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_adv)
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = x_adv.detach() + active * step_size * grad / norm
        delta = x_adv - x_t
        delta_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = (x_t + delta * torch.clamp(eps / delta_norm, max=1.0)).detach()
    return x_adv.detach()


def noisy_accuracy(model: ToyTimeClassifier, images: torch.Tensor, labels: torch.Tensor, t: int,
                   cfg: TimeRobustConfig, generator: torch.Generator, attacked: bool) -> float:
    """Accuracy of h_φ on test digits noised to timestep ``t`` (optionally after the training attack)."""
    from bench.families.ddpm import linear_alphas_cumprod

    a_bar = float(linear_alphas_cumprod(TOY_TRAIN_TIMESTEPS)[t])
    x_t = math.sqrt(a_bar) * (2 * images - 1) + math.sqrt(1 - a_bar) * torch.randn(images.shape, generator=generator)
    steps = torch.full((len(labels),), t, dtype=torch.long)
    if attacked:
        x_t = attack_noisy(model, x_t, steps, labels, cfg.eps, cfg.steps, cfg.step_size)
    with torch.no_grad():
        return float((model(x_t, steps).argmax(1) == labels).float().mean())


def train_time_robust_classifier(cfg: TimeRobustConfig = TimeRobustConfig(),
                                 progress: Callable[[str], None] = log.info) -> tuple[ToyTimeClassifier, dict[str, float]]:
    """Eq. 5 of the robust-classifier-guidance paper on the digits train split; returns the model
    and its test accuracy on noised digits, clean and attacked, at t = 0, 50, 100."""
    from bench.families.ddpm import linear_alphas_cumprod
    from bench.zoo.datasets import load_digits_split

    train, test = load_digits_split(True), load_digits_split(False)
    images = train.images * 2 - 1
    a_bar = linear_alphas_cumprod(TOY_TRAIN_TIMESTEPS)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = ToyTimeClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, cfg.final_lr / cfg.lr, total_iters=cfg.iterations)
    for iteration in range(cfg.iterations):
        idx = torch.randint(0, images.shape[0], (cfg.batch,), generator=generator)
        t = torch.randint(0, TOY_TRAIN_TIMESTEPS, (cfg.batch,), generator=generator)
        a = a_bar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * images[idx] + (1 - a).sqrt() * torch.randn(images[idx].shape, generator=generator)
        model.eval()
        x_adv = attack_noisy(model, x_t, t, train.labels[idx], cfg.eps, cfg.steps, cfg.step_size)
        model.train()
        loss = F.cross_entropy(model(x_adv, t), train.labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (iteration + 1) % 1000 == 0:
            progress(f"time-robust classifier: iteration {iteration + 1}/{cfg.iterations} loss {loss.item():.3f}")
    model.eval()
    evaluation = torch.Generator().manual_seed(cfg.seed + 7)
    metrics = {f"time_robust_{'attacked' if attacked else 'noisy'}_accuracy_t{t}":
               noisy_accuracy(model, test.images, test.labels, t, cfg, evaluation, attacked)
               for t in (0, 50, 100) for attacked in (False, True)}
    progress(f"time-robust classifier: {metrics}")
    return model.requires_grad_(False), metrics


@dataclass(frozen=True)
class DiffRepConfig:
    """PGD-AT (``toy-at``'s schedule) plus the alignment term; see the module docstring."""

    seed: int = 0
    epochs: int = 40
    lr: float = 1e-3
    align_weight: float = 0.5
    align_t: int = 50
    head_width: int = 256


class MidBlockFeatures(nn.Module):
    """φ_D: the frozen toy DDPM UNet's mid-block output at a fixed timestep, flattened, (B, 256)."""

    def __init__(self, unet: nn.Module, t: int) -> None:
        super().__init__()
        from bench.families.ddpm import linear_alphas_cumprod

        self.unet = unet.eval().requires_grad_(False)
        self.t = t
        self.a_bar = float(linear_alphas_cumprod(TOY_TRAIN_TIMESTEPS)[t])
        self._captured: list[torch.Tensor] = []
        self.unet.mid_block.register_forward_hook(lambda _m, _i, out: self._captured.append(out))

    @torch.no_grad()
    def forward(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x_t = math.sqrt(self.a_bar) * (2 * x0 - 1) + math.sqrt(1 - self.a_bar) * noise
        self._captured.clear()
        self.unet(x_t, torch.full((x0.shape[0],), self.t, dtype=torch.long))
        return self._captured[-1].flatten(1)


def train_diffrep_at_classifier(cfg: DiffRepConfig = DiffRepConfig(),
                                progress: Callable[[str], None] = log.info) -> tuple[ToyClassifier, float]:
    """PGD-AT with the diffusion-representation alignment on the digits train split; returns the
    CNN (without the head) and its clean test accuracy."""
    from bench.training.toy import _pgd_training_examples
    from bench.zoo.datasets import load_digits_split
    from bench.zoo.toy import load_toy_unet

    train, test = load_digits_split(True), load_digits_split(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = ToyClassifier()
    features = MidBlockFeatures(load_toy_unet(), cfg.align_t)
    target_dim = features(train.images[:1], torch.zeros_like(train.images[:1])).shape[1]
    head = nn.Sequential(nn.Linear(64 * 4 * 4, cfg.head_width), nn.SiLU(), nn.Linear(cfg.head_width, target_dim))
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=cfg.lr)
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(train), generator=generator)
        total, alignment = 0.0, 0.0
        for start in range(0, len(train), 64):
            idx = order[start : start + 64]
            clean, labels = train.images[idx], train.labels[idx]
            adversarial = _pgd_training_examples(model, clean, labels, generator)
            target = features(clean, torch.randn(clean.shape, generator=generator))
            cosine = F.cosine_similarity(head(model.penultimate(adversarial)), target, dim=1)
            loss = F.cross_entropy(model(adversarial), labels) + cfg.align_weight * (1 - cosine).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, alignment = total + loss.item(), alignment + cosine.mean().item()
        if (epoch + 1) % 10 == 0:
            batches = math.ceil(len(train) / 64)
            progress(f"diffrep-at: epoch {epoch + 1}/{cfg.epochs} loss {total / batches:.3f} cosine {alignment / batches:.3f}")
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test.images).argmax(1) == test.labels).float().mean())
    progress(f"diffrep-at classifier: clean test accuracy {accuracy:.4f}")
    return model.requires_grad_(False), accuracy
