"""GDMP (Wang et al. 2022, "Guided diffusion model for adversarial purification").

Per path: 4 iterations of {diffuse to t = 36 (ᾱ[36]), then 36 DDPM steps i = 35 … 0 with
fixed_large variance log([β̃_1, β_1 … β_999]) and guidance}; 10 independent paths, each
classified, combined by a vote. Guidance pulls the sample towards the *original* input
re-noised to the current step with its own noise (stream ``guidance``):
μ ← μ + β_i·s_i·g (β_i = exp(logvar_i), the fixed_large variance), s_i = sqrt(1−ᾱ_i)/(sqrt(ᾱ_i)·m), m = (ptb·2/255/3)/scale, with
g = ∇_z −MSE(z, target) (``mse``, scale 60000) or ∇_z SSIM(z, target) (``ssim``, scale 70000).

The reference averages its guidance loss over the whole batch (F.mse_loss / pytorch_ssim
means), so its strength scales with 1/batch size. Here the loss is per sample and divided by
``reference_batch`` = 100 (the reference's batch size): identical to the reference at batch
100, and independent of batching. MSE guidance is computed in closed form (−2(z−target)/N);
SSIM guidance by autograd with ``create_graph`` so attacks differentiate through it exactly.

``stride`` > 1 respaces each iteration's chain to every ``stride``-th step (36 → 9 at stride 4;
the toy protocol's setting), with the respaced fixed_large variance 1 − ᾱ_t/ᾱ_prev; stride 1 is
the paper's chain.

Votes: ``logits`` (mean logits, default), ``softmax`` (log of the mean probability) or
``onehot`` (majority vote; its gradient is the softmax vote's, a straight-through surrogate,
since a hard vote has none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.defense import Checkpoint, Defense, DefenseConfig, checkpointed_steps, register_defense, run_step
from bench.core.errors import ConfigError
from bench.core.guidance import guidance_term, input_gradient
from bench.core.noise import NoiseBatch, StreamSpec
from bench.families.ddpm import (
    fixed_large_variances,
    linear_alphas_cumprod,
    posterior_mean,
    predict_x0,
)

DEFAULT_SCALE = {"mse": 60000.0, "ssim": 70000.0, "none": 0.0}


@dataclass(frozen=True)
class GDMPConfig(DefenseConfig):
    """``guide_scale`` 0 means the paper's value for the guidance mode."""

    guidance: Literal["mse", "ssim", "none"] = "mse"
    guide_scale: float = 0.0
    purify_step: int = 36
    iterations: int = 4
    stride: int = 1
    paths: int = 10
    vote: Literal["logits", "softmax", "onehot"] = "logits"
    ptb: float = 8.0
    reference_batch: int = 100
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if self.guidance not in DEFAULT_SCALE:
            raise ConfigError(f"guidance={self.guidance!r} is not one of 'mse', 'ssim', 'none'")
        if self.vote not in ("logits", "softmax", "onehot"):
            raise ConfigError(f"vote={self.vote!r} is not one of 'logits', 'softmax', 'onehot'")
        for name in ("purify_step", "iterations", "paths", "reference_batch", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if not self.purify_step < self.num_train_timesteps:
            raise ConfigError(f"purify_step={self.purify_step} must be below {self.num_train_timesteps}")

    @property
    def scale(self) -> float:
        return self.guide_scale or DEFAULT_SCALE[self.guidance]


def ssim_per_sample(a: torch.Tensor, b: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM map per sample (B,) with a Gaussian window (Wang et al. 2004; the
    pytorch_ssim definition GDMP uses: zero padding, C1 = 0.01², C2 = 0.03²)."""
    channels = a.shape[1]
    coords = torch.arange(window_size, dtype=a.dtype, device=a.device) - window_size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g).expand(channels, 1, window_size, window_size).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=window_size // 2, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


@register_defense("gdmp")
class GDMP(Defense):
    description = "GDMP: 4 x 36 guided DDPM steps (MSE/SSIM/no guidance), 10 paths combined by vote"
    paper = "Wang et al., Guided Diffusion Model for Adversarial Purification, arXiv:2205.14969"
    model_files = {"toy": "toy-ddpm", "cifar10": "ddpm-cifar10-pesser-ema"}
    fast_options = {"purify_step": "6", "iterations": "2", "paths": "2"}
    # the toy protocol: 1 of its 4 iterations at every 4th step (9 of 144 guided steps), all 10 paths
    toy_options = {"iterations": 1, "stride": 4}
    license = "pytorch_diffusion weights: converted from the DDPM TF release (see its repository)"
    config_cls = GDMPConfig

    def __init__(self, config: GDMPConfig, unet: nn.Module) -> None:
        super().__init__(config)
        self.unet = unet.eval().requires_grad_(False)
        # GDMP's reference builds its DDPM tables in float64 (numpy)
        self._a_bar = linear_alphas_cumprod(config.num_train_timesteps, precision="float64").tolist()
        self._variance = fixed_large_variances(self._a_bar)

    @property
    def paths(self) -> int:
        return self.config.paths

    @property
    def timesteps(self) -> list[int]:
        """The reverse steps of one iteration: purify_step − 1, … 0 (``stride`` 1, the paper), or
        every ``stride``-th of them, purify_step − 1, purify_step − 1 − stride, … (a respaced chain)."""
        return list(range(self.config.purify_step - 1, -1, -self.config.stride))

    @property
    def network_calls(self) -> int:
        return self.config.iterations * len(self.timesteps) * self.config.paths

    @property
    def nfe(self) -> int:
        return self.config.iterations * len(self.timesteps)

    def _per_path(self) -> dict[str, int]:
        cfg = self.config
        steps = len(self.timesteps)
        counts = {"forward": cfg.iterations, "reverse": cfg.iterations * (steps - 1)}
        if cfg.guidance != "none":
            counts["guidance"] = cfg.iterations * steps
        return counts

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        return {name: StreamSpec(n * self.config.paths, tuple(sample_shape)) for name, n in self._per_path().items()}

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        """Returns (B, paths, C, H, W) in [0, 1]; paths are stacked into the batch internally."""
        cfg = self.config
        batch, paths, shape = x.shape[0], cfg.paths, x.shape[1:]
        streams = {  # (steps_per_path, paths * B, ...), path-major rows
            name: noise[name].view(paths, n, batch, *shape).transpose(0, 1).reshape(n, paths * batch, *shape)
            for name, n in self._per_path().items()
        }
        x_adv = (2 * x - 1).repeat(paths, *([1] * (x.dim() - 1)))
        z = x_adv
        reverse_k = guide_k = 0
        timesteps = self.timesteps
        marks = iter(checkpointed_steps(checkpoint, cfg.iterations * len(timesteps), keep_last=False))
        for it in range(cfg.iterations):
            a_star = self._a_bar[cfg.purify_step]
            z = math.sqrt(a_star) * z + math.sqrt(1 - a_star) * streams["forward"][it]
            for k, i in enumerate(timesteps):
                prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
                step_noise = streams["reverse"][reverse_k] if prev >= 0 else None
                reverse_k += prev >= 0
                guide_noise = streams["guidance"][guide_k] if cfg.guidance != "none" else None
                guide_k += cfg.guidance != "none"
                z = run_step(self._step, z, x_adv, step_noise, guide_noise, i, prev, checkpoint=next(marks))
        out = ((z + 1) / 2).clamp(0, 1)
        return out.view(paths, batch, *shape).transpose(0, 1)

    def _step(self, z: torch.Tensor, x_adv: torch.Tensor, step_noise: torch.Tensor | None,
              guide_noise: torch.Tensor | None, i: int, prev: int) -> torch.Tensor:
        """One guided DDPM step i → prev (i − 1 unless respaced; −1 ends the chain): the family's
        posterior mean, shifted by v_i·s_i·g, plus sqrt(v_i)·z (no noise at the last step), v_i the
        fixed_large variance (respaced: 1 − ᾱ_i/ᾱ_prev, as diffusers respaces ``fixed_large``)."""
        a_bar, a_prev = self._a_bar[i], (self._a_bar[prev] if prev >= 0 else 1.0)
        t = torch.full((z.shape[0],), i, device=z.device, dtype=torch.long)
        eps = self.unet(z, t).sample
        mean = posterior_mean(z, predict_x0(z, eps, a_bar), a_bar, a_prev)
        variance = self._variance[i] if self.config.stride == 1 else 1.0 - a_bar / a_prev
        if guide_noise is not None:
            target = math.sqrt(a_bar) * x_adv + math.sqrt(1 - a_bar) * guide_noise
            m = self.config.ptb * 2 / 255 / 3 / self.config.scale
            scale = math.sqrt(1 - a_bar) / (m * math.sqrt(a_bar))
            mean = mean + variance * scale * self._guidance(z, target)
        if step_noise is not None:
            mean = mean + math.sqrt(variance) * step_noise
        return mean

    def _guidance(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        per_sample_elements = z[0].numel()
        if cfg.guidance == "mse":  # ∇_z of −mean over a reference batch of (z − target)²
            return guidance_term(-2 * (z - target) / (cfg.reference_batch * per_sample_elements))
        return input_gradient(lambda z_in: ssim_per_sample(z_in, target).sum() / cfg.reference_batch, z)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, paths, classes) -> (B, classes) scores whose argmax is the vote."""
        vote = self.config.vote
        if vote == "logits":
            return logits.mean(1)
        log_mean_prob = torch.logsumexp(F.log_softmax(logits, -1), dim=1) - math.log(logits.shape[1])
        if vote == "softmax":
            return log_mean_prob
        counts = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype).mean(1)
        hard = counts.clamp_min(1e-6).log()
        return hard.detach() + (log_mean_prob - log_mean_prob.detach())  # straight-through surrogate

    @classmethod
    def pretrained(cls, dataset: str, config: GDMPConfig) -> GDMP:
        from bench.zoo.hub import load_network

        return cls(config, load_network(cls, dataset, config))

    @classmethod
    def card_instance(cls, config: GDMPConfig) -> GDMP:
        return cls(config, nn.Identity())  # the card reads only the config: no U-Net, no diffusers import

    @classmethod
    def for_testing(cls, config: GDMPConfig | None = None, channels: int = 1, size: int = 8) -> GDMP:
        from bench.zoo.toy import tiny_unet

        return cls(config or GDMPConfig(purify_step=3, iterations=2, paths=2), tiny_unet(channels, size))
