"""The literature track: reported numbers validated by their own schema, never ranked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.publish.literature import literature_tables, validate_literature

LITERATURE = Path(__file__).resolve().parents[1] / "results" / "literature"


def test_committed_literature_records_are_valid_and_labelled() -> None:
    records, errors = validate_literature(LITERATURE)
    assert not errors and len(records) >= 30
    assert all(r.label == "reported in the paper, not measured here" for _, r in records)
    tables = literature_tables(records)
    assert {(t["dataset"], t["norm"]) for t in tables} >= {("cifar10", "linf"), ("cifar10", "l2")}


@pytest.mark.parametrize("change, message", [
    (lambda d: [row.pop("source") for row in d["rows"]], "rows.0.source: Field required"),
    (lambda d: [row.pop("protocol") for row in d["rows"]], "rows.0.protocol: Field required"),
    (lambda d: d.pop("paper"), "paper: Field required"),
    (lambda d: d["rows"][0]["source"].update(quote=[]), "rows.0.source.quote"),
    (lambda d: d["rows"][0]["protocol"].update(gradient="magic"), "rows.0.protocol.gradient"),
    (lambda d: d["rows"][0].update(robust="101"), "not a percentage"),
    (lambda d: d.update(label="measured"), "label"),
    (lambda d: d.update(bench_defense="dp_ddpm2"), "bench_defense 'dp_ddpm2' is not a registered defense"),
])
def test_literature_records_without_source_or_protocol_fail(tmp_path, change, message) -> None:
    original = sorted(LITERATURE.rglob("*.json"))[0]
    data = json.loads(original.read_text())
    change(data)
    (tmp_path / original.name).write_text(json.dumps(data))
    records, errors = validate_literature(tmp_path)
    assert not records and len(errors) == 1 and message in errors[0] and original.name in errors[0]


def test_tables_sort_by_number_and_a_superscript_in_a_name_is_not_a_crash() -> None:
    from bench.publish.literature import _table_order

    names = ["Table 12", "Table 3", "Table 3\u00b2", "Sec. 5"]
    assert sorted(names, key=_table_order) == ["Table 3", "Table 3\u00b2", "Sec. 5", "Table 12"]
