"""Per-sample attack losses on logits: ``loss(logits (N, classes), labels (N,)) -> (N,)``.

Larger is better for the attacker. ``cw`` and ``dlr`` are written here (a few lines each)
because the libraries only expose them as methods of their attack classes:

- ``ce``: cross-entropy.
- ``cw``: Carlini & Wagner's margin max_{i≠y} z_i − z_y without κ or clamp, as DiffHammer's
  ``utils.py`` uses it (positive exactly when the sample is misclassified).
- ``dlr``: AutoAttack's untargeted difference-of-logits ratio (Croce & Hein 2020, Eq. 6),
  −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12) with z_π the sorted logits, as pyautoattack's
  ``APGDAttack.dlr_loss`` computes it (needs ≥ 3 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.errors import UnknownNameError


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def cw_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    other = (logits - 1e9 * onehot).amax(dim=-1)
    return other - (logits * onehot).sum(dim=-1)


def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    ranked, order = logits.sort(dim=-1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_true = (order[:, -1] == labels).to(logits.dtype)
    best_other = ranked[:, -2] * top_is_true + ranked[:, -1] * (1 - top_is_true)
    return -(true - best_other) / (ranked[:, -1] - ranked[:, -3] + 1e-12)


LOSSES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}


def get_loss(name: str):  # type: ignore[no-untyped-def]
    """The loss called ``name`` (one of ``LOSSES``)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UnknownNameError(f"Unknown loss {name!r}. Valid losses: {', '.join(LOSSES)}.") from None
