"""Memory planning: when to checkpoint reverse steps and how many samples fit in a chunk.

Activation memory is estimated device-independently by counting the bytes autograd saves
for backward (``torch.autograd.graph.saved_tensors_hooks``) on a probe of 1 and 2 samples;
the difference is the per-sample cost (weights and other shared tensors cancel out).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

import torch

from bench.core.defense import DefendedClassifier
from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch

CheckpointPolicy = Literal["never", "always", "auto"]
CHECKPOINT_POLICIES: tuple[str, ...] = ("never", "always", "auto")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """``"4GiB"`` -> 4294967296; accepts B, kB, MB, GB, KiB, MiB, GiB (case-insensitive)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"memory size {text!r} is not understood; use e.g. 512MiB, 4GiB or 8GB")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"memory size {text!r} must be positive")
    return value


def default_budget(device: torch.device) -> int:
    """80% of free GPU memory on CUDA; half of the physical memory on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return 4 * 2**30


@dataclass(frozen=True)
class MemoryPlan:
    checkpoint: bool
    chunk_size: int
    bytes_per_sample: int


def _zero_noise(model: DefendedClassifier, batch: int, sample_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> NoiseBatch:
    spec = model.defense.noise_spec(sample_shape)
    return NoiseBatch({k: torch.zeros((s.steps, batch, *s.shape), device=device, dtype=dtype) for k, s in spec.items()})


def saved_bytes_per_sample(
    model: DefendedClassifier, sample_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> int:
    """Bytes autograd keeps per sample for one full purify+classify forward without checkpointing."""
    saved = {1: 0, 2: 0}
    for batch in saved:

        def pack(tensor: torch.Tensor, batch: int = batch) -> torch.Tensor:
            saved[batch] += tensor.numel() * tensor.element_size()
            return tensor

        x = torch.full((batch, *sample_shape), 0.5, device=device, dtype=dtype, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, _zero_noise(model, batch, sample_shape, device, dtype))
    return max(saved[2] - saved[1], 1)


def plan_gradient(
    model: DefendedClassifier,
    sample_shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    policy: str,
    budget: int,
    batch: int,
) -> MemoryPlan:
    """Choose checkpointing and the chunk size for gradient passes over ``batch`` stacked samples.

    ``auto`` checkpoints only if the un-checkpointed chain for the whole stacked batch would
    exceed ``budget``. With checkpointing, memory per sample is one reverse step's activations
    (during recomputation) plus the stored step inputs.
    """
    if policy not in CHECKPOINT_POLICIES:
        raise ConfigError(f"checkpoint policy {policy!r} is not one of {', '.join(CHECKPOINT_POLICIES)}")
    full = saved_bytes_per_sample(model, sample_shape, device, dtype)
    steps = max(model.defense.network_calls, 1)
    state_bytes = int(torch.tensor([], dtype=dtype).element_size() * torch.Size(sample_shape).numel())
    checkpointed = full // steps + 2 * steps * state_bytes
    use_checkpoint = policy == "always" or (policy == "auto" and full * batch > budget and steps > 1)
    per_sample = checkpointed if use_checkpoint else full
    return MemoryPlan(use_checkpoint, max(1, min(batch, budget // per_sample)), per_sample)


def plan_inference(
    model: DefendedClassifier, sample_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, budget: int, batch: int
) -> MemoryPlan:
    """Chunk size for no-grad passes: only about one step's activations are alive at once."""
    full = saved_bytes_per_sample(model, sample_shape, device, dtype)
    per_sample = max(full // max(model.defense.network_calls, 1), 1) * 2
    return MemoryPlan(False, max(1, min(batch, budget // per_sample)), per_sample)
