"""The literature track: robust accuracies *reported in papers*, not measured here.

One JSON file per (defense, paper, table) under ``results/literature/``, validated by its own
schema (:class:`LiteratureRecord`): every row carries the threat model, the reported numbers as
printed (strings, so that nothing is re-rounded), and the protocol that produced them — how the
gradient was obtained (exact / adjoint / surrogate / BPDA), the attack, EoT, evaluation draws,
classifier, n. A record without a source or a protocol is rejected. The site shows these tables
apart from the measured ones and never ranks them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

LITERATURE_DIR = "literature"
LABEL = "reported in the paper, not measured here"


class Paper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    short: str = Field(min_length=2)  # how the table names it, e.g. "ADDT (Liu et al., 2025)"
    citation: str = Field(min_length=5)  # authors, title, venue
    arxiv: str | None = Field(default=None, pattern=r"^\d{4}\.\d{4,5}$")


class ReportedProtocol(BaseModel):
    """How the paper obtained the number; ``None`` = the paper does not say (explain in notes)."""

    model_config = ConfigDict(extra="forbid")
    gradient: Literal["exact", "adjoint", "surrogate", "bpda", "unknown"]
    attack: str = Field(min_length=1)
    eot: int | None = Field(ge=1)
    eval_draws: int | None = Field(ge=1)
    classifier: str | None
    n: int | None = Field(ge=1)
    steps: int | None = Field(default=None, ge=1)
    step_size: str | None = None  # as printed, e.g. "2/255"
    notes: str = ""


class Source(BaseModel):
    """Where the number is printed: a table (or section) of the paper, with the printed line(s)."""

    model_config = ConfigDict(extra="forbid")
    location: str = Field(min_length=1)  # e.g. "Table 2", "Sec. 6.1 text"
    quote: list[str] = Field(min_length=1)


class ReportedRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    norm: Literal["linf", "l2"]
    eps: float = Field(gt=0)
    eps_label: str = Field(min_length=1)  # as printed, e.g. "8/255"
    clean: str | None = Field(default=None, pattern=r"^\d{1,3}(\.\d+)?$")  # percent, as printed
    robust: str = Field(pattern=r"^\d{1,3}(\.\d+)?$")
    metric: str = Field(min_length=3)  # what the number is, e.g. "single-draw robust accuracy", "Wor.Rob over N=10"
    protocol: ReportedProtocol
    source: Source
    variant: str = ""  # the row's configuration, e.g. "vanilla" / "ADDT" / "NFE 100"
    notes: str = ""

    @model_validator(mode="after")
    def _in_range(self) -> ReportedRow:
        for name in ("clean", "robust"):
            value = getattr(self, name)
            if value is not None and not 0 <= float(value) <= 100:
                raise ValueError(f"{name}={value!r} is not a percentage in 0..100")
        return self


class LiteratureRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Literal["literature-v1"] = Field(alias="schema")
    label: Literal["reported in the paper, not measured here"]
    paper: Paper
    table: str = Field(min_length=1)
    defense: str = Field(min_length=1)  # as the paper names it
    bench_defense: str | None = None  # the registry entry it corresponds to, if any
    dataset: Literal["cifar10", "cifar100", "tinyimagenet", "imagenet"]
    rows: list[ReportedRow] = Field(min_length=1)


def is_literature(path: Path) -> bool:
    """Whether ``path`` is (in) a literature folder."""
    return LITERATURE_DIR in path.resolve().parts


def validate_literature(folder: Path) -> tuple[list[tuple[Path, LiteratureRecord]], list[str]]:
    """Every ``*.json`` under ``folder`` (or the one file ``folder``): (valid records, one error
    line per invalid file)."""
    from bench.core.defense import DEFENSES

    records, errors = [], []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else [folder] if folder.is_file() else []:
        try:
            record = LiteratureRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            errors.append(f"{path}: not valid JSON ({err})")
            continue
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            errors.append(f"{path}: {problems}")
            continue
        if record.bench_defense and record.bench_defense not in DEFENSES:
            errors.append(f"{path}: bench_defense {record.bench_defense!r} is not a registered defense "
                          f"(valid: {', '.join(DEFENSES.names())}, or null)")
            continue
        records.append((path, record))
    return records, errors


def _table_order(table: str) -> tuple[int, str]:
    """("Table 12" sorts after "Table 3") by the table's ASCII digits: str.isdigit() also takes e.g.
    a superscript "²", which int() refuses."""
    digits = "".join(c for c in table if c.isascii() and c.isdigit())
    return (int(digits) if digits else 10**6, table)


def literature_tables(records: list[tuple[Path, LiteratureRecord]]) -> list[dict]:
    """Rows grouped per dataset x threat model, ordered by paper, table, defense."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    seen: dict[tuple, dict] = {}
    for path, record in records:
        for row in record.rows:
            # the same measurement printed in several tables of one paper is shown once, naming them all
            same = (record.paper.citation, record.defense, record.dataset, row.norm, row.eps_label, row.clean,
                    row.robust, row.metric, row.protocol.attack)
            if same in seen:
                seen[same]["locations"].append(row.source.location)
                continue
            item = {"record": record, "row": row, "path": path.name, "locations": [row.source.location]}
            seen[same] = item
            groups[(record.dataset, row.norm, row.eps_label)].append(item)
    tables = []
    order = {"linf": 0, "l2": 1}
    for (dataset, norm, eps_label), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        rows.sort(key=lambda r: (r["record"].paper.citation, _table_order(r["record"].table), r["record"].defense,
                                 r["row"].variant))
        tables.append({"dataset": dataset, "norm": norm, "eps_label": eps_label, "rows": rows,
                       "id": f"literature__{dataset}__{norm}"})
    return tables
