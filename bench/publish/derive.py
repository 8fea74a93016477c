"""Every summary a record states, derived from its per-sample, per-draw outcomes.

Export writes these values and validation recomputes them, so a record cannot state a number its
outcomes do not give. One function (:func:`derive`) serves both. Intervals are
:func:`bench.core.metrics.mean_interval` (95% Wilson over the n images) for every accuracy.

Records of schema 1 carry only per-sample counts: what counts determine (expected, worst-of-K,
Rob(M) and every interval) is derived; the majority vote needs the draws' classes, so only its
interval is derived from its stated value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.core.metrics import resubmission_estimates, wilson_interval, wilson_intervals


@dataclass(frozen=True)
class Outcomes:
    """One record's per-sample outcomes. Arrays: labels (n,); *_preds (n, K) predicted classes
    (None in schema 1); *_correct (n,) correct draws; reported (n,) the attack's own per-sample
    verdicts; gradient/forward_draws (n,) the attack's cost per sample (None when not recorded)."""

    labels: np.ndarray
    clean_correct: np.ndarray
    adv_correct: np.ndarray
    draws: int
    clean_preds: np.ndarray | None = None
    adv_preds: np.ndarray | None = None
    select_preds: np.ndarray | None = None
    reported: np.ndarray | None = None
    gradient_draws: np.ndarray | None = None
    forward_draws: np.ndarray | None = None

    @classmethod
    def from_predictions(cls, labels: Any, clean_preds: Any, adv_preds: Any, select_preds: Any = None,
                         reported: Any = None, gradient_draws: Any = None, forward_draws: Any = None) -> Outcomes:
        y = np.asarray(labels, dtype=np.int64)
        clean, adv = np.asarray(clean_preds, dtype=np.int64), np.asarray(adv_preds, dtype=np.int64)
        optional = [None if v is None else np.asarray(v) for v in (select_preds, reported, gradient_draws, forward_draws)]
        return cls(y, (clean == y[:, None]).sum(1), (adv == y[:, None]).sum(1), int(clean.shape[1]), clean, adv,
                   *optional)


def majority_correct(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(n,) whether the most frequent class of each row of (n, K) ``preds`` is the label (ties go
    to the smallest class, as :func:`bench.core.metrics.majority_vote`)."""
    from bench.publish.consistency import majority_correct_rows

    return majority_correct_rows(np.asarray(labels)[None], np.asarray(preds)[None])[0]


def _interval(value: float, n: int) -> dict[str, float]:
    low, high = wilson_interval(value, n)
    return {"acc": value, "ci_low": low, "ci_high": high}


def _intervals(values: list[float], n: int) -> list[dict[str, float]]:
    """:func:`_interval` for many proportions on the same n images, in one vectorised call."""
    low, high = wilson_intervals(np.asarray(values, dtype=float), n)
    return [{"acc": v, "ci_low": lo, "ci_high": hi} for v, lo, hi in zip(values, low.tolist(), high.tolist())]


def _accuracy_values(labels: np.ndarray, correct: np.ndarray, preds: np.ndarray | None, draws: int,
                     stated_majority: float | None) -> list[float]:
    """[expected, worst-of-K, majority] accuracy over the n images."""
    n = len(labels)
    expected = float(correct.sum()) / (n * draws) if n else 0.0
    worst = float((correct == draws).sum()) / n if n else 0.0
    if preds is not None:
        majority = float(majority_correct(labels, preds).mean()) if n else 0.0
    else:
        majority = stated_majority if stated_majority is not None else 0.0
    return [expected, worst, majority]


def derive(outcomes: Outcomes, stated_majority: dict[str, float] | None = None) -> dict[str, Any]:
    """The record fields that follow from ``outcomes`` (nested like the record):
    ``samples.clean_correct`` / ``adv_correct``, ``clean`` / ``robust`` accuracies with intervals,
    ``rob_m``, ``attack_reported`` (when per-sample verdicts exist) and ``cost.*_per_sample``
    (when per-sample costs exist). ``stated_majority`` ({"clean": acc, "robust": acc}) stands in
    for the majority vote of schema-1 records, which have no per-draw classes."""
    o, stated = outcomes, stated_majority or {}
    n = len(o.labels)
    values = (_accuracy_values(o.labels, o.clean_correct, o.clean_preds, o.draws, stated.get("clean"))
              + _accuracy_values(o.labels, o.adv_correct, o.adv_preds, o.draws, stated.get("robust")))
    curve = resubmission_estimates(o.adv_correct.tolist(), o.draws).mean(axis=0) if n else np.zeros(o.draws)
    values += curve.tolist()
    if o.reported is not None:
        values.append(float(np.mean(o.reported)) if n else 0.0)
    intervals = _intervals(values, n)  # every interval of the record: one Wilson call
    kinds = ("expected", "worst", "majority")
    fields: dict[str, Any] = {
        "samples": {"clean_correct": o.clean_correct.tolist(), "adv_correct": o.adv_correct.tolist()},
        "clean": dict(zip(kinds, intervals[0:3])),
        "robust": dict(zip(kinds, intervals[3:6])),
        "rob_m": [{"m": m + 1, **intervals[6 + m]} for m in range(o.draws)],
    }
    if o.reported is not None:
        fields["attack_reported"] = intervals[6 + o.draws]
    cost = {}
    for name, values_ in (("gradient_draws", o.gradient_draws), ("forward_draws", o.forward_draws)):
        if values_ is not None:
            cost[f"{name}_per_sample"] = float(np.mean(values_)) if n else 0.0
    if cost:
        fields["cost"] = cost
    return fields


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1, "rob_m.3.acc": 0.2, ...}`` for nested dicts and lists of dicts (lists of
    numbers stay whole)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and isinstance(value[0], dict):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: value}


def disagreements_with(obj: Any, derived: dict[str, Any], tolerance: float = 1e-6) -> list[str]:
    """One message per field of ``derived`` that the object ``obj`` (a record: attributes, lists of
    models) does not match, read attribute by attribute (no dump of the record: a site build checks
    thousands)."""
    problems: list[str] = []

    def walk(value: Any, have: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, None if have is None else (have.get(key) if isinstance(have, dict) else getattr(have, key, None)),
                     f"{path}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            if have is not None and len(have) != len(value):
                problems.append(f"{path[:-1]}: {len(have)} entries, the per-sample outcomes give {len(value)}")
            for i, item in enumerate(value):
                walk(item, have[i] if have is not None and i < len(have) else None, f"{path}{i}.")
        else:
            field = path[:-1]
            if have is None:
                problems.append(f"{field}: missing (the per-sample outcomes give {_show(value)})")
            elif isinstance(value, list):
                if list(have) != value:
                    problems.append(f"{field}: {_show(list(have))} does not follow from the per-sample outcomes ({_show(value)})")
            elif abs(float(have) - float(value)) > tolerance:
                problems.append(f"{field}: {_show(have)} does not follow from the per-sample outcomes ({_show(value)})")

    walk(derived, obj, "")
    return problems


def agrees(obj: Any, derived: dict[str, Any], tolerance: float = 1e-6) -> bool:
    """True when :func:`disagreements_with` would find nothing: the same comparison, field by
    field in one array (the fast path of a site build's validation; the slow one names fields)."""
    samples = derived["samples"]
    if obj.samples.clean_correct != samples["clean_correct"] or obj.samples.adv_correct != samples["adv_correct"]:
        return False
    have: list[Any] = []
    want: list[float] = []

    def add(stated: Any, fields: dict[str, float]) -> bool:
        if stated is None:
            return False
        for key, value in fields.items():
            have.append(getattr(stated, key, None))
            want.append(value)
        return True

    for part in ("clean", "robust"):
        for kind, fields in derived[part].items():
            add(getattr(getattr(obj, part), kind), fields)
    if "rob_m" in derived:
        if obj.rob_m is None or len(obj.rob_m) != len(derived["rob_m"]):
            return False
        for stated, fields in zip(obj.rob_m, derived["rob_m"]):
            add(stated, fields)
    if "attack_reported" in derived and not add(obj.attack_reported, derived["attack_reported"]):
        return False
    if "cost" in derived:
        add(obj.cost, derived["cost"])
    if any(value is None for value in have):
        return False
    return bool(np.all(np.abs(np.asarray(have, dtype=float) - np.asarray(want, dtype=float)) <= tolerance))


def disagreements(stated: dict[str, Any], derived: dict[str, Any], tolerance: float = 1e-6) -> list[str]:
    """One message per field of ``derived`` that ``stated`` (the record as a dict) does not match."""
    have = flatten(stated)
    problems = []
    for path, value in flatten(derived).items():
        if path not in have:
            problems.append(f"{path}: missing (the per-sample outcomes give {_show(value)})")
            continue
        got = have[path]
        same = (got == value) if isinstance(value, list) else (
            got is not None and abs(float(got) - float(value)) <= tolerance)
        if not same:
            problems.append(f"{path}: {_show(got)} does not follow from the per-sample outcomes ({_show(value)})")
    return problems


def _show(value: Any) -> str:
    if isinstance(value, list):
        return f"[{', '.join(map(str, value[:6]))}{', ...' if len(value) > 6 else ''}]"
    return f"{value:.6f}" if isinstance(value, float) else str(value)
