"""``bench compare A B``: the paired difference between two evaluations on the same images.

The harness gives two runs with the same sample indices and seed the same images and the same
evaluation noise keys, so their per-image expected accuracies (correct draws / K) are paired;
the difference is reported with a 95% paired bootstrap interval
(:func:`bench.core.metrics.paired_difference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.core.errors import ConfigError
from bench.core.metrics import BOOTSTRAP_RESAMPLES, paired_difference


@dataclass(frozen=True)
class Evaluation:
    """Per-image expected accuracies of one run or record, in sample-index order."""

    label: str
    indices: list[int]
    seed: int
    draws: int
    clean: list[float]
    robust: list[float]


def load_evaluation(ref: str, engine: Engine | None) -> Evaluation:
    """``ref`` is a record file (``*.json``) or a run id (prefix) in the store."""
    if ref.endswith(".json") or Path(ref).is_file():
        from bench.publish.records import load_record_file

        r = load_record_file(Path(ref))
        k = r.eval_draws
        label = f"{r.entry} vs {r.attack.name} ({r.setting}) [{Path(ref).name}]"
        return Evaluation(label, list(r.dataset.sample_indices), r.seed, k,
                          [c / k for c in r.samples.clean_correct], [c / k for c in r.samples.adv_correct])
    from bench.harness.store import get_run

    if engine is None:
        raise ConfigError(f"{ref!r} is not a record file and no store was given")
    with Session(engine) as session:
        run = get_run(session, ref)
        if run.status != "complete":
            raise ConfigError(f"run {run.id} is {run.status}; finish it with `bench resume {run.id}` first")
        rows = sorted(run.samples, key=lambda s: s.position)
        k = run.eval_draws

        def expected(preds: list[int], label: int) -> float:
            return sum(int(p == label) for p in preds) / k

        return Evaluation(f"run {run.id}: {run.defense} vs {run.attack} ({run.setting})",
                          [s.sample_index for s in rows], run.seed, k,
                          [expected(s.clean_preds, s.label) for s in rows], [expected(s.adv_preds, s.label) for s in rows])


def compare(a: Evaluation, b: Evaluation, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Paired differences A − B of clean and robust expected accuracy (same images required)."""
    if a.indices != b.indices:
        raise ConfigError(f"{a.label} and {b.label} are on different images ({len(a.indices)} vs "
                          f"{len(b.indices)} indices, or another order): a paired comparison needs the same ones")
    return {
        "n": len(a.indices), "same_noise": a.seed == b.seed and a.draws == b.draws,
        "clean": paired_difference(a.clean, b.clean, resamples, seed),
        "robust": paired_difference(a.robust, b.robust, resamples, seed),
    }


def _signed(value: float) -> float:
    """``value`` without float noise, so that an exact zero prints as +0.0000, not -0.0000."""
    return round(value, 12) + 0.0


def format_comparison(a: Evaluation, b: Evaluation, result: dict[str, Any]) -> str:
    noise = ("same seed and K, so the same evaluation noise keys" if result["same_noise"]
             else "different seeds or K: paired by image only, not by noise")
    r = result["robust"]
    lines = [f"A: {a.label}", f"B: {b.label}",
             f"paired over {result['n']} images ({noise}); 95% paired bootstrap, percentile, "
             f"{r['resamples']} resamples, seed {r['seed']}",
             f"{'':<8}{'A':>8}{'B':>8}{'A - B [95% CI]':>30}"]
    for part, ours, theirs in (("clean", a.clean, b.clean), ("robust", a.robust, b.robust)):
        d = result[part]
        lines.append(f"{part:<8}{sum(ours) / len(ours):>8.4f}{sum(theirs) / len(theirs):>8.4f}"
                     f"{_signed(d['mean']):>+12.4f} [{_signed(d['ci_low']):+.4f}, {_signed(d['ci_high']):+.4f}]")
    return "\n".join(lines)
