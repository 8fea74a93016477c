"""No purification: the classifier alone (the undefended baseline row)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.defense import Checkpoint, Defense, DefenseConfig, register_defense
from bench.core.noise import NoiseBatch, StreamSpec


@dataclass(frozen=True)
class NoneConfig(DefenseConfig):
    """No options."""


@register_defense("none")
class NoDefense(Defense):
    description = "no purification: the classifier alone"
    paper = "-"
    license = "-"
    config_cls = NoneConfig

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        return {}

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        return x

    @classmethod
    def pretrained(cls, dataset: str, config: NoneConfig) -> NoDefense:
        return cls(config)

    @classmethod
    def for_testing(cls, config: NoneConfig | None = None, channels: int = 1, size: int = 8) -> NoDefense:
        return cls(config or NoneConfig())
