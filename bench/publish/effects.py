"""Protocol effects: how much a published evaluation protocol inflates robust accuracy, measured.

For every record made with an approximate gradient (``gradient`` other than ``exact``: BPDA, blind,
forward-only, a surrogate) or with the original AutoAttack-Rand (``aa_rand``), the same entry's
exact record on the same images and seed is its reference: the effect is the paired difference of
per-image expected robust accuracy (protocol − exact) with its 95% paired bootstrap interval
(:func:`bench.core.metrics.paired_difference`). The toy suite measures the direction and rough size
of each effect, not the CIFAR-10 number. These records never rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.core.metrics import paired_differences

REFERENCE_ATTACK = {"aa_rand": "aa_rand_fixed"}  # the published attack and its fixed version


@dataclass
class Effect:
    entry: str
    protocol: str  # e.g. "pgd_eot, gradient=bpda" or "aa_rand (as published)"
    reference: str  # the exact record it is paired with
    protocol_robust: float
    exact_robust: float
    difference: dict[str, float]  # mean, ci_low, ci_high, n
    path: str
    reference_path: str


def _mode(record: Any) -> str:
    return str(record.attack.config.get("gradient", "exact"))


def _key(record: Any, attack: str) -> tuple:
    config = {k: v for k, v in record.attack.config.items() if k != "gradient"}
    return (record.entry, attack, record.setting, record.dataset.name, tuple(record.dataset.sample_indices),
            record.seed, record.eval_draws, str(sorted(config.items())) if attack == record.attack.name else "")


def protocol_effects(records: list[tuple[str, Any]]) -> list[Effect]:
    """Every approximate-protocol record with an exact reference on the same images; ``records``:
    (path, record) pairs in path order (the first exact record of a key is the reference)."""
    exact: dict[tuple, tuple[str, Any]] = {}
    for path, record in records:
        if _mode(record) == "exact" and not record.attack.unreliable:
            exact.setdefault(_key(record, record.attack.name), (path, record))
            exact.setdefault((record.entry, record.attack.name, record.setting, record.dataset.name,
                              tuple(record.dataset.sample_indices), record.seed, record.eval_draws, "any"),
                             (path, record))
    found: list[tuple[str, Any, str, str, Any, list[float], list[float]]] = []
    for path, record in records:
        mode = _mode(record)
        if mode == "exact" and record.attack.name not in REFERENCE_ATTACK:
            continue
        if mode != "exact":
            reference = exact.get(_key(record, record.attack.name))
            label = f"{record.attack.name}, gradient={mode}"
        else:
            base = REFERENCE_ATTACK[record.attack.name]
            reference = exact.get((record.entry, base, record.setting, record.dataset.name,
                                   tuple(record.dataset.sample_indices), record.seed, record.eval_draws, "any"))
            label = f"{record.attack.name} (as published)"
        if reference is None:
            continue
        reference_path, ref = reference
        k = record.eval_draws
        mine = [c / k for c in record.samples.adv_correct]
        theirs = [c / ref.eval_draws for c in ref.samples.adv_correct]
        found.append((path, record, label, reference_path, ref, mine, theirs))
    differences = paired_differences([(mine, theirs) for *_, mine, theirs in found])
    effects = [Effect(record.entry, label, ref.attack.name, record.robust.expected.acc, ref.robust.expected.acc,
                      difference, path, reference_path)
               for (path, record, label, reference_path, ref, _, _), difference in zip(found, differences)]
    effects.sort(key=lambda e: (e.entry, e.protocol))
    return effects


def literature_effects(effects: list[Effect], bench_defense: str | None, gradient: str | None,
                       attack: str) -> list[Effect]:
    """The toy effects of the protocol a literature row was produced with: its gradient mode
    (``adjoint``, ``surrogate`` = any ``surrogate:K``, ``bpda``, ``blind``, ``forward_only``) or the
    original AutoAttack-Rand selection, on the row's defense (its plain entry)."""
    if not bench_defense:
        return []
    wanted: list[str] = []
    if gradient and gradient not in ("exact", "unknown"):
        wanted.append(f"gradient={gradient}")
    if attack.startswith("AutoAttack rand, original"):
        wanted.append("aa_rand (as published)")
    return [e for e in effects if e.entry == bench_defense
            and any(w in e.protocol if w.startswith("aa_rand") else e.protocol.split(", ")[-1].startswith(w) for w in wanted)]
