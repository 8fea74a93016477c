"""Memory planning: when to checkpoint reverse steps and how many samples fit in a chunk.

Activation memory is estimated device-independently by counting the bytes autograd saves
for backward (``torch.autograd.graph.saved_tensors_hooks``) on a probe of 1 and 2 samples;
the difference is the per-sample cost (weights and other shared tensors cancel out).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from bench.core.defense import DefendedClassifier
from bench.core.errors import ConfigError
from bench.core.memtrack import PeakMemory
from bench.core.noise import NoiseBatch

logger = logging.getLogger(__name__)

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
        kept: list[torch.Tensor] = []  # alive until the probe ends, so no storage is reused and counted twice

        def pack(tensor: torch.Tensor, batch: int = batch, seen: set[int] = seen, kept: list = kept) -> int:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                saved[batch] += storage.nbytes()
            # the graph keeps an index, the tensor stays in ``kept``: handed back to the graph, the
            # tensors held the graph that held them, a cycle through C++ that Python's collector
            # cannot see, and every run leaked the probe's whole graph (22,000 tensors on dp_ddpm).
            # (Guided defenses differentiate inside their forward, so unpacking must work.)
            kept.append(tensor)
            return len(kept) - 1

        x = torch.full((batch, *sample_shape), 0.5, device=device, dtype=dtype, requires_grad=True)
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, kept.__getitem__):
                model(x, _zero_noise(model, batch, sample_shape, device, dtype))
        finally:
            kept.clear()  # the graph's unpack hook holds ``kept``: emptied, nothing of the probe stays
    return max(saved[2] - saved[1], 1)


def plan_gradient(
    model: DefendedClassifier,
    sample_shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    policy: str,
    budget: int,
    batch: int,
    measure: bool | Callable[[int, float], float] = True,
) -> MemoryPlan:
    """Choose the checkpointed fraction of reverse steps and the chunk size for gradient passes
    over ``batch`` stacked samples.

    Memory per sample with k of the chain's S reverse steps checkpointed is modelled as
    MARGIN · (full − k·(full/S − 2·state)) (+ two steps' activations of recomputation room when every
    step is checkpointable, as in GDMP): a checkpointed step keeps only its input (and noise)
    instead of its activations; ``full`` is the measured saved bytes of the plain chain, S and the
    number of steps ``purify`` can checkpoint are counted on a probe, and MARGIN covers what the
    saved tensors do not (gradient buffers, one step's recomputation), measured in the tests.

    ``auto``: when the whole stacked batch fits without checkpointing, that is the plan. Otherwise
    there are two ways to save memory, and their cost depends on the network and device: smaller
    chunks recompute nothing but run slower per sample (the toy UNet: 445 µs/image at 40 stacked
    images, 133 at 640), checkpointing a fraction f of the steps adds about f · fwd/(fwd+bwd). The
    candidates are equal parts of the batch (batch, batch/2, batch/4, …, and the largest part that
    fits with every step checkpointed), each with the smallest k that fits (the fastest plan at
    that chunk size), down to the first that needs no checkpointing; with
    ``measure`` each candidate's gradient pass is timed on the device (zero inputs; the fastest of
    PLAN_TIMING_PASSES after a warm-up; a callable ``(chunk, fraction) -> seconds per sample`` replaces the timing)
    and the fastest per sample is chosen. Checkpointed steps are spread evenly over
    the chain (:func:`bench.core.defense.checkpointed_steps`). Every candidate fits ``budget`` by
    the model; when even k = all does not fit at one sample, one-sample chunks are the last resort.
    When timing on the device (``measure=True``), a chunk that would fit with less checkpointing
    without the MARGIN is also tried at that smaller k, and admitted only if the peak of its
    warm-up pass, measured (:class:`PeakMemory` on CPU, the allocator's peak on CUDA), fits
    VERIFIED_SHARE of ``budget``: MARGIN bounds every network, and most chains need less.
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

    def need(k: int, margin: float = MARGIN) -> int:  # modelled peak bytes per sample with k steps checkpointed
        return max(int(margin * (full - k * max(per_step - 2 * state, 0.0)) + (working_set if k else 0.0)), 1)

    def plan(k: int, chunk: int, per_sample: int | None = None) -> MemoryPlan:
        return MemoryPlan(k / markable if markable else 0.0, max(1, min(batch, chunk)), per_sample or need(k))

    def smallest_k(chunk: int, margin: float = MARGIN) -> int | None:
        return next((j for j in range(markable + 1) if need(j, margin) * chunk <= budget), None)

    if policy == "never" or markable == 0:
        if need(0) > budget:
            raise ConfigError(f"--memory-budget {format_bytes(budget)} cannot hold one sample's gradient pass without "
                              f"checkpointing (that needs {format_bytes(need(0))}); give more or use --checkpoint auto")
        return plan(0, budget // need(0))
    if policy == "always":
        return plan(markable, budget // need(markable))
    # equal parts of the batch: halvings, and the largest chunk that fits with every step checkpointed
    parts = {2**i for i in range(max(batch - 1, 1).bit_length() + 1)}
    parts.add(-(-batch // max(budget // need(markable), 1)))
    candidates = []  # (chunk, smallest k that fits it by the model, whether its peak must be measured)
    for chunk in sorted({-(-batch // d) for d in parts if d <= batch}, reverse=True):
        k = smallest_k(chunk)
        # MARGIN is an upper bound over networks; the plain saved bytes are what most chains need.
        # When measuring, a plan that fits only without the margin is tried too, and admitted only
        # if its measured peak fits the budget (below).
        optimistic = smallest_k(chunk, 1.0) if measure is True else None
        if optimistic is not None and (k is None or optimistic < k):
            candidates.append((chunk, optimistic, True))
        if k is not None:
            candidates.append((chunk, k, False))
            if k == 0:
                break  # smaller chunks recompute nothing either and only run slower
    safe = [(c, k) for c, k, verify in candidates if not verify]
    if not safe:
        if need(markable) > budget:
            raise ConfigError(
                f"--memory-budget {format_bytes(budget)} cannot hold one sample's gradient pass even with every "
                f"step checkpointed (that needs {format_bytes(need(markable))}); give at least that much")
        return plan(markable, 1)
    if len(candidates) == 1 or not measure:
        return plan(safe[0][1], safe[0][0])
    timed = []
    for c, k, verify in candidates:
        if callable(measure):
            timed.append((measure(c, k / markable), c, k, None))
            continue
        seconds, peak = seconds_per_sample(model, sample_shape, device, dtype, c, k / markable, track_peak=verify)
        if verify and peak > VERIFIED_SHARE * budget:
            logger.info("gradient plan (chunk %d, %d steps checkpointed) measured %d bytes > budget %d: dropped",
                        c, k, peak, budget)
            continue
        timed.append((seconds, c, k, max(peak // c, 1) if verify else None))
    logger.info("gradient plan candidates (s/sample, chunk, checkpointed steps of %d): %s", markable,
                ", ".join(f"({t:.4g}, {c}, {k})" for t, c, k, _ in timed))
    _, chunk, k, per_sample = min(timed, key=lambda row: row[:3])
    return plan(k, chunk, per_sample)


def seconds_per_sample(model: DefendedClassifier, sample_shape: tuple[int, ...], device: torch.device,
                       dtype: torch.dtype, chunk: int, fraction: float, track_peak: bool = False) -> tuple[float, int]:
    """Measured time per sample of one purify+classify gradient over ``chunk`` stacked samples with
    ``fraction`` of the steps checkpointed (zero inputs and noise; the fastest of
    ``PLAN_TIMING_PASSES`` passes after a warm-up, so allocation and kernel set-up are not counted),
    and with ``track_peak`` the warm-up's peak bytes (the tracker :class:`PeakMemory`
    on CPU, the allocator's peak on CUDA; 0 otherwise)."""
    import contextlib
    import time

    x = torch.full((chunk, *sample_shape), 0.5, device=device, dtype=dtype, requires_grad=True)
    noise = _zero_noise(model, chunk, sample_shape, device, dtype)

    def gradient() -> None:
        torch.autograd.grad(model(x, noise, checkpoint=fraction).logsumexp(-1).sum(), x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    peak = 0
    if track_peak and device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        gradient()
        peak = torch.cuda.max_memory_allocated(device) - before
    else:  # the first pass warms up (allocation, kernel set-up)
        with PeakMemory() if track_peak else contextlib.nullcontext() as tracker:
            gradient()
        peak = tracker.peak if track_peak else 0
    times = []
    for _ in range(PLAN_TIMING_PASSES):
        started = time.perf_counter()
        gradient()
        times.append(time.perf_counter() - started)
    return min(times) / chunk, peak


# Timed passes per candidate plan after the warm-up; the fastest counts. One pass misjudged the
# toy's candidates by up to 26% on this 2-core machine (`bench perf`, planner vs sweep).
PLAN_TIMING_PASSES = 2


# A plan admitted by measurement keeps this share of the budget: the probe (zero inputs, logsumexp
# loss) and a real pass (the attack's loss, its inputs) allocate alike but not to the byte.
VERIFIED_SHARE = 0.97

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
    """Chunk size for no-grad passes: only about one step's activations are alive at once, for
    all of a sample's paths together (GDMP's paths and a vote's purifications run stacked)."""
    full = saved_bytes_per_sample(model, sample_shape, device, dtype)
    calls_per_path = max(model.defense.network_calls // max(model.defense.paths, 1), 1)
    per_sample = max(full // calls_per_path, 1) * 2
    if per_sample > budget:
        raise ConfigError(f"--memory-budget {format_bytes(budget)} cannot hold one sample's purification (that needs "
                          f"{format_bytes(per_sample)}); give at least that much")
    return MemoryPlan(False, max(1, min(batch, budget // per_sample)), per_sample)


def format_bytes(value: float) -> str:
    """``3.1 GiB``, ``512 KiB``, ``900 B``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{int(value)} B"


def noise_bytes_per_draw(model: DefendedClassifier, sample_shape: tuple[int, ...]) -> int:
    """Bytes of the noise one draw of one sample needs (float32, every stream; a vote's N
    purifications included), computed from the noise spec without allocating it."""
    total = 0
    for spec in model.defense.noise_spec(tuple(sample_shape)).values():
        total += spec.steps * int(torch.Size(spec.shape).numel()) * 4
    return total


ROW_OVERHEAD = 1536  # bytes per noise tensor beyond its data (the per-sample tensor before stacking, generator), measured


def unchunked_bytes_per_draw(model: DefendedClassifier, sample_shape: tuple[int, ...]) -> int:
    """What one stacked draw of one sample holds outside the memory plan's chunks: its noise,
    generated for the whole stacked batch at once (twice while it is stacked, plus a fixed overhead
    per stream tensor, measured), and its copy of the input, gradient and output."""
    streams = [spec for spec in model.defense.noise_spec(tuple(sample_shape)).values() if spec.steps]
    sample = int(torch.Size(sample_shape).numel()) * 4
    return 2 * noise_bytes_per_draw(model, sample_shape) + ROW_OVERHEAD * len(streams) + 3 * sample


def check_draw_counts(model: DefendedClassifier, sample_shape: tuple[int, ...], budget: int, batch: int,
                      draws: dict[str, int]) -> None:
    """Refuse, before anything runs, draw counts that cannot fit ``budget``: a run stacks
    ``batch`` samples x draws rows, whose noise (and input copies) exist all at once, outside the
    chunks the memory plan can shrink. ``draws``: rows per sample, by the option that sets them
    (e.g. ``{"--setting dw_semi:K": K, "--draws": K_eval}``); the error names the largest value that
    fits (and that a smaller --batch-size helps)."""
    row = noise_bytes_per_draw(model, sample_shape)
    votes = getattr(model.defense, "votes", 1)
    if row > budget:
        largest = votes * budget // row
        raise ConfigError(
            f"one purification's noise needs {format_bytes(row)}, more than the memory budget "
            f"{format_bytes(budget)}" + (f": votes={votes} is too many; the largest that fits is {largest}"
                                         if votes > 1 else ""))
    per_draw = unchunked_bytes_per_draw(model, sample_shape)
    if per_draw > budget:
        raise ConfigError(f"the memory budget {format_bytes(budget)} cannot hold one sample's noise draw and its "
                          f"copies ({format_bytes(per_draw)}); give at least that much")
    for option, count in draws.items():
        need = batch * count * per_draw
        if need > budget:
            raise ConfigError(
                f"{option} stacks {count} draws for each of {batch} samples ({format_bytes(need)} of noise and "
                f"copies, outside what the memory plan can chunk), more than the memory budget "
                f"{format_bytes(budget)}; the largest that fits is {max(budget // (batch * per_draw), 0)} at this "
                f"batch size ({budget // per_draw} with --batch-size 1)")
