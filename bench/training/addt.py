"""ADDT: Adversarial Denoising Diffusion Training (ADDT paper Sec. 5, Algorithm 1, App. E/I).

Pieces, each a small function or class:

- :func:`rbgm` — Rank-Based Gaussian Mapping: per image and channel, a fresh Gaussian sample
  re-ordered so its ranks equal the ranks of δ (output is exactly a permutation of the sample).
- :func:`lambda_schedule` — Eq. 7: λ_t = clip(γ_t λ_unit, λ_min, λ_max), γ_t = a_t / s_t.
- a backbone is a diffusion family (:mod:`bench.families`): how it noises (x_t = a x0 + s n),
  predicts x̂0 in one step and computes its training loss:

  * DDPM/DDIM (``UNet2DModel``, discrete t ~ U{0..T-1}): a = sqrt(ᾱ_t), s = sqrt(1-ᾱ_t);
  * VP-SDE DDPM++ (NCSN++, continuous t ~ U(1e-5, 1), label 999 t): a, s = VP marginal;
  * EDM (``EDMPrecond``, ln σ ~ N(-1.2, 1.2²)): in σ parametrisation x_σ = x0 + σ n, i.e.
    a = 1, s = σ. Since x_t / sqrt(ᾱ) = x0 + (s/a) n for VP, σ plays s/a, so γ = a/s = 1/σ and
    λ_σ = clip(λ_unit / σ, λ_min, λ_max); the mixture n' = sqrt(1-λ²) ε + λ ε_δ replaces n,
    and Eq. 8's x0-recovery objective becomes EDM's own weighted x0 loss
    (σ² + σ_d²)/(σ σ_d)² ‖D(x0 + σ n', σ) − x0‖², exactly the clean EDM loss with n → n'.

  For the VP families Eq. 8 with P(x_t) = (x_t − s ε̂)/a gives γ²‖x0 − P‖² = ‖ε̂ − n'‖²,
  the ε-MSE against the mixed noise used in Algorithm 1 and the reference code.
- :func:`cgpo` — Classifier-Guided Perturbation Optimization (Algorithm 1, lines 4-10), as the
  authors' code does it (LYMDLUT/ADDT ``train_DDPM_DDIM_ADDT/train_ADDT.py``): the first ε_δ is
  a fresh Gaussian, the gradient sum G starts at 0, and each iteration draws ε, forms x'_t
  (Eq. 6), predicts x̂0, classifies it, adds ∇_{ε_δ} CE to G and sets the next ε_δ = RBGM(G).
  The paper's text ("init δ to a small random vector", then δ += ∇) would make RBGM rank the
  initial vector wherever the gradients are small (on the toy suite they are ~1e-9, so the
  "adversarial" noise was random); RBGM only uses ranks, so keeping G apart is scale-free.
- ``variant="linf"`` (ADDT_ℓ∞, App. I): δ is a 5-step ℓ∞ PGD perturbation of the image
  (‖δ‖∞ ≤ ε in [0, 1] units, i.e. 2ε for the model's [-1, 1]), mixed as
  x' = a x0 + s (ε + λ δ) with λ = clip(γ, 0, 10) (λ_unit 1, λ_max 10), so that for most t
  λ s δ = a δ: the diffused adversarial image. Our reading of App. I, which gives only λ.
- the Table 5 ablations: ``variant="clean"`` ("vanilla fine-tune only": the same loop with no
  perturbation, n' = ε, so the plain ε-MSE on clean data) and ``variant="mse"`` ("MSE distance
  guided": CGPO with the classifier's cross-entropy replaced by the one-step reconstruction error
  ‖x̂0 − x0‖², RBGM-mapped as ADDT). A Gaussian perturbation without any guidance is not a third
  ablation: sqrt(1−λ²) ε + λ ε' with independent Gaussians is again N(0, I), i.e. ``clean``.
- :func:`fine_tune_config`: the config of a named fine-tune of :data:`bench.training.fine_tunes.FINE_TUNES`
  (Tables 5, 7, 12, 15), at the toy suite's scale if asked; the defenses' ``fine_tune`` option
  loads the matching model file.
- :func:`train` — the loop as the reference runs it: AdamW (betas 0.95/0.999, weight decay
  1e-6), gradient clipping 1, diffusers' ``EMAModel`` with warm-up (inv_gamma 1, power 3/4, max
  decay 0.9999), the model in train mode for CGPO and the update (dropout on); stateless
  per-step randomness (seeded by (seed, step), dropout included), periodic safetensors
  checkpoints with JSON metadata, and exact resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import ConfigError
from bench.core.noise import derive_seed
from bench.families import FAMILIES, Family

log = logging.getLogger(__name__)


def rbgm(delta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rank-Based Gaussian Mapping. delta (B, C, H, W) -> (B, C, H, W): for each (b, c) a fresh
    N(0, 1) sample of H*W values, placed so that its ranks equal those of delta[b, c]."""
    flat = delta.detach().reshape(delta.shape[0] * delta.shape[1], -1)
    sample = torch.randn(flat.shape, generator=generator, dtype=torch.float32).to(flat.device, flat.dtype)
    sorted_sample, _ = sample.sort(dim=1)
    ranks = flat.argsort(dim=1).argsort(dim=1)
    return sorted_sample.gather(1, ranks).reshape(delta.shape)


def lambda_schedule(gamma: torch.Tensor, unit: float, low: float, high: float) -> torch.Tensor:
    """Eq. 7: λ = clip(γ λ_unit, λ_min, λ_max), elementwise."""
    return (gamma * unit).clamp(low, high)


# -- CGPO and the ADDT loss ---------------------------------------------------------------------


VARIANTS = ("rbgm", "linf", "clean", "mse")


@dataclass(frozen=True)
class ADDTConfig:
    """Defaults are the paper's and its reference code's (Sec. 6.1, App. E; ADDT.sh, train_ADDT.py):
    λ_unit 0.03, λ ∈ [0, 0.3], 5 CGPO iterations, AdamW lr 2e-4 with betas (0.95, 0.999) and
    weight decay 1e-6, gradient clipping 1, EMA with warm-up up to 0.9999; 100 epochs at CIFAR
    scale. ``delta_init_std`` is the ADDT_ℓ∞ start only (the RBGM variant starts from a Gaussian).
    ``cgpo_train_mode``: run CGPO with the model in train mode (dropout on), as the reference."""

    variant: Literal["rbgm", "linf", "clean", "mse"] = "rbgm"
    lambda_unit: float = 0.03
    lambda_min: float = 0.0
    lambda_max: float = 0.3
    cgpo_iterations: int = 5
    delta_init_std: float = 1e-3
    linf_eps: float = 8 / 255  # ADDT_linf only, in [0, 1] image units
    lr: float = 2e-4
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    batch_size: int = 256
    epochs: int = 100
    ema_decay: float = 0.9999  # the maximum decay of the warm-up schedule
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    grad_clip: float = 1.0
    weight_decay: float = 1e-6
    cgpo_train_mode: bool = True
    seed: int = 0
    checkpoint_every: int = 1000  # optimizer steps

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant={self.variant!r} must be one of {', '.join(VARIANTS)}")
        if not 0 <= self.lambda_min <= self.lambda_max:
            raise ConfigError(f"need 0 <= lambda_min <= lambda_max, got {self.lambda_min}, {self.lambda_max}")
        if self.variant in ("rbgm", "mse") and self.lambda_max > 1:
            raise ConfigError(f"lambda_max={self.lambda_max} > 1 makes sqrt(1 - λ²) undefined for the RBGM mixture")
        for name in ("cgpo_iterations", "batch_size", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")

    @classmethod
    def linf(cls, **overrides: Any) -> ADDTConfig:
        """ADDT_ℓ∞ defaults (App. I): λ_unit 1, λ_max 10."""
        return cls(**{"variant": "linf", "lambda_unit": 1.0, "lambda_max": 10.0, **overrides})


def fine_tune_config(name: str, toy: bool, **overrides: Any) -> ADDTConfig:
    """The :class:`ADDTConfig` of fine-tune ``name``; on the toy suite λ_unit (and ADDT's λ_max)
    are rescaled to its threat model by :data:`TOY_LAMBDA_SCALE` (derivation in ``bench/cli/addt.py``)."""
    from bench.training.fine_tunes import FINE_TUNES

    if name not in FINE_TUNES:
        raise ConfigError(f"fine-tune {name!r} is not one of {', '.join(FINE_TUNES)}")
    values: dict[str, Any] = dict(FINE_TUNES[name].overrides)
    if toy and values.get("variant", "rbgm") in ("rbgm", "mse"):
        values["lambda_unit"] = round(values.get("lambda_unit", 0.03) * TOY_LAMBDA_SCALE, 6)
        values["lambda_max"] = TOY_LAMBDA_MAX
    if toy and values.get("variant") == "linf":
        values["linf_eps"] = TOY_LINF_EPS
    return ADDTConfig(**{**values, **overrides})


# The toy suite keeps CIFAR-10's ratio of attack size to ADDT perturbation (2ε/λ_unit = 2.09) at its
# ε = 0.25: λ_unit × 8 (0.03 -> 0.24), λ_max capped at 0.9 (see bench/cli/addt.py)
TOY_LAMBDA_SCALE = 8.0
TOY_LAMBDA_MAX = 0.9
TOY_LINF_EPS = 0.25  # ADDT_linf's PGD budget is the attack's: the toy's l_inf eps (bench.harness.request.THREAT_DEFAULTS)


def _classify(classifier: nn.Module, x0_hat: torch.Tensor) -> torch.Tensor:
    """The classifier takes [0, 1] images; the diffusion models work in [-1, 1]. Not clamped, as
    in the reference (a clamp would zero the gradient wherever x̂0 leaves the range)."""
    return classifier((x0_hat + 1) / 2)


def mixed_input(backbone: Family, x0: torch.Tensor, level: torch.Tensor, eps: torch.Tensor,
                perturbation: torch.Tensor, lam: torch.Tensor, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x', n'): Eq. 6 for ``rbgm`` (n' = sqrt(1-λ²) ε + λ ε_δ), ε + λ δ for ``linf``."""
    a, s = (c.to(x0.dtype).view(-1, 1, 1, 1) for c in backbone.coefficients(level))
    lam = lam.to(x0.dtype).view(-1, 1, 1, 1)
    noise = (1 - lam**2).sqrt() * eps + lam * perturbation if variant == "rbgm" else eps + lam * perturbation
    return a * x0 + s * noise, noise


def lambdas(backbone: Family, level: torch.Tensor, cfg: ADDTConfig) -> torch.Tensor:
    a, s = backbone.coefficients(level)
    return lambda_schedule(a / s, cfg.lambda_unit, cfg.lambda_min, cfg.lambda_max)


def _classifier_gradient(family: Family, model: nn.Module, classifier: nn.Module, x0: torch.Tensor,
                         y: torch.Tensor, level: torch.Tensor, lam: torch.Tensor, perturbation: torch.Tensor,
                         variant: str, generator: torch.Generator, objective: str = "ce") -> tuple[torch.Tensor, float]:
    """(∇ of the summed classifier cross-entropy on x̂0 w.r.t. ``perturbation``, mean CE) for one
    fresh ε (Algorithm 1, lines 6-9); ``objective="mse"``: the reconstruction error ‖x̂0 − x0‖²
    instead (Table 5's "MSE distance guided" ablation; the classifier is unused)."""
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    mapped = perturbation.detach().requires_grad_(True)
    with torch.enable_grad():  # CGPO needs ∇_{ε_δ} even when the caller evaluates without grad
        x, _ = mixed_input(family, x0, level, eps, mapped, lam, variant)
        x0_hat = family.predict_x0(model, x, level)
        if objective == "mse":
            loss = (x0_hat - x0).pow(2).sum()
        else:
            loss = F.cross_entropy(_classify(classifier, x0_hat), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, mapped)
    return grad, loss.item() / x0.shape[0]


def cgpo(family: Family, model: nn.Module, classifier: nn.Module, x0: torch.Tensor, y: torch.Tensor,
         level: torch.Tensor, cfg: ADDTConfig, generator: torch.Generator,
         trace: list[float] | None = None) -> torch.Tensor:
    """Refine the perturbation for ``cgpo_iterations`` (Algorithm 1, lines 4-10) and return the
    one to train on: ε_δ = RBGM(G) of the gradient sum G for ``rbgm`` (see the module docstring),
    the ℓ∞ PGD perturbation for ``linf``. The model's parameters are frozen meanwhile; it runs
    in train mode if ``cfg.cgpo_train_mode`` (the reference). The classifier loss of each
    iteration is appended to ``trace`` if given."""
    lam = lambdas(family, level, cfg)
    was_training, params = model.training, [p.requires_grad for p in model.parameters()]
    model.train(cfg.cgpo_train_mode).requires_grad_(False)
    try:
        if cfg.variant in ("rbgm", "mse"):
            mapped = torch.randn(x0.shape, generator=generator).to(x0)  # the first ε_δ: a fresh Gaussian
            total = torch.zeros_like(x0)  # G: the sum of the gradients, kept apart from ε_δ
            objective = "mse" if cfg.variant == "mse" else "ce"
            for _ in range(cfg.cgpo_iterations):
                grad, loss = _classifier_gradient(family, model, classifier, x0, y, level, lam, mapped, "rbgm", generator,
                                                  objective)
                total = total + grad
                mapped = rbgm(total, generator)
                if trace is not None:
                    trace.append(loss)
            return mapped
        bound = 2 * cfg.linf_eps  # [0, 1] budget in the model's [-1, 1] units
        delta = (cfg.delta_init_std * torch.randn(x0.shape, generator=generator).to(x0)).clamp(-bound, bound)
        for _ in range(cfg.cgpo_iterations):
            grad, loss = _classifier_gradient(family, model, classifier, x0, y, level, lam, delta, "linf", generator)
            delta = (delta + (bound / 2) * grad.sign()).clamp(-bound, bound)  # PGD step ε/2 (2.5 ε / 5 steps)
            if trace is not None:
                trace.append(loss)
        return delta.detach()
    finally:
        for p, flag in zip(model.parameters(), params):
            p.requires_grad_(flag)
        model.train(was_training)


def addt_loss(backbone: Family, model: nn.Module, classifier: nn.Module, x0: torch.Tensor, y: torch.Tensor,
              cfg: ADDTConfig, generator: torch.Generator, cgpo_model: nn.Module | None = None) -> torch.Tensor:
    """One ADDT objective evaluation (Algorithm 1, lines 2-14) on a batch x0 in [-1, 1].
    ``cgpo_model`` is the unwrapped network when ``model`` is a DDP wrapper."""
    level = backbone.sample_levels(x0.shape[0], generator).to(x0.device)
    if cfg.variant == "clean":  # no CGPO, no perturbation: the plain objective on clean data
        eps = torch.randn(x0.shape, generator=generator).to(x0)
        return backbone.loss(model, backbone.noisy(x0, level, eps), level, x0, eps)
    perturbation = cgpo(backbone, cgpo_model or model, classifier, x0, y, level, cfg, generator)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    x, noise = mixed_input(backbone, x0, level, eps, perturbation, lambdas(backbone, level, cfg),
                           "linf" if cfg.variant == "linf" else "rbgm")
    return backbone.loss(model, x, level, x0, noise)


# -- training loop with checkpoints and exact resume --------------------------------------------


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{index}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@dataclass
class TrainResult:
    model: nn.Module  # the EMA model
    steps: int
    seconds: float
    seconds_per_epoch: float
    losses: list[float]
    out_dir: Path


def _distributed(device: torch.device | str) -> tuple[int, int, torch.device | str]:
    """(world size, rank, device) under ``torchrun`` (WORLD_SIZE > 1), initialising the process group."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        if str(device).startswith("cuda"):
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    return world, rank, device


def _latest_checkpoint(out_dir: Path, resume: bool, rank: int) -> Path | None:
    """The newest ``step-*.json`` to resume from; without ``resume`` old checkpoints are moved
    aside (never mixed into a fresh run)."""
    latest = sorted(out_dir.glob("step-*.json"))
    if not resume and latest and rank == 0:
        aside = out_dir / f"discarded-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir()
        for old in out_dir.glob("step-*"):
            old.replace(aside / old.name)
        return None
    return latest[-1] if resume and latest else None


def make_ema(model: nn.Module, cfg: ADDTConfig) -> Any:
    """diffusers' ``EMAModel`` as the reference configures it: warm-up decay
    1 − (1 + k/inv_gamma)^(−power) at update k, capped at ``ema_decay`` (0 at the first update)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, inv_gamma=cfg.ema_inv_gamma,
                    power=cfg.ema_power)


@dataclass
class _TrainState:
    """What a checkpoint holds: the model, its EMA (diffusers ``EMAModel``), the optimizer, the
    step and the loss history."""

    model: nn.Module
    ema: Any
    optimizer: torch.optim.Optimizer
    step: int = 0
    losses: list[float] = field(default_factory=list)

    def ema_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights."""
        import copy

        averaged = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema.copy_to(averaged.parameters())
        return averaged

    def load(self, meta_path: Path, backbone_name: str, cfg: ADDTConfig) -> None:
        from safetensors.torch import load_file

        meta = json.loads(meta_path.read_text())
        if meta["config"] != asdict(cfg) or meta["backbone"] != backbone_name:
            raise ConfigError(f"{meta_path} was written with a different backbone/config; use another --out or --no-resume")
        tensors = load_file(str(meta_path.with_suffix(".safetensors")))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for (name, _), shadow in zip(self.model.named_parameters(), self.ema.shadow_params):
            shadow.copy_(tensors[f"ema.{name}"])
        self.ema.optimization_step = meta["ema_optimization_step"]
        _restore_optimizer(self.optimizer, tensors, meta["optimizer"])
        self.step, self.losses = meta["step"], meta["losses"]
        log.info("resumed from %s at step %d", meta_path, self.step)

    def save(self, out_dir: Path, meta: dict[str, Any]) -> None:
        """``step-XXXXXXX.safetensors`` (model, EMA, optimizer tensors) + ``.json`` (the rest)."""
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{name}": shadow.detach().contiguous()
                        for (name, _), shadow in zip(self.model.named_parameters(), self.ema.shadow_params)})
        opt_tensors, opt_meta = _optimizer_tensors(self.optimizer)
        tensors.update(opt_tensors)
        path = out_dir / f"step-{self.step:07d}.safetensors"
        save_file(tensors, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        meta = {**meta, "step": self.step, "losses": self.losses, "optimizer": opt_meta,
                "ema_optimization_step": self.ema.optimization_step}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))


def train(backbone_name: str, model: nn.Module, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
          cfg: ADDTConfig, out_dir: Path, metadata: dict[str, Any] | None = None, resume: bool = True,
          progress: Callable[[int, int, float], None] | None = None, stop_after: int | None = None,
          device: torch.device | str = "cpu") -> TrainResult:
    """Fine-tune ``model`` with ADDT on ``images`` (N, C, H, W) in [-1, 1] with ``labels``.

    Checkpoints ``step-XXXXXXX.safetensors`` (model, EMA, optimizer) + ``.json`` (metadata) go to
    ``out_dir`` every ``checkpoint_every`` steps and at the end; with ``resume`` the latest one is
    loaded and training continues identically (all randomness is derived from (seed, step)).
    ``stop_after`` ends early after that many steps (a checkpoint is written), e.g. for tests.
    Under ``torchrun`` (WORLD_SIZE > 1) each rank takes its share of every batch and gradients
    are averaged with DistributedDataParallel; rank 0 writes the checkpoints.
    """
    family = FAMILIES[backbone_name]()
    world, rank, device = _distributed(device)
    model = model.to(device).train()
    classifier = classifier.to(device).eval().requires_grad_(False)
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay, eps=1e-8)
    state = _TrainState(model, make_ema(model, cfg), optimizer)
    steps_per_epoch = images.shape[0] // cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {images.shape[0]} training images")
    total = steps_per_epoch * cfg.epochs
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = _latest_checkpoint(out_dir, resume, rank)
    if latest is not None:
        state.load(latest, backbone_name, cfg)
    trained = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    meta = {"backbone": backbone_name, "config": asdict(cfg), "total_steps": total, **(metadata or {})}
    started, first_step = time.perf_counter(), state.step
    while state.step < total:
        epoch, index = divmod(state.step, steps_per_epoch)
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "epoch", epoch)))
        batch = order[index * cfg.batch_size:(index + 1) * cfg.batch_size][rank::world]
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "step", state.step, rank))
        # dropout draws from torch's global generator: seed it per step too, so resume is exact
        with torch.random.fork_rng(devices=[device] if str(device).startswith("cuda") else []):
            torch.manual_seed(derive_seed(cfg.seed, "dropout", state.step, rank) % 2**63)
            loss = addt_loss(family, trained, classifier, images[batch].to(device), labels[batch].to(device), cfg,
                             generator, cgpo_model=model)
        _optimizer_step(state, loss, cfg)
        if progress:
            progress(state.step, total, loss.item())
        stopping = stop_after is not None and state.step - first_step >= stop_after
        if rank == 0 and (state.step % cfg.checkpoint_every == 0 or state.step == total or stopping):
            state.save(out_dir, {**meta, "epoch": state.step / steps_per_epoch})
        if stopping:
            break
    seconds = time.perf_counter() - started
    done = max(state.step - first_step, 1)
    return TrainResult(state.ema_model(), state.step, seconds, seconds / done * steps_per_epoch, state.losses, out_dir)


def _optimizer_step(state: _TrainState, loss: torch.Tensor, cfg: ADDTConfig) -> None:
    """Backward, clip, AdamW step, EMA update (``EMAModel.step``); advances ``state.step`` and
    records the loss."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"ADDT loss is {loss.item()} at step {state.step}; lower --lr or check the base model")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.optimizer.step()
    state.ema.step(state.model.parameters())
    state.losses.append(round(loss.item(), 6))
    state.step += 1


# -- diagnostics ------------------------------------------------------------------------------

LEVEL_BANDS: dict[str, list[tuple[float, float]]] = {
    "ddpm": [(1, 50), (50, 100), (100, 300), (300, 600), (600, 1000)],
    "vp": [(1e-5, 0.05), (0.05, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.0)],
    "edm": [(0.002, 0.1), (0.1, 0.5), (0.5, 2.0), (2.0, 10.0), (10.0, 80.0)],
}
"""Noise-level bands for :func:`cgpo_diagnostics` (t for ddpm/vp, σ for edm); the first two ddpm
bands lie inside the purification range t ≤ t* = 100."""


def _levels_in_band(backbone: str, band: tuple[float, float], n: int, generator: torch.Generator) -> torch.Tensor:
    low, high = band
    u = torch.rand(n, generator=generator)
    if backbone == "ddpm":
        return (low + u * (high - low)).long().clamp(int(low), int(high) - 1)
    if backbone == "edm":
        return (math.log(low) + u * (math.log(high) - math.log(low))).exp()
    return low + u * (high - low)


def cgpo_diagnostics(backbone: str, model: nn.Module, classifier: nn.Module, x0: torch.Tensor, y: torch.Tensor,
                     cfg: ADDTConfig, seed: int = 0) -> list[dict[str, float]]:
    """Per noise-level band: the classifier's mean cross-entropy on x̂0 when the ADDT mixture uses
    CGPO's ε_δ vs a Gaussian draw rescaled to the same per-image norm (same images, levels and ε:
    paired), the mean paired difference and the fraction of images where CGPO's is higher."""
    family = FAMILIES[backbone]()
    rows = []
    for band in LEVEL_BANDS[backbone]:
        generator = torch.Generator().manual_seed(derive_seed(seed, "cgpo-diagnostics", *band))
        level = _levels_in_band(backbone, band, x0.shape[0], generator)
        perturbation = cgpo(family, model, classifier, x0, y, level, cfg, generator)
        gaussian = torch.randn(x0.shape, generator=generator).to(x0)
        gaussian = gaussian * (perturbation.flatten(1).norm(dim=1) / gaussian.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        eps, lam = torch.randn(x0.shape, generator=generator).to(x0), lambdas(family, level, cfg)
        losses = []
        for p in (perturbation, gaussian):
            with torch.no_grad():
                x, _ = mixed_input(family, x0, level, eps, p, lam, "linf" if cfg.variant == "linf" else "rbgm")
                losses.append(F.cross_entropy(_classify(classifier, family.predict_x0(model, x, level)), y,
                                              reduction="none"))
        diff = losses[0] - losses[1]
        rows.append({"band_low": band[0], "band_high": band[1], "lambda_mean": float(lam.mean()),
                     "ce_cgpo": float(losses[0].mean()), "ce_gaussian": float(losses[1].mean()),
                     "difference": float(diff.mean()), "cgpo_higher": float((diff > 0).float().mean())})
    return rows
