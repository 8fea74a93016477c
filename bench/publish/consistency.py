"""Every summary of many records checked against their per-draw outcomes at once.

The same check as a record's own validator (:meth:`bench.publish.records.Record._consistent`:
:func:`bench.publish.derive.derive` then a field-by-field comparison), vectorised across records
of equal shape (n images x K draws): a site build checks ten thousand records, and one derivation
per record costs about a millisecond of Python and numpy call overhead, while the arithmetic
itself is microseconds. Records that disagree here are re-derived one by one
(:func:`bench.publish.derive.disagreements_with`), so the error messages are the validator's.
Records without per-draw classes (schema 1) take the one-by-one path directly.

Per record of n images, K draws (classes ``y``; draws ``C``, ``A`` of shape (n, K)):
``clean_correct = (C == y).sum(1)``, expected accuracy ``sum / (n K)``, worst-of-K ``mean(count == K)``,
majority vote ``mean(mode(row) == y)`` (ties to the smallest class), Rob(M) ``mean_i C(c_i, M) /
C(K, M)`` (DiffHammer, Theorem 2) and every interval the 95% Wilson interval over the n images.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from bench.core.metrics import _estimate_table, wilson_intervals

TOLERANCE = 1e-6  # the validator's (bench.publish.derive.disagreements_with)
_KINDS = ("expected", "worst", "majority")


def inconsistent(records: list[Any]) -> dict[int, list[str]]:
    """{index into ``records``: the validator's messages} for every record whose stated summaries
    do not follow from its per-draw outcomes; records that agree are absent. Decoded per-draw
    classes are left in each record's cache (``Record.preds``), as the site build reads them next."""
    from bench.publish.derive import derive, disagreements_with
    from bench.publish.records import pred_width

    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    one_by_one: list[int] = []
    for i, record in enumerate(records):
        if record.samples.clean_preds is None or record.samples.adv_preds is None:
            one_by_one.append(i)
        else:
            groups[(record.dataset.n_samples, record.eval_draws, pred_width(record.dataset.name))].append(i)
    for (n, k, width), members in groups.items():
        one_by_one += [members[j] for j in _disagreeing(records, members, n, k, width)]
    problems: dict[int, list[str]] = {}
    for i in sorted(one_by_one):
        record = records[i]
        derived = derive(record.outcomes(), stated_majority={"clean": record.clean.majority.acc,
                                                             "robust": record.robust.majority.acc})
        if record.rob_m is None and record.schema_version == 1:
            derived.pop("rob_m")
        found = disagreements_with(record, derived)
        if found:
            problems[i] = found
    return problems


def majority_correct_rows(labels: np.ndarray, preds: np.ndarray, label_counts: np.ndarray | None = None) -> np.ndarray:
    """(R, n) whether each row's most frequent class (ties: the smallest) is the label; labels
    (R, n), preds (R, n, K); ``label_counts`` (R, n): how many of the K draws equal the label, when
    the caller has them. One bincount over all rows (also serves one record:
    :func:`bench.publish.derive.majority_correct`).

    The label's own count settles most rows without counting the other classes: more than K/2
    draws on the label make it the unique mode, none make it not the mode. Only the rows in between
    are counted class by class (a site build checks millions of draws; most rows are all-correct or
    all-wrong)."""
    r, n, k = preds.shape
    if r * n == 0:
        return np.zeros((r, n), dtype=bool)
    flat_labels, flat_preds = labels.reshape(-1), preds.reshape(r * n, k)
    hits = (flat_preds == flat_labels[:, None]).sum(axis=1) if label_counts is None else label_counts.reshape(-1)
    correct = 2 * hits > k
    open_rows = np.flatnonzero((hits > 0) & ~correct)
    if open_rows.size:
        sub_preds, sub_labels = flat_preds[open_rows], flat_labels[open_rows]
        classes = int(max(sub_preds.max(initial=0), sub_labels.max(initial=0))) + 1
        rows = np.arange(open_rows.size).repeat(k) * classes
        counts = np.bincount(rows + sub_preds.reshape(-1), minlength=open_rows.size * classes)
        correct[open_rows] = counts.reshape(open_rows.size, classes).argmax(axis=1) == sub_labels
    return correct.reshape(r, n)


def _disagreeing(records: list[Any], members: list[int], n: int, k: int, width: int) -> list[int]:
    """Indices (into ``members``) of the records of one (n, K) shape whose summaries differ from
    their outcomes, all checked in one set of array operations."""
    from bench.publish.records import decode_preds

    chosen = [records[i] for i in members]
    r = len(chosen)
    labels = np.asarray([rec.samples.label for rec in chosen], dtype=np.int64).reshape(r, n)
    clean = decode_preds([row for rec in chosen for row in rec.samples.clean_preds], width).reshape(r, n, k)
    adv = decode_preds([row for rec in chosen for row in rec.samples.adv_preds], width).reshape(r, n, k)
    for j, rec in enumerate(chosen):  # the site build reads these next (Record.preds)
        rec._decoded["clean_preds"], rec._decoded["adv_preds"] = clean[j], adv[j]
    clean_correct = (clean == labels[:, :, None]).sum(axis=2)
    adv_correct = (adv == labels[:, :, None]).sum(axis=2)
    values = np.concatenate([
        np.stack([clean_correct.sum(1) / (n * k), (clean_correct == k).mean(1),
                  majority_correct_rows(labels, clean, clean_correct).mean(1)], axis=1),
        np.stack([adv_correct.sum(1) / (n * k), (adv_correct == k).mean(1),
                  majority_correct_rows(labels, adv, adv_correct).mean(1)], axis=1),
        _estimate_table(k)[adv_correct].mean(axis=1),  # (r, K): Rob(M), M = 1..K
    ], axis=1)  # (r, 6 + K)
    low, high = wilson_intervals(values, n)
    derived = np.stack([values, low, high], axis=2).reshape(r, -1)  # (r, 3 (6 + K)): acc, low, high
    stated = np.full_like(derived, np.nan)
    bad = np.zeros(r, dtype=bool)
    for j, rec in enumerate(chosen):
        fields = [getattr(getattr(rec, part), kind) for part in ("clean", "robust") for kind in _KINDS]
        if rec.rob_m is None or len(rec.rob_m) != k or any(p.m != m + 1 for m, p in enumerate(rec.rob_m)):
            bad[j] = True
            continue
        fields += rec.rob_m
        stated[j] = [x for f in fields for x in (f.acc, f.ci_low, f.ci_high)]
        if (rec.samples.clean_correct != clean_correct[j].tolist() or rec.samples.adv_correct != adv_correct[j].tolist()
                or not _optional_fields_agree(rec)):
            bad[j] = True
    bad |= ~(np.abs(stated - derived) <= TOLERANCE).all(axis=1)  # NaN (not stated) counts as bad
    return np.flatnonzero(bad).tolist()


def _optional_fields_agree(record: Any) -> bool:
    """The attack's verdict and its per-sample costs, when the record carries them (rare, cheap)."""
    s = record.samples
    if s.reported is not None:
        stated = record.attack_reported
        if stated is None:
            return False
        mean = float(np.mean(s.reported))
        low, high = wilson_intervals(np.asarray([mean]), len(s.reported))
        if max(abs(stated.acc - mean), abs(stated.ci_low - low[0]), abs(stated.ci_high - high[0])) > TOLERANCE:
            return False
    for name in ("gradient_draws", "forward_draws"):
        values = getattr(s, name)
        if values is not None:
            stated = getattr(record.cost, f"{name}_per_sample")
            if stated is None or abs(stated - float(np.mean(values))) > TOLERANCE:
                return False
    return True
