"""The paper page's tables: each reproduction cell matched to the toy record that re-ran it, and
the one-line direction check (fine-tuned vs vanilla twins, else the order of the cells)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench.publish.paper import TableCellRerun, _column_check, _kendall_agreement, _twin_check, _vanilla_of, table_reruns

ROOT = Path(__file__).resolve().parents[1]


def test_the_vanilla_twin_of_a_fine_tuned_entry() -> None:
    assert _vanilla_of("dp_ddpm_addt[fine_tune=clean,nfe=5]") == "dp_ddpm[nfe=5]"
    assert _vanilla_of("dp_ddim_addt") == "dp_ddim" and _vanilla_of("dp_ddpm[nfe=5]") is None


def _cell(entry: str, robust: str, record: str | None) -> TableCellRerun:
    return TableCellRerun(entry, "linf", "white", None, robust, (0.9, 0.8, 1.0) if record else None,
                          (0.5, 0.4, 0.6) if record else None, 64 if record else None, record)


def _record(correct: list[int]) -> SimpleNamespace:
    return SimpleNamespace(eval_draws=10, samples=SimpleNamespace(adv_correct=correct))


def test_the_twin_check_reads_the_paper_claim_from_its_numbers() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 8, 200).tolist()
    better = [min(c + 2, 10) for c in base]
    records = {"v": _record(base), "a": _record(better), "same": _record(base)}
    vanilla = _cell("dp_ddpm[nfe=5]", "21.78", "v")
    pool = {("dp_ddpm[nfe=5]", "linf", "white"): (vanilla, records["v"])}
    text, agrees = _twin_check([_cell("dp_ddpm_addt[nfe=5]", "30.27", "a")], pool, records)
    assert agrees is True and "an improvement" in text and "+8.49" in text  # the paper: +8.49 points
    # the paper claims no improvement (Table 5: -0.59 points): the toy agrees unless it clearly improves
    _, agrees = _twin_check([_cell("dp_ddpm_addt[fine_tune=mse,nfe=5]", "21.19", "same")], pool, records)
    assert agrees is True
    _, agrees = _twin_check([_cell("dp_ddpm_addt[fine_tune=mse,nfe=5]", "21.19", "a")], pool, records)
    assert agrees is False
    _, agrees = _twin_check([_cell("dp_ddpm_addt[nfe=5]", "30.27", None)], pool, records)
    assert agrees is None  # nothing re-run: no verdict


def test_the_column_check_compares_two_columns_of_a_table_on_the_same_images() -> None:
    """Table 13: AutoAttack as published against the fixed selection, cell by cell, paired per image."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 8, 200).tolist()
    higher = [min(c + 2, 10) for c in base]
    indices = SimpleNamespace(sample_indices=list(range(200)))
    records = {k: SimpleNamespace(eval_draws=10, samples=SimpleNamespace(adv_correct=v), dataset=indices)
               for k, v in (("published", higher), ("fixed", base), ("same", base))}
    companion = [_cell("dp_ddpm", "46.88", "fixed")]
    text, agrees = _column_check([_cell("dp_ddpm", "57.81", "published")], companion, "ours", records)
    assert agrees is True and "+10.93" in text and "minus ours" in text  # the paper: +10.93 points
    _, agrees = _column_check([_cell("dp_ddpm", "57.81", "same")], companion, "ours", records)
    assert agrees is False  # the paper's column is higher; the toy's is not
    _, agrees = _column_check([_cell("dp_ddpm", "47.00", "published")], companion, "ours", records)
    assert agrees is False  # no difference claimed (+0.12), the toy's interval excludes zero
    _, agrees = _column_check([_cell("dp_ddpm", "57.81", None)], companion, "ours", records)
    assert agrees is None


def test_the_order_check_counts_pairs_the_paper_orders() -> None:
    cells = [_cell("a", "50.00", "x"), _cell("b", "40.00", "y"), _cell("c", "40.00", "z")]
    cells[0].toy_robust, cells[1].toy_robust, cells[2].toy_robust = (0.3, 0, 0), (0.2, 0, 0), (0.4, 0, 0)
    assert _kendall_agreement(cells) == (1, 2)  # a > b agrees, a > c does not, b = c is no claim


def test_the_committed_ranked_records_re_run_table_1_at_the_toy_protocol() -> None:
    from bench.publish.records import load_record_file

    paths = sorted((ROOT / "results" / "toy").rglob("*.json"))
    parsed = [(p, load_record_file(p)) for p in paths]
    tables = {t.key: t for t in table_reruns(parsed, root=ROOT / "results")}
    eot10 = tables["addt-table1-eot10"]
    assert [c.n for c in eot10.cells] == [256] * 4 and all(c.record.startswith("toy/") for c in eot10.cells)
    assert eot10.agrees is not None and "cell pairs" in eot10.result and eot10.cpu_seconds > 0
    assert list(tables)[:3] == ["addt-table1-eot1", "addt-table1-eot10", "addt-table2-cifar10"]


def test_twins_come_from_the_same_table_and_requests_match_records_by_value() -> None:
    """A request's norm is a StrEnum (equal to 'linf' but hashed by name): cells still find their
    records; and each fine-tuned cell is compared with the vanilla cell of its own table."""
    from bench.harness.request import Norm
    from bench.publish.paper import _cell_key
    from bench.publish.records import load_record_file

    assert hash(_cell_key("a", "b", "white", Norm.LINF)) == hash(_cell_key("a", "b", "white", "linf"))
    paths = sorted((ROOT / "results" / "toy").rglob("*.json"))
    tables = {t.key: t for t in table_reruns([(p, load_record_file(p)) for p in paths], root=ROOT / "results")}
    table2 = tables["addt-table2-cifar10"]
    from bench.publish.paper import _vanilla_of

    rerun = {(c.entry, c.norm, c.setting) for c in table2.cells if c.record}
    pairs = sum(1 for entry, norm, setting in rerun if _vanilla_of(entry) and (_vanilla_of(entry), norm, setting) in rerun)
    assert pairs >= 4 and f"over {pairs} pairs" in table2.result and table2.agrees is True, table2.result


def test_the_efficacy_sentence_follows_the_numbers() -> None:
    from bench.publish.paper import _efficacy

    rows = lambda both, semi, rand: {"rows": [{"method": "dw_both", "increase": [both]},  # noqa: E731
                                              {"method": "dw_semi:128", "increase": [semi]},
                                              {"method": "random", "increase": [rand]}]}
    text, ok = _efficacy(rows(0.625, 0.703, 0.044))
    assert not ok and "raises the loss less (+0.6250)" in text and "which beats random" in text
    text, ok = _efficacy(rows(0.9, 0.5, 0.1))
    assert ok and "raises the loss more" in text
