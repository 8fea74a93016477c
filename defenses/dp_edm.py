"""DP_EDM: purification with EDM's stochastic Heun sampler (ADDT paper Appendix F).

x_σ = x_d + σ_max·n, then Karras et al. (2022) Algorithm 2 from σ_max = 0.5 to σ_min = 0.002
(ρ = 7, 50 steps, NFE 99) with S_churn 6, S_min 0.01, S_max 0.46, S_noise 1.007 ("EDM-SDE").
``dp_edm_ode`` (its own file) is the same with S_churn = 0. Streams: ``forward`` (1) and ``churn`` (one tensor
per step whose γ > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.core.defense import Checkpoint, Defense, DefenseConfig, checkpointed_steps, register_defense, run_step
from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch, StreamSpec
from bench.families.edm import churn_gammas, heun_step, karras_sigmas


@dataclass(frozen=True)
class DPEDMConfig(DefenseConfig):
    sigma_max: float = 0.5
    sigma_min: float = 0.002
    rho: float = 7.0
    num_steps: int = 50
    s_churn: float = 6.0
    s_min: float = 0.01
    s_max: float = 0.46
    s_noise: float = 1.007

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(f"need 0 < sigma_min ({self.sigma_min}) < sigma_max ({self.sigma_max})")
        if self.num_steps < 2:
            raise ConfigError(f"num_steps={self.num_steps} must be at least 2")
        if self.s_churn < 0:
            raise ConfigError(f"s_churn={self.s_churn} must be >= 0")

    def sigmas(self) -> list[float]:
        """t_0 .. t_{N-1} (Karras et al. Eq. 5) followed by t_N = 0."""
        return karras_sigmas(self.sigma_max, self.sigma_min, self.rho, self.num_steps)

    def gammas(self) -> list[float]:
        """Churn factor per step: min(S_churn/N, √2 − 1) inside [S_min, S_max], else 0."""
        return churn_gammas(self.sigmas(), self.s_churn, self.s_min, self.s_max)


class EDMPurifier(Defense):
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), App. F; EDM: Karras et al., NeurIPS 2022"
    model_files = {"toy": "toy-edm", "cifar10": "edm-cifar10-uncond-vp", "tinyimagenet": "edm-tinyimagenet"}
    license = "EDM weights: CC BY-NC-SA 4.0"
    config_cls = DPEDMConfig

    def __init__(self, config: DPEDMConfig, denoiser: nn.Module) -> None:
        super().__init__(config)
        self.denoiser = denoiser.eval().requires_grad_(False)  # D(x, σ), EDMPrecond
        self._sigmas, self._gammas = config.sigmas(), config.gammas()

    def surrogate(self, steps: int) -> EDMPurifier:
        """The same sampler with ``steps`` Heun steps, same denoiser."""
        import dataclasses

        if steps == self.config.num_steps:
            return self
        return type(self)(dataclasses.replace(self.config, num_steps=steps), self.denoiser)

    @property
    def network_calls(self) -> int:
        return 2 * self.config.num_steps - 1

    @property
    def nfe(self) -> int:
        return self.network_calls

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        churned = sum(1 for g in self._gammas if g > 0)
        return {"forward": StreamSpec(1, tuple(sample_shape)), "churn": StreamSpec(churned, tuple(sample_shape))}

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        cfg = self.config
        marks = checkpointed_steps(checkpoint, cfg.num_steps)
        sample = (2 * x - 1) + cfg.sigma_max * noise.step("forward", 0)  # Eq. 14, no scaling
        churn, k = noise["churn"], 0
        for i in range(cfg.num_steps):
            step_noise = None
            if self._gammas[i] > 0:
                step_noise, k = churn[k], k + 1
            sample = run_step(self._heun_step, sample, step_noise, i, checkpoint=marks[i])
        return ((sample + 1) / 2).clamp(0, 1)

    def _heun_step(self, x: torch.Tensor, churn_noise: torch.Tensor | None, i: int) -> torch.Tensor:
        """Step i of Karras et al. Algorithm 2 (the last one is first order: t_N = 0)."""
        cfg = self.config
        return heun_step(self.denoiser, x, self._sigmas[i], self._sigmas[i + 1], self._gammas[i], cfg.s_noise,
                         churn_noise, second_order=i < cfg.num_steps - 1)

    @classmethod
    def pretrained(cls, dataset: str, config: DPEDMConfig) -> EDMPurifier:
        from bench.zoo.hub import load_network

        return cls(config, load_network(cls, dataset, config))

    @classmethod
    def for_testing(cls, config: DPEDMConfig | None = None, channels: int = 1, size: int = 8) -> EDMPurifier:
        from bench.zoo.nets.songunet import EDMPrecond, SongUNetConfig

        torch.manual_seed(0)
        net = EDMPrecond(SongUNetConfig(img_resolution=size, channels=channels, augment_dim=0, model_channels=8,
                                        channel_mult=(1, 2), num_blocks=1, attn_resolutions=(size // 2,), dropout=0.0))
        for p in net.parameters():  # the original initialises output layers near zero; make the test net non-trivial
            nn.init.normal_(p, std=0.05)
        return cls(config or cls.default_test_config(), net)

    @classmethod
    def default_test_config(cls) -> DPEDMConfig:
        return DPEDMConfig(num_steps=4, s_min=0.0, s_max=1.0)


@register_defense("dp_edm")
class DPEDM(EDMPurifier):
    description = "EDM purification: σ 0.5 -> 0.002, stochastic Heun, 50 steps, S_churn 6 (EDM-SDE)"
    fast_options = {"num_steps": "6"}
    toy_options = {"num_steps": 10}  # the toy protocol: 19 network calls instead of 99
