"""Regression: committed toy records re-run sample by sample give identical per-sample outcomes.

Proof that a refactoring changed no number: the first samples (4, or 2 for the AutoAttack record) of committed records, re-run
from their stored configs and seeds (``bench.harness.replay``), must reproduce what the record
states exactly: the counts of correct evaluation draws (clean and adversarial) and, for records
with per-draw outcomes, every draw's class, the selection draws and the attack's cost.

The default set is chosen to be cheap (under a minute in all on 2 cores): the toy protocol's
``dp_ddpm`` records under ``pgd_eot`` and ``aa_rand_fixed`` (whose DDPM maths comes from
``bench.families``) and an ``aa_rand_fixed`` record in
``tests/fixtures/records/`` that the pre-restructuring code (commit eef6f67) produced at reduced
budgets (NFE 10, APGD 20 iterations, EoT 5). ``BENCH_REPLAY_FULL=1`` replays the first 4 samples
of every record under ``results/`` instead (the published-budget AutoAttack records take ~9 min
each on 2 CPU cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.harness.replay import replay, stored_outcomes
from bench.publish.records import load_record_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "toy" / "linf-0.25"
TOY = RESULTS / "toy"  # records of the toy protocol (bench/protocols/toy.toml)
DEFAULT = [
    TOY / "dp_ddpm__pgd_eot__white.json",
    TOY / "dp_ddpm__aa_rand_fixed__white.json",
    ROOT / "tests" / "fixtures" / "records" / "dp_ddpm-nfe=10__aa_rand_fixed-eot=5,n_iter=20__white.json",
]
FULL = bool(os.environ.get("BENCH_REPLAY_FULL"))
RECORDS = sorted(p for p in (ROOT / "results").rglob("*.json") if "literature" not in p.parts) if FULL else DEFAULT
# the toy protocol's records replay 2 samples by default to keep the suite near ten minutes
N = {TOY / "dp_ddpm__aa_rand_fixed__white.json": 2, TOY / "dp_ddpm__pgd_eot__white.json": 2}


@pytest.mark.slow
@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_committed_record_replays_exactly(path: Path) -> None:
    record = load_record_file(path)
    n = 4 if FULL else N.get(path, 4)
    rerun, stated = replay(record, n), stored_outcomes(record)[:n]
    assert [o.index for o in rerun] == [o.index for o in stated]
    assert all(not s.differences(r) for s, r in zip(stated, rerun)), [s.differences(r) for s, r in zip(stated, rerun)]
