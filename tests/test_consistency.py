"""The batch consistency check (bench.publish.consistency) finds exactly what each record's own
validator finds, with the validator's messages, on records of several shapes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.harness.perf import write_synthetic_records
from bench.publish.consistency import inconsistent
from bench.publish.records import RecordError, validate_paths, validate_record


def _tamper(record: dict, how: str, rng: random.Random) -> None:
    if how == "worst":
        record["robust"]["worst"]["acc"] = min(1.0, record["robust"]["worst"]["acc"] + 0.01)
        record["robust"]["worst"]["ci_high"] = 1.0
    elif how == "interval":
        record["clean"]["expected"]["ci_low"] = max(0.0, record["clean"]["expected"]["ci_low"] - 1e-3)
    elif how == "majority":
        majority = record["robust"]["majority"]
        majority["acc"] = majority["ci_low"] if majority["acc"] > 0 else majority["ci_high"]
    elif how == "rob_m":
        point = rng.randrange(len(record["rob_m"]))
        record["rob_m"][point]["ci_high"] = max(record["rob_m"][point]["acc"], record["rob_m"][point]["ci_high"] - 1e-3)
    elif how == "rob_m_extra":
        record["rob_m"].append(dict(record["rob_m"][-1], m=len(record["rob_m"]) + 1))
    elif how == "count":
        i = rng.randrange(len(record["samples"]["adv_correct"]))
        record["samples"]["adv_correct"][i] = (record["samples"]["adv_correct"][i] + 1) % (record["eval_draws"] + 1)
    elif how == "draw":  # one adversarial draw's class changed: counts and summaries no longer follow
        rows = record["samples"]["adv_preds"]
        i = rng.randrange(len(rows))
        width = len(rows[i]) // record["eval_draws"]
        label = record["samples"]["label"][i]
        first = int(rows[i][:width])
        rows[i] = f"{label if first != label else (label + 1) % 10:0{width}d}" + rows[i][width:]


@pytest.mark.parametrize("how", ["worst", "interval", "majority", "rob_m", "rob_m_extra", "count", "draw"])
def test_the_batch_check_flags_what_the_validator_flags_with_its_messages(tmp_path: Path, how: str) -> None:
    write_synthetic_records(tmp_path, 40)
    files = sorted(tmp_path.rglob("*.json"))
    rng = random.Random(how)
    tampered = set(rng.sample(range(len(files)), 7))
    for i in tampered:
        record = json.loads(files[i].read_text())
        _tamper(record, how, rng)
        files[i].write_text(json.dumps(record))
    expected = {}
    for i, file in enumerate(files):
        try:
            validate_record(file.read_text(), file)
        except RecordError as err:
            expected[i] = str(err)
    assert set(expected) == tampered  # every tampering is one the validator sees
    records = [validate_record(file.read_text(), file, defer_derivation=True) for file in files]
    found = inconsistent(records)
    assert set(found) == tampered
    for i, problems in found.items():
        assert expected[i] == "\n".join(f"{files[i]}: <record>: {p}" for p in problems)
    pairs, errors = validate_paths([tmp_path])
    assert len(pairs) == len(files) - len(tampered) and len(errors) == len(tampered)


def test_the_batch_check_passes_untouched_records_and_leaves_their_draws_decoded(tmp_path: Path) -> None:
    write_synthetic_records(tmp_path, 30)
    files = sorted(tmp_path.rglob("*.json"))
    records = [validate_record(file.read_text(), file, defer_derivation=True) for file in files]
    assert inconsistent(records) == {}
    fresh = [validate_record(file.read_text(), file) for file in files]
    for batch, single in zip(records, fresh):
        assert "adv_preds" in batch._decoded
        assert (batch.preds("adv_preds") == single.preds("adv_preds")).all()


@pytest.mark.parametrize("draws", [1, 2, 3, 4, 10])
def test_the_majority_shortcut_equals_counting_every_class(draws: int) -> None:
    """Rows settled by the label's own count (more than K/2 draws on it, or none) give the same
    verdict as the full per-class count with ties to the smallest class, ties included."""
    import numpy as np

    from bench.publish.consistency import majority_correct_rows

    rng = np.random.default_rng(draws)
    preds = rng.integers(0, 4, size=(3, 500, draws))  # few classes: many ties
    labels = rng.integers(0, 4, size=(3, 500))
    preds[0, :100] = labels[0, :100, None]  # all-correct rows
    expected = np.array([[np.bincount(row, minlength=4).argmax() == label for row, label in zip(p, lab)]
                         for p, lab in zip(preds, labels)])
    assert (majority_correct_rows(labels, preds) == expected).all()
    counts = (preds == labels[:, :, None]).sum(axis=2)
    assert (majority_correct_rows(labels, preds, counts) == expected).all()
