"""Any existing purifier, evaluated as it is: a callable that draws its own randomness.

Published DBP code draws noise with ``torch.randn`` or lets a diffusers scheduler's ``step`` draw
it. :class:`ForeignPurifier` runs such a callable under torch's RNG, seeded **per sample and per
draw** from the noise contract (:mod:`bench.core.noise`): its single stream ``torch_rng`` holds,
for every sample and draw, the bits of a 64-bit seed. So the guarantees that matter still hold:

- outcomes do not depend on the batch, the shard or the order of samples;
- a record re-runs sample by sample (``Result.verify`` / ``bench verify`` for plug-ins);
- exact gradients replay under checkpointing: the seeded call is one step, re-seeded on
  recomputation;
- ``white`` (fresh seeds for every attacker and evaluation draw) and ``dw_both`` (the evaluation's
  seeds known to the attacker: the purifier is deterministic to it) work unchanged.

What cannot hold: ``dw_fwd`` and ``dw_semi`` need the forward noise (or noise sets) as named
streams the harness can fix separately, and a callable's randomness is one opaque stream; they are
refused with that reason.

Two calling conventions:

- **per sample** (any ``fn(x) -> x_pur``): each sample is purified alone inside
  ``torch.random.fork_rng`` after ``torch.manual_seed(its seed)`` (CPU and CUDA);
- **batched** (``fn(x, generator=[g_1, …, g_B])``, e.g. diffusers' ``randn_tensor`` and
  ``scheduler.step(..., generator=...)`` accept one generator per batch row): one call, each row
  drawing from its own seeded generator. Used when the callable has a ``generator`` parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.core.defense import Checkpoint, Defense, DefenseConfig, checkpointed_steps, run_step
from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch, StreamSpec

SEED_STREAM = "torch_rng"


@dataclass(frozen=True)
class ForeignConfig(DefenseConfig):
    """A foreign purifier has no options of ours; ``label`` names it in the store."""

    label: str = "purifier"


def seeds_from_noise(noise: torch.Tensor) -> list[int]:
    """63-bit seeds from the stream's (B, 2) float32 normals: their bit patterns, concatenated.
    (The values are float32 draws, so a float64 run converts them back exactly.)"""
    bits = noise.detach().to(device="cpu", dtype=torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return [int(((int(hi) & 0xFFFFFFFF) << 31 ^ (int(lo) & 0xFFFFFFFF)) & (2**63 - 1)) for hi, lo in bits.tolist()]


def accepts_generator(fn: Callable[..., Any]) -> bool:
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        return "generator" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


class ForeignPurifier(Defense):
    """A callable ``fn(x) -> x_purified`` on batches in [0, 1] that draws its own randomness,
    deployed under the noise contract (see the module docstring).

    Args:
        fn: the purifier (a function or an ``nn.Module``); it must map (B, C, H, W) in [0, 1] to
            (B, C, H, W) and be differentiable wherever gradient attacks are to run.
        label: its name in the store (``foreign:<label>``).
    """

    name = "foreign"
    description = "a purifier evaluated as it is, its randomness seeded per sample by the harness"
    config_cls = ForeignConfig

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], label: str | None = None) -> None:
        super().__init__(ForeignConfig(label=label or getattr(fn, "__name__", type(fn).__name__)))
        self.fn = fn
        if isinstance(fn, nn.Module):
            self.module = fn  # registered, so .to(device, dtype) reaches its weights
        self.batched = accepts_generator(fn)

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        return {SEED_STREAM: StreamSpec(1, (2,))}

    def check_setting(self, setting: Any) -> None:
        if setting.kind in ("dw_fwd", "dw_semi"):
            raise ConfigError(
                f"setting {setting.name} needs the defense's noise as named streams (dw_fwd fixes the forward "
                "diffusion alone, dw_semi one of K noise sets); a foreign purifier draws its randomness itself, "
                "one opaque stream seeded per sample. Use white or dw_both, or port it to a plug-in with named "
                "streams (CONTRIBUTING.md)")

    @property
    def clamps_output(self) -> bool:
        return False

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        seeds = noise[SEED_STREAM][0]  # (B, 2): the seed bits travel as a tensor, so checkpointing replays them
        mark = checkpointed_steps(checkpoint, 1, keep_last=False)[0]
        if self.batched:
            return run_step(self._batched, x, seeds, checkpoint=mark)
        return torch.cat([run_step(self._one, x[b : b + 1], seeds[b : b + 1], checkpoint=mark)
                          for b in range(x.shape[0])])

    def _batched(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        generators = [torch.Generator(device=x.device).manual_seed(s) for s in seeds_from_noise(seeds)]
        return self._checked(self.fn(x, generator=generators), x)

    def _one(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seeds_from_noise(seeds)[0])
            return self._checked(self.fn(x), x)

    @staticmethod
    def _checked(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ConfigError(f"the foreign purifier returned {getattr(out, 'shape', type(out).__name__)} for an input "
                              f"of shape {tuple(x.shape)}; it must return a tensor of the input's shape")
        return out

    @classmethod
    def pretrained(cls, dataset: str, config: Any) -> Defense:  # pragma: no cover - built from an object
        raise ConfigError("a foreign purifier is built from a callable: bench.evaluate(my_purifier, ...)")

    @classmethod
    def for_testing(cls, config: Any | None = None, channels: int = 1, size: int = 8) -> Defense:
        return cls(lambda x: (x + 0.05 * torch.randn_like(x)).clamp(0, 1), label="noise")
