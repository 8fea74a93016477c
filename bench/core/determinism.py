"""Deterministic kernels and the run-time recomputation self-check.

Exact gradients under checkpointing assume that recomputing a step gives bitwise the same
result. On CPU that holds; on CUDA some kernels (atomics in cuDNN/cuBLAS reductions) do not
guarantee it — DiffBreak measured relative gradient errors of ~7e-5 between a forward pass and
its recomputation. So attacks run with ``torch.use_deterministic_algorithms(True)`` and cuDNN
deterministic by default (``--nondeterministic`` opts out; the choice is recorded with the run),
and every run recomputes one gradient before anything is stored and fails loudly if the two
results differ.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from bench.core.errors import BenchError

log = logging.getLogger(__name__)


class NondeterminismError(BenchError):
    """Recomputing the same gradient gave a different result."""


def configure(device: torch.device, deterministic: bool) -> dict[str, Any]:
    """Switch deterministic algorithms on (or off) for a run on ``device``; returns what to record.
    CPU kernels are left alone (they are deterministic at a fixed thread count, which the
    self-check confirms per run); the global switches are only set for CUDA."""
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
    return {"deterministic": deterministic}


def self_check(target: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Compute the gradient of one attacker draw of the first sample twice, under the run's memory
    plan (so a checkpointed chain is recomputed in each backward pass); raise
    :class:`NondeterminismError` if they differ at all."""
    sub = target.subset(target.sample_ids[:1])
    x1, y1 = x[:1], y[:1]
    noise, n = sub.attack_noise(x1, "self-check", 1)
    first, _, _ = sub.per_draw_gradients(x1, y1, noise, n)
    second, _, _ = sub.per_draw_gradients(x1, y1, noise, n)
    difference = float((first - second).abs().max())
    if difference != 0.0 or not torch.isfinite(first).all():
        raise NondeterminismError(
            f"the gradient of sample {sub.sample_ids[0]} differs between two identical computations (max |Δ| = "
            f"{difference:.3g}); exact replay is not possible on this device/configuration. Run with deterministic "
            "algorithms (the default; drop --nondeterministic) or report the kernel that is not deterministic")
    target.reset_cost()
    log.info("self-check passed: recomputed gradient identical (checkpoint=%s)", target.grad_plan.checkpoint)
    return {"self_check": "identical gradient on recomputation"}
