"""The ADDT paper, re-run on the toy suite: one section per figure, from the study exports under
``results/studies/`` (``bench study NAME`` writes them), each with its plot, its table, the command,
its time, and one line saying whether the toy reproduces the paper's *direction*.

The direction checks are written down per figure (:data:`CHECKS`), from the paper's own captions;
where the toy disagrees, the page says so and shows the measurement. Nothing is tuned to agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STUDIES_DIR = "studies"


def _gradsim(r: dict[str, Any]) -> tuple[str, bool]:
    rows = r["rows"]
    rises = rows[-1]["cosine"][0] > rows[0]["cosine"][0]
    return (f"cosine to the DW-box gradient rises with the EoT draws k ({rows[0]['cosine'][0]:.3f} at k = "
            f"{rows[0]['k']}, {rows[-1]['cosine'][0]:.3f} at k = {rows[-1]['k']})", rises)


def _efficacy(r: dict[str, Any]) -> tuple[str, bool]:
    by = {row["method"]: row["increase"][0] for row in r["rows"]}
    semi = sorted((int(k.split(":")[1]), v) for k, v in by.items() if k.startswith("dw_semi:"))
    ok = by["dw_both"] > semi[-1][1] > by["random"] if semi else by["dw_both"] > by["random"]
    if not semi:
        return f"DW-box {by['dw_both']:+.4f} vs random {by['random']:+.4f}", ok
    order = "more" if by["dw_both"] > semi[-1][1] else "less"
    beats = "beats" if semi[-1][1] > by["random"] else "does not beat"
    return (f"FGSM under DW-box raises the loss {order} ({by['dw_both']:+.4f}) than under DW_semi-{semi[-1][0]} "
            f"({semi[-1][1]:+.4f}), which {beats} random signs ({by['random']:+.4f})", ok)


def _trajectory(r: dict[str, Any]) -> tuple[str, bool]:
    by = {row["setting"]: row for row in r["rows"]}
    dw = by["DW-box"].get("final_known_loss", by["DW-box"]["final_loss"])[0]
    white = by["White-box EoT-10"]["final_loss"][0]
    return (f"the DW-box attack reaches a higher loss on its known noise ({dw:.3f}) than White-box EoT-10 reaches "
            f"on fresh noise ({white:.3f})", dw > white)


def _landscape(r: dict[str, Any]) -> tuple[str, bool]:
    import numpy as np

    loss = np.asarray(r["mean_loss"])  # rows = d2 (betas), columns = d1 (alphas)
    centre = loss.shape[0] // 2
    along_d1 = loss[centre, -1] - loss[centre, centre]
    along_d2 = loss[-1, centre] - loss[centre, centre]
    return (f"the loss rises faster along the DW-box direction ({along_d1:+.3f}) than along the White-box one "
            f"({along_d2:+.3f}) over the same distance", along_d1 > along_d2)


def _addt_settings(r: dict[str, Any]) -> tuple[str, bool]:
    rows = r["rows"]
    base, twin = r["defense"], f"{r['defense']}_addt"
    pairs = [(a, b) for a in rows for b in rows if a["defense"] == base and b["defense"] == twin
             and a["setting"] == b["setting"] and a["nfe"] == b["nfe"]]
    wins = sum(b["robust"]["acc"] > a["robust"]["acc"] for a, b in pairs)
    return f"ADDT is above its vanilla twin in {wins} of {len(pairs)} (setting, NFE) cells", wins == len(pairs) and wins > 0


@dataclass(frozen=True)
class FigureCheck:
    figure: str
    claim: str  # the paper's, from its caption
    check: Callable[[dict[str, Any]], tuple[str, bool]]


def _settings(r: dict[str, Any]) -> tuple[str, bool]:
    by = {row["setting"]: row["robust"]["acc"] for row in r["rows"]}
    white, known = by.get("white"), by.get("dw_both")
    if white is None or known is None:
        return "the study ran without both the White-box and the DW_Both-box setting", False
    return (f"{r['defense']}: robust {white:.3f} White-box, {by.get('dw_fwd', float('nan')):.3f} DW_Fwd, {known:.3f} "
            "DW_Both (knowing all the noise is what breaks it)", known < white)


def _generation(r: dict[str, Any]) -> tuple[str, bool]:
    by = {row["entry"]: row["fd"][0] for row in r["rows"]}
    addt, linf = by.get("dp_ddpm_addt"), by.get("dp_ddpm_addt[fine_tune=linf]")
    if addt is None or linf is None:
        return "the study ran without both the ADDT and the ADDT_linf fine-tune", False
    return (f"{r['metric']}: ADDT {addt:.3f}, ADDT_linf {linf:.3f}, vanilla {by.get('dp_ddpm', float('nan')):.3f}, "
            f"clean fine-tune {by.get('dp_ddpm_addt[fine_tune=clean]', float('nan')):.3f}", linf > addt)


CHECKS = {
    "trajectory": FigureCheck("Figure 1", "the White-box attack is less effective and deviates from the DW-box trajectory", _trajectory),
    "landscape": FigureCheck("Figure 3", "the loss landscape is not flat in the DW-box direction", _landscape),
    "addt-settings": FigureCheck("Figures 6 / 9", "ADDT improves robustness under White-box and DW-box", _addt_settings),
    "gradsim": FigureCheck("Figure 7", "more EoT draws bring the gradient closer to the DW-box one and lower robust accuracy", _gradsim),
    "efficacy": FigureCheck("Figure 8", "perturbations crafted under DW_semi are less potent than under DW-box", _efficacy),
    "settings": FigureCheck("Figure 2", "robustness is lost only when the attacker knows all stochastic elements", _settings),
    "generation": FigureCheck("Table 7", "RBGM fine-tuning keeps generation quality, l_inf perturbations degrade it",
                              _generation),
}


@dataclass
class FigureRerun:
    figure: str
    claim: str
    study: str
    defense: str
    result: str
    agrees: bool
    table: str
    svg: str
    command: str
    wall_seconds: float | None
    cpu_seconds: float | None
    git_commit: str | None


def paper_reruns(records_dir: Path) -> list[FigureRerun]:
    folder = records_dir / STUDIES_DIR
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = json.loads(path.read_text(encoding="utf-8"))
        check = CHECKS.get(data.get("name"))
        if check is None:
            continue
        result, agrees = check.check(data["results"])
        svg_path = path.with_suffix(".svg")
        config = data["config"]
        command = (f"bench study {data['name']} --defense {config.get('defense')} --n-samples {config.get('n_samples')}"
                   + (f" --classifier {config['classifier']}" if config.get("classifier") else "")
                   + (f" --values {','.join(config['values'])}" if config.get("values") else ""))
        out.append(FigureRerun(check.figure, check.claim, data["name"], config.get("defense") or "", result, agrees,
                               data.get("table", ""), svg_path.read_text(encoding="utf-8") if svg_path.exists() else "",
                               command, data.get("wall_seconds"), data.get("cpu_seconds"), data.get("git_commit")))
    out.sort(key=lambda f: (f.figure, f.defense))
    return out


# -- the tables: each reproduction file's cells beside the toy records that re-run them ----------------------

@dataclass
class TableCellRerun:
    entry: str
    norm: str
    setting: str
    reported_clean: str | None
    reported_robust: str
    toy_clean: tuple[float, float, float] | None  # expected accuracy and its 95% interval
    toy_robust: tuple[float, float, float] | None
    n: int | None
    record: str | None  # the record file (relative to the records folder)


@dataclass
class TableRerun:
    key: str
    title: str
    source: str
    needs: str
    cells: list[TableCellRerun]
    result: str  # the direction check in one line ("" when nothing was re-run)
    agrees: bool | None  # None: not enough re-run cells to say
    command: str
    cpu_seconds: float  # the matched records' own wall time (one thread: CPU time)


def _cell_key(defense: str, attack: str, setting: str, norm: str) -> tuple[str, str, str, str]:
    # plain strings: a request's StrEnum members compare equal to their values but hash by name
    return str(defense), str(attack), str(setting), str(norm)


def _index_records(parsed: list[tuple[Path, Any]]) -> dict[tuple[str, str, str, str], list[tuple[Path, Any]]]:
    index: dict[tuple[str, str, str, str], list[tuple[Path, Any]]] = {}
    for path, record in parsed:
        key = _cell_key(record.defense.name, record.attack.name, record.setting, record.threat_model.norm)
        index.setdefault(key, []).append((path, record))
    return index


def _matching_record(cell: Any, index: dict[tuple[str, str, str, str], list[tuple[Path, Any]]]) -> tuple[Path, Any] | None:
    """The toy record that ran exactly ``cell``'s request: same plug-ins, setting, threat model,
    classifier, seed, K, images, and configs equal once completed with today's defaults."""
    from bench.core.attack import ATTACKS
    from bench.core.config import canonical_config
    from bench.core.defense import DEFENSES
    from bench.harness.request import normalized_request

    wanted = normalized_request(cell.request)
    defense_cls, attack_cls = DEFENSES.get(wanted.defense).config_cls, ATTACKS.get(wanted.attack).config_cls
    defense_config = canonical_config(wanted.defense_config, defense_cls)
    attack_config = canonical_config(wanted.attack_config, attack_cls)
    indices = list(range(cell.request.n_samples or 0))
    for path, record in index.get(_cell_key(wanted.defense, wanted.attack, wanted.setting, wanted.norm), []):
        if (abs(record.threat_model.eps - wanted.eps) < 1e-9 and record.classifier == wanted.classifier
                and record.seed == wanted.seed and record.eval_draws == wanted.eval_draws
                and list(record.dataset.sample_indices) == indices
                and canonical_config(record.defense.config, defense_cls) == defense_config
                and canonical_config(record.attack.config, attack_cls) == attack_config):
            return path, record
    return None


def recorded_cells(cells: list[Any], records: list[tuple[Path, Any]]) -> dict[int, Path]:
    """{position in ``cells``: the record file that already ran it} for the reproduction cells
    (:class:`bench.harness.reproduce.Cell`) that one of ``records`` ((file, record) pairs) ran
    exactly, as the paper page matches them (:func:`_matching_record`)."""
    index = _index_records(records)
    found = {}
    for i, cell in enumerate(cells):
        match = _matching_record(cell, index)
        if match is not None:
            found[i] = match[0]
    return found


def _interval(acc: Any) -> tuple[float, float, float]:
    return acc.expected.acc, acc.expected.ci_low, acc.expected.ci_high


def _vanilla_of(entry: str) -> str | None:
    """The vanilla twin of a fine-tuned entry: ``dp_ddpm_addt[fine_tune=clean,nfe=5]`` -> ``dp_ddpm[nfe=5]``."""
    from bench.core.config import split_entry

    name, options = split_entry(entry)
    if not name.endswith("_addt"):
        return None
    rest = {k: v for k, v in options.items() if k != "fine_tune"}
    return name[: -len("_addt")] + (f"[{','.join(f'{k}={v}' for k, v in rest.items())}]" if rest else "")


def _kendall_agreement(cells: list[TableCellRerun]) -> tuple[int, int]:
    """(pairs the toy orders as the paper, pairs the paper orders) over cells of the same norm and
    setting, by robust accuracy (ties in the paper are no claim and are skipped)."""
    agree = total = 0
    done = [c for c in cells if c.toy_robust is not None]
    for i, a in enumerate(done):
        for b in done[i + 1:]:
            if (a.norm, a.setting) != (b.norm, b.setting) or float(a.reported_robust) == float(b.reported_robust):
                continue
            total += 1
            agree += (float(a.reported_robust) > float(b.reported_robust)) == (a.toy_robust[0] > b.toy_robust[0])
    return agree, total


def _paired_mean(diffs: Any) -> tuple[float, float]:
    """Mean of paired per-image differences and the half-width of its 95% normal interval."""
    import numpy as np

    mean = float(diffs.mean())
    half = 1.959963984540054 * float(diffs.std(ddof=1)) / np.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return mean, half


def _twin_check(cells: list[TableCellRerun], pool: dict[tuple[str, str, str], tuple[TableCellRerun, Any]],
                records: dict[str, Any]) -> tuple[str, bool | None] | None:
    """Fine-tuned entries against their vanilla twins (the same table's cell, else any table's): the toy's paired mean
    difference of expected robust accuracy over every image of every pair, with a 95% normal
    interval, beside the paper's mean difference. The paper claims an improvement where its mean
    difference exceeds one point (then the toy agrees if its difference is positive), none
    otherwise (then the toy agrees unless its interval lies above zero)."""
    import numpy as np

    paper, toy = [], []
    own = {(c.entry, c.norm, c.setting): (c, None) for c in cells}
    for cell in cells:
        vanilla = _vanilla_of(cell.entry)
        # the twin printed in the same table (the paper's numbers differ between tables), else any table's
        twin = (own.get((vanilla, cell.norm, cell.setting)) or pool.get((vanilla, cell.norm, cell.setting))) if vanilla else None
        if twin is None:
            continue
        paper.append(float(cell.reported_robust) - float(twin[0].reported_robust))
        if cell.record and twin[0].record:
            a, b = records[cell.record], records[twin[0].record]
            toy.append(np.asarray(a.samples.adv_correct) / a.eval_draws - np.asarray(b.samples.adv_correct) / b.eval_draws)
    if not paper:
        return None
    paper_mean = float(np.mean(paper))
    if not toy:
        return f"fine-tuned vs vanilla: the paper's mean difference is {paper_mean:+.2f} points; no pair re-run yet", None
    diffs = np.concatenate(toy)
    mean, half = _paired_mean(diffs)
    improves = paper_mean > 1.0
    agrees = mean > 0 if improves else not mean - half > 0
    return (f"fine-tuned minus vanilla robust accuracy on the toy: {100 * mean:+.1f} points [{100 * (mean - half):+.1f}, "
            f"{100 * (mean + half):+.1f}] over {len(toy)} pairs ({len(diffs)} image pairs); the paper: "
            f"{paper_mean:+.2f} points ({'an improvement' if improves else 'no improvement'})", agrees)


def _column_check(cells: list[TableCellRerun], companion: list[TableCellRerun], companion_key: str,
                  records: dict[str, Any]) -> tuple[str, bool | None]:
    """This table's column against another's (the same entry, norm and setting): the toy's paired
    mean difference of expected robust accuracy over every image of every re-run pair (95% normal
    interval) beside the paper's mean difference. The paper claims a difference where its mean
    exceeds one point in absolute value (the toy agrees if its difference has the same sign),
    none otherwise (the toy agrees unless its interval excludes zero)."""
    import numpy as np

    theirs = {(c.entry, c.norm, c.setting): c for c in companion}
    paper, toy = [], []
    for cell in cells:
        other = theirs.get((cell.entry, cell.norm, cell.setting))
        if other is None:
            continue
        paper.append(float(cell.reported_robust) - float(other.reported_robust))
        if cell.record and other.record:
            a, b = records[cell.record], records[other.record]
            if list(a.dataset.sample_indices) == list(b.dataset.sample_indices):
                toy.append(np.asarray(a.samples.adv_correct) / a.eval_draws
                           - np.asarray(b.samples.adv_correct) / b.eval_draws)
    paper_mean = float(np.mean(paper)) if paper else 0.0
    if not toy:
        return (f"this column minus {companion_key}: the paper's mean difference is {paper_mean:+.2f} points; "
                "no pair re-run on the same images yet"), None
    diffs = np.concatenate(toy)
    mean, half = _paired_mean(diffs)
    if abs(paper_mean) > 1.0:
        agrees = (mean > 0) == (paper_mean > 0)
    else:
        agrees = bool(mean - half <= 0 <= mean + half)
    return (f"this column minus {companion_key} on the same images, toy: {100 * mean:+.1f} points "
            f"[{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}] over {len(toy)} pairs ({len(diffs)} image pairs); "
            f"the paper: {paper_mean:+.2f} points", agrees)


def table_reruns(parsed: list[tuple[Path, Any]], root: Path | None = None) -> list[TableRerun]:
    """Every table reproduction file with its cells matched to the toy records that re-ran them
    (``bench reproduce KEY --dataset toy``) and its direction check."""
    from bench.harness.reproduce import available, in_table_order, load_reproduction, plan

    index = _index_records(parsed)
    records = {str(path.relative_to(root) if root else path): record for path, record in parsed}
    tables: list[tuple[Any, list[TableCellRerun]]] = []
    pool: dict[tuple[str, str, str], tuple[TableCellRerun, Any]] = {}
    for key in in_table_order(available()):
        repro = load_reproduction(key)
        if repro.kind != "table":
            continue
        cells = []
        for cell in plan(repro, dataset="toy") if repro.cells else []:
            match = _matching_record(cell, index)
            record = match[1] if match else None
            rerun = TableCellRerun(cell.entry, cell.norm, cell.setting, cell.reported.get("clean"), cell.reported["robust"],
                                   _interval(record.clean) if record else None, _interval(record.robust) if record else None,
                                   record.dataset.n_samples if record else None,
                                   str(match[0].relative_to(root) if root else match[0]) if match else None)
            cells.append(rerun)
            pool.setdefault((cell.entry, cell.norm, cell.setting), (rerun, record))
        tables.append((repro, cells))
    out = []
    by_key = {repro.key: cells for repro, cells in tables}
    for repro, cells in tables:
        twin = (_column_check(cells, by_key.get(repro.compare_with, []), repro.compare_with, records)
                if repro.compare_with else _twin_check(cells, pool, records))
        if twin is not None:
            result, agrees = twin
        else:
            agree, total = _kendall_agreement(cells)
            result = (f"the toy orders {agree} of {total} cell pairs (same norm and setting) by robust accuracy as the paper"
                      if total else "not enough cells re-run to compare orders")
            agrees = None if not total else agree > total / 2
        seconds = sum(records[c.record].cost.wall_seconds for c in {c.record: c for c in cells if c.record}.values())
        out.append(TableRerun(repro.key, repro.title, repro.source, repro.needs, cells, result, agrees,
                              f"bench reproduce {repro.key} --dataset toy", seconds))
    return out
