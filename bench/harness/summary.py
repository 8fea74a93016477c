"""The summary of a finished run, computed from its stored per-sample outcomes, and its typed view.

:func:`finalize_run` writes the summary into the run row (a JSON ``metrics`` column);
:class:`RunSummary` reads it back as typed values, so callers do not index nested dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.core.errors import StoreError
from bench.core.metrics import resubmission_curve, summarize, wilson_interval
from bench.harness.store import get_run, utcnow


@dataclass(frozen=True)
class Interval:
    """An accuracy with its 95% interval."""

    acc: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        return cls(float(data["acc"]), float(data["ci_low"]), float(data["ci_high"]))

    def __str__(self) -> str:
        return f"{self.acc:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}]"


@dataclass(frozen=True)
class Accuracies:
    """Expected (mean over the K draws), worst-of-K and majority-vote accuracy."""

    expected: Interval
    worst: Interval
    majority: Interval

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Accuracies:
        return cls(*(Interval.from_dict(data[key]) for key in ("expected", "worst", "majority")))


@dataclass(frozen=True)
class RobPoint:
    """Rob(M): accuracy under M independent resubmissions, with its interval."""

    m: int
    value: Interval


@dataclass(frozen=True)
class RunSummary:
    """A finished run's summary (n images x K draws)."""

    n: int
    draws: int
    clean: Accuracies
    robust: Accuracies
    rob_m: tuple[RobPoint, ...]
    attack_reported: Interval | None
    gradient_draws_per_sample: float | None
    forward_draws_per_sample: float | None

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> RunSummary:
        cost = metrics.get("cost_per_sample") or {}
        curve = (metrics.get("rob_m") or {}).get("adv") or []
        reported = metrics.get("attack_reported")
        return cls(n=int(metrics["n"]), draws=int(metrics["draws"]), clean=Accuracies.from_dict(metrics["clean"]),
                   robust=Accuracies.from_dict(metrics["robust"]),
                   rob_m=tuple(RobPoint(int(p["m"]), Interval.from_dict(p)) for p in curve),
                   attack_reported=Interval.from_dict(reported) if reported else None,
                   gradient_draws_per_sample=cost.get("gradient_draws"), forward_draws_per_sample=cost.get("forward_draws"))


def finalize_run(engine: Engine, run_id: str) -> dict[str, Any]:
    """Compute the summary from the stored sample rows and mark the run complete."""
    with Session(engine) as session, session.begin():
        run = get_run(session, run_id)
        rows = list(run.samples)
        if len(rows) != run.n_samples:
            raise StoreError(f"run {run_id} has {len(rows)} of {run.n_samples} samples stored; resume it first")
        labels = torch.tensor([r.label for r in rows])
        clean = summarize(labels, torch.tensor([r.clean_preds for r in rows]))
        robust = summarize(labels, torch.tensor([r.adv_preds for r in rows]))
        metrics = {"clean": clean, "robust": robust, "n": len(rows), "draws": run.eval_draws}
        metrics["rob_m"] = {part: resubmission_curve(
            [sum(int(p == r.label) for p in getattr(r, f"{part}_preds")) for r in rows], run.eval_draws)
            for part in ("clean", "adv")}
        spent = [r.attack_info for r in rows if r.attack_info and "gradient_draws" in r.attack_info]
        if len(spent) == len(rows):
            metrics["cost_per_sample"] = {key: sum(info.get(key, 0) for info in spent) / len(rows)
                                          for key in ("gradient_draws", "forward_draws")}
        reported = [r.attack_info["reported_correct"] for r in rows if r.attack_info and "reported_correct" in r.attack_info]
        if len(reported) == len(rows):
            # what the attack itself concluded (e.g. aa_rand's one-draw verdict), beside our evaluation
            value = sum(reported) / len(rows)
            low, high = wilson_interval(value, len(rows))
            metrics["attack_reported"] = {"acc": value, "ci_low": low, "ci_high": high, "n": len(rows)}
        run.metrics = metrics
        run.clean_acc, run.clean_ci_low, run.clean_ci_high = (clean["expected"][k] for k in ("acc", "ci_low", "ci_high"))
        run.robust_acc, run.robust_ci_low, run.robust_ci_high = (robust["expected"][k] for k in ("acc", "ci_low", "ci_high"))
        run.status, run.error = "complete", None
        run.finished_at = run.updated_at = utcnow()
    return metrics


