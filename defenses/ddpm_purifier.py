"""Shared base of ``dp_ddpm`` and ``dp_ddim`` (not a defense itself): DDPM/DDIM purification on a
diffusers ``UNet2DModel``.

DiffPure-style purification (ADDT paper Section 3, Eq. 2 and 5): diffuse the input to
``t_star`` with the forward noise stream, then run the reverse chain over the truncated
schedule ``t_star, t_star - stride, ..., 0`` with ``stride = t_star / nfe`` (the paper's
NFE convention: NFE 5 means timesteps 100, 80, 60, 40, 20, 0, i.e. ``nfe + 1`` UNet calls).
Images are in [0, 1] at the boundary and in [-1, 1] inside.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Any

import torch

from bench.core.defense import Checkpoint, Defense, DefenseConfig, checkpointed_steps, run_step
from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch, StreamSpec


@dataclass(frozen=True)
class TruncatedDiffusionConfig(DefenseConfig):
    """Purification schedule shared by ``dp_ddpm`` and ``dp_ddim``.

    Attributes:
        t_star: diffusion timestep the input is noised to (paper: 0.1 * T = 100).
        nfe: number of reverse steps; must divide ``t_star`` (100 = every timestep).
        num_train_timesteps: T of the model's training schedule (linear beta 1e-4..0.02).
    """

    t_star: int = 100
    nfe: int = 100
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.t_star < self.num_train_timesteps:
            raise ConfigError(f"t_star={self.t_star} must be in [1, {self.num_train_timesteps - 1}]")
        if not 1 <= self.nfe <= self.t_star or self.t_star % self.nfe:
            divisors = [d for d in range(1, self.t_star + 1) if self.t_star % d == 0]
            raise ConfigError(f"nfe={self.nfe} must divide t_star={self.t_star}; valid values: {divisors}")
        if self.num_train_timesteps % (self.t_star // self.nfe):
            raise ConfigError(
                f"stride t_star/nfe={self.t_star // self.nfe} must divide num_train_timesteps="
                f"{self.num_train_timesteps}"
            )

    @property
    def stride(self) -> int:
        return self.t_star // self.nfe

    @property
    def timesteps(self) -> list[int]:
        """Reverse timesteps ``[t_star, t_star - stride, ..., 0]`` (``nfe + 1`` entries)."""
        return list(range(self.t_star, -1, -self.stride))


class TruncatedDiffusionPurifier(Defense):
    """Base for DDPM/DDIM purification; subclasses build the scheduler and one reverse step."""

    config_cls = TruncatedDiffusionConfig

    def __init__(self, config: TruncatedDiffusionConfig, unet: torch.nn.Module) -> None:
        super().__init__(config)
        self.unet = unet.eval().requires_grad_(False)

    @functools.cached_property
    def scheduler(self) -> Any:
        """The diffusers scheduler, built on first use (a defense's card, which the site renders,
        needs none: building one imports diffusers, ~4 s)."""
        return self.make_scheduler(self.config)

    # -- subclass hooks -------------------------------------------------------------
    def make_scheduler(self, config: TruncatedDiffusionConfig) -> Any:
        raise NotImplementedError

    def reverse_stochastic_steps(self) -> int:
        """How many reverse steps consume a ``reverse`` noise tensor."""
        raise NotImplementedError

    def reverse_step(
        self, eps: torch.Tensor, t: int, prev_t: int, x: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """x_t -> x_prev_t given the predicted noise ``eps`` (and this step's noise, if any)."""
        raise NotImplementedError

    # -- Defense interface ----------------------------------------------------------
    @property
    def forward_scale(self) -> float:
        """sqrt(ᾱ_{t*}): the forward diffusion's Jacobian (x_t = sqrt(ᾱ)(2x − 1) + …, output (x̂ + 1)/2)."""
        return float(self.scheduler.alphas_cumprod[self.config.timesteps[0]]) ** 0.5

    def surrogate(self, steps: int) -> TruncatedDiffusionPurifier:
        """The same chain respaced to ``steps`` reverse steps (``nfe``), same network."""
        import dataclasses

        if steps == self.config.nfe:
            return self
        return type(self)(dataclasses.replace(self.config, nfe=steps), self.unet)

    @property
    def network_calls(self) -> int:
        return len(self.config.timesteps)

    @property
    def nfe(self) -> int:
        return self.config.nfe

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        return {
            "forward": StreamSpec(1, tuple(sample_shape)),
            "reverse": StreamSpec(self.reverse_stochastic_steps(), tuple(sample_shape)),
        }

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        timesteps = self.config.timesteps
        marks = checkpointed_steps(checkpoint, len(timesteps))
        x_d = 2 * x - 1
        t_star = torch.tensor([timesteps[0]], device=x.device)
        sample = self.scheduler.add_noise(x_d, noise.step("forward", 0), t_star)  # Eq. 2
        reverse = noise["reverse"]
        k = 0
        for i, t in enumerate(timesteps):
            prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            step_noise = None
            if t > 0 and reverse.shape[0] > 0:
                step_noise = reverse[k]
                k += 1
            sample = run_step(self._denoise_step, sample, step_noise, t, prev_t, checkpoint=marks[i])
        return ((sample + 1) / 2).clamp(0, 1)

    def _denoise_step(
        self, sample: torch.Tensor, step_noise: torch.Tensor | None, t: int, prev_t: int
    ) -> torch.Tensor:
        t_batch = torch.full((sample.shape[0],), t, device=sample.device, dtype=torch.long)
        eps = self.unet(sample, t_batch).sample
        return self.reverse_step(eps, t, prev_t, sample, step_noise)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def pretrained(cls, dataset: str, config: TruncatedDiffusionConfig) -> TruncatedDiffusionPurifier:
        from bench.zoo.hub import load_network
        from bench.zoo.toy import TOY_TRAIN_TIMESTEPS

        if dataset == "toy" and config.num_train_timesteps != TOY_TRAIN_TIMESTEPS:
            raise ConfigError(f"the toy DDPM was trained with num_train_timesteps={TOY_TRAIN_TIMESTEPS}, "
                              f"got {config.num_train_timesteps}")
        return cls(config, load_network(cls, dataset, config))

    @classmethod
    def card_instance(cls, config: TruncatedDiffusionConfig) -> TruncatedDiffusionPurifier:
        # the card reads only the config's step counts: no U-Net (building one imports diffusers);
        # subclasses with more constructor arguments (a guide, a classifier) build their test instance
        if cls.__init__ is not TruncatedDiffusionPurifier.__init__:
            return cls.for_testing(config)
        return cls(config, torch.nn.Identity())

    @classmethod
    def for_testing(
        cls, config: TruncatedDiffusionConfig | None = None, channels: int = 1, size: int = 8
    ) -> TruncatedDiffusionPurifier:
        from bench.zoo.toy import tiny_unet

        return cls(config or TruncatedDiffusionConfig(t_star=10, nfe=5), tiny_unet(channels, size))
