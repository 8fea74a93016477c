"""DP_DDPM: DiffPure-style purification with DDPM ancestral sampling.

ADDT paper Section 4.1 / Eq. 5; diffusers ``DDPMScheduler`` with ``variance_type
="fixed_large"`` and ``clip_sample=True`` as in the ADDT reference code. Streams:
``forward`` (1 tensor) and ``reverse`` (one tensor per reverse step with t > 0).
"""

from __future__ import annotations

import functools

from typing import TYPE_CHECKING

import torch

from bench.core.defense import register_defense
from bench.families.ddpm import ancestral_step
from defenses.ddpm_purifier import TruncatedDiffusionConfig, TruncatedDiffusionPurifier

if TYPE_CHECKING:  # diffusers is imported where a scheduler is built: listing the registry (the
    from diffusers import DDPMScheduler  # site build's name check) need not pay its ~4 s import


@register_defense("dp_ddpm")
class DPDDPM(TruncatedDiffusionPurifier):
    description = "DDPM purification (t*=100, fixed_large variance, stochastic reverse)"
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 4.1; DiffPure framework: Nie et al., ICML 2022, arXiv:2205.07460"
    model_files = {"toy": "toy-ddpm", "cifar10": "ddpm-cifar10-google", "tinyimagenet": "ddpm-tinyimagenet"}
    fast_options = {"nfe": "5"}
    toy_options = {"nfe": 20}  # the toy protocol: a fifth of the paper's 100 steps
    license = "cifar10 weights: see the google/ddpm-cifar10-32 model page; toy: this project's"

    def make_scheduler(self, config: TruncatedDiffusionConfig) -> DDPMScheduler:
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps, variance_type="fixed_large", clip_sample=True
        )
        scheduler.set_timesteps(timesteps=config.timesteps)
        return scheduler

    @functools.cached_property
    def _alphas_cumprod(self) -> list[float]:
        """ᾱ_t in float64, from the scheduler (built on first use)."""
        return self.scheduler.alphas_cumprod.double().tolist()

    def reverse_stochastic_steps(self) -> int:
        return sum(1 for t in self.config.timesteps if t > 0)

    def reverse_step(
        self, eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        # DDPMScheduler.step draws its variance noise internally, so the family's ancestral step
        # (the same arithmetic, with the scheduler's own ᾱ table) takes the stream's tensor;
        # tests/test_defenses.py checks the equivalence with the scheduler.
        a_prev = self._alphas_cumprod[prev_t] if prev_t >= 0 else 1.0
        if t > 0 and noise is None:
            raise RuntimeError("a stochastic DDPM step needs its reverse noise tensor")
        return ancestral_step(x, eps, self._alphas_cumprod[t], a_prev, noise if t > 0 else None)
