"""Guidance gradients inside a purifier (GDMP's SSIM, COUP's confidence, RCG's robust classifier)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def input_gradient(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """∇_x of the scalar ``objective(x)``, same shape as ``x``. Computed even under ``no_grad``
    (evaluation still guides); when ``x`` is part of an attacked graph the gradient is taken with
    ``create_graph``, so an attack differentiates through the guidance exactly (second-order terms)."""
    with torch.enable_grad():
        differentiable = x.requires_grad
        x_in = x if differentiable else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x_in), x_in, create_graph=differentiable)
    return grad
