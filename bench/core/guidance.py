"""Guidance gradients inside a purifier (GDMP's SSIM, COUP's confidence, RCG's robust classifier)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch

# set by the attacker's gradient pass under ``gradient=detach_guidance`` (bench.core.gradient_modes)
_DETACHED: contextvars.ContextVar[bool] = contextvars.ContextVar("guidance_detached", default=False)


@contextlib.contextmanager
def detached_guidance() -> Iterator[None]:
    """Inside this block every :func:`input_gradient` is a constant of the attacked graph: its value
    is unchanged, its derivative with respect to the input (the second-order terms) is dropped."""
    token = _DETACHED.set(True)
    try:
        yield
    finally:
        _DETACHED.reset(token)


def input_gradient(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """∇_x of the scalar ``objective(x)``, same shape as ``x``. Computed even under ``no_grad``
    (evaluation still guides); when ``x`` is part of an attacked graph the gradient is taken with
    ``create_graph``, so an attack differentiates through the guidance exactly (second-order terms)."""
    if _DETACHED.get():
        x = x.detach()
    with torch.enable_grad():
        differentiable = x.requires_grad
        x_in = x if differentiable else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x_in), x_in, create_graph=differentiable)
    return grad


def guidance_term(gradient: torch.Tensor) -> torch.Tensor:
    """A guidance gradient computed in closed form (GDMP's MSE guidance): itself, or a constant of the
    attacked graph inside :func:`detached_guidance`, as :func:`input_gradient` is there."""
    return gradient.detach() if _DETACHED.get() else gradient
