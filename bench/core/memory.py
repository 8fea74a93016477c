"""Memory planning: when to checkpoint reverse steps and how many samples fit in a chunk.

Activation memory is estimated device-independently by counting the bytes autograd saves
for backward (``torch.autograd.graph.saved_tensors_hooks``) on a probe of 1 and 2 samples;
the difference is the per-sample cost (weights and other shared tensors cancel out).
"""

from __future__ import annotations

import math
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


CPU_BUDGET_CAP = 4 * 2**30  # the default CPU activation budget never exceeds 4 GiB: the machine stays usable


def default_budget(device: torch.device) -> int:
    """80% of free GPU memory on CUDA; on CPU the smaller of half the physical memory and 4 GiB."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        return min(int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2), CPU_BUDGET_CAP)
    except (ValueError, OSError, AttributeError):  # not available on this platform
        return CPU_BUDGET_CAP


@dataclass(frozen=True)
class MemoryPlan:
    checkpoint: float | bool  # the fraction of reverse steps checkpointed (0 = none, 1 = all)
    chunk_size: int
    bytes_per_sample: int


def _zero_noise(model: DefendedClassifier, batch: int, sample_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> NoiseBatch:
    spec = model.defense.noise_spec(sample_shape)
    return NoiseBatch({k: torch.zeros((s.steps, batch, *s.shape), device=device, dtype=dtype) for k, s in spec.items()})


def saved_bytes_per_sample(
    model: DefendedClassifier, sample_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> int:
    """Bytes autograd keeps per sample for one full purify+classify forward without checkpointing
    (each saved storage counted once: several ops often save the same tensor)."""
    saved = {1: 0, 2: 0}
    for batch in saved:
        seen: set[int] = set()

        def pack(tensor: torch.Tensor, batch: int = batch, seen: set[int] = seen) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                saved[batch] += storage.nbytes()
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
    """Choose the checkpointed fraction of reverse steps and the chunk size for gradient passes
    over ``batch`` stacked samples.

    Memory per sample with k of the chain's S reverse steps checkpointed is modelled as
    MARGIN · (full − k·(full/S − 2·state)) (+ two steps' activations of recomputation room when every
    step is checkpointable, as in GDMP): a checkpointed step keeps only its input (and noise)
    instead of its activations; ``full`` is the measured saved bytes of the plain chain, S and the
    number of steps ``purify`` can checkpoint are counted on a probe, and MARGIN covers what the
    saved tensors do not (gradient buffers, one step's recomputation), measured in the tests.
    ``auto`` takes the smallest k whose stacked batch fits ``budget`` — passed on as the fraction
    k / checkpointable, spread evenly over the chain (:func:`bench.core.defense.checkpointed_steps`);
    only when checkpointing every step does not fit are the samples split into chunks, the last resort.
    """
    if policy not in CHECKPOINT_POLICIES:
        raise ConfigError(f"checkpoint policy {policy!r} is not one of {', '.join(CHECKPOINT_POLICIES)}")
    full = saved_bytes_per_sample(model, sample_shape, device, dtype)
    steps, markable = reverse_steps(model, sample_shape, device, dtype)
    state = int(torch.tensor([], dtype=dtype).element_size() * torch.Size(sample_shape).numel()) * max(model.defense.paths, 1)
    per_step = full / max(steps, 1)

    # recomputing a checkpointed step needs its activations and their gradients again; a chain that
    # keeps its last step un-checkpointed has that room already, one that checkpoints every step does not
    working_set = 2 * per_step if markable == steps else 0.0

    def need(k: int) -> int:  # modelled peak bytes per sample with k steps checkpointed
        return max(int(MARGIN * (full - k * max(per_step - 2 * state, 0.0)) + (working_set if k else 0.0)), 1)

    if policy == "never" or markable == 0:
        k = 0
    elif policy == "always":
        k = markable
    else:
        k = next((j for j in range(markable + 1) if need(j) * batch <= budget), markable)
    fraction = k / markable if markable else 0.0
    return MemoryPlan(fraction, max(1, min(batch, budget // need(k))), need(k))


MARGIN = 1.25  # measured peak / modelled saved bytes stays below this (tests/test_toy_and_memory.py)


def reverse_steps(model: DefendedClassifier, sample_shape: tuple[int, ...], device: torch.device,
                  dtype: torch.dtype) -> tuple[int, int]:
    """(reverse steps ``purify`` runs, how many of them it would checkpoint with f = 1), counted on
    a no-grad probe of one sample."""
    from bench.core.defense import counting_steps

    x = torch.full((1, *sample_shape), 0.5, device=device, dtype=dtype)
    with torch.no_grad(), counting_steps() as counts:
        model.defense.purify(x, _zero_noise(model, 1, sample_shape, device, dtype), checkpoint=1.0)
    return counts[0], counts[1]


def plan_inference(
    model: DefendedClassifier, sample_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, budget: int, batch: int
) -> MemoryPlan:
    """Chunk size for no-grad passes: only about one step's activations are alive at once."""
    full = saved_bytes_per_sample(model, sample_shape, device, dtype)
    per_sample = max(full // max(model.defense.network_calls, 1), 1) * 2
    return MemoryPlan(False, max(1, min(batch, budget // per_sample)), per_sample)
