"""DP_DDIM: DiffPure-style purification with deterministic DDIM (eta = 0).

ADDT paper Section 4.1; diffusers ``DDIMScheduler`` (clip_sample, set_alpha_to_one) as in
the ADDT reference code. Only the ``forward`` stream is random; ``reverse`` is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bench.core.defense import register_defense
from defenses.ddpm_purifier import TruncatedDiffusionConfig, TruncatedDiffusionPurifier

if TYPE_CHECKING:  # diffusers is imported where a scheduler is built: listing the registry (the
    from diffusers import DDIMScheduler  # site build's name check) need not pay its ~4 s import


@register_defense("dp_ddim")
class DPDDIM(TruncatedDiffusionPurifier):
    description = "DDIM purification (t*=100, eta=0: only the forward noise is random)"
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 4.1; DDIM: Song et al., ICLR 2021, arXiv:2010.02502"
    model_files = {"toy": "toy-ddpm", "cifar10": "ddpm-cifar10-google", "tinyimagenet": "ddpm-tinyimagenet"}
    fast_options = {"nfe": "5"}
    toy_options = {"nfe": 20}  # the toy protocol: a fifth of the paper's 100 steps
    license = "cifar10 weights: see the google/ddpm-cifar10-32 model page; toy: this project's"

    def make_scheduler(self, config: TruncatedDiffusionConfig) -> DDIMScheduler:
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(num_train_timesteps=config.num_train_timesteps, clip_sample=True)
        # 'leading' spacing with T/stride steps contains t_star, t_star - stride, ..., 0 and
        # makes DDIMScheduler.step use prev_t = t - stride.
        scheduler.set_timesteps(config.num_train_timesteps // config.stride)
        return scheduler

    def reverse_stochastic_steps(self) -> int:
        return 0

    def reverse_step(
        self, eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        return self.scheduler.step(eps, t, x, eta=0.0).prev_sample
