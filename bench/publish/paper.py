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
    return (f"FGSM under DW-box raises the loss more ({by['dw_both']:+.4f}) than under DW_semi-{semi[-1][0]} "
            f"({semi[-1][1]:+.4f}), which beats random signs ({by['random']:+.4f})" if semi else
            f"DW-box {by['dw_both']:+.4f} vs random {by['random']:+.4f}", ok)


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


CHECKS = {
    "trajectory": FigureCheck("Figure 1", "the White-box attack is less effective and deviates from the DW-box trajectory", _trajectory),
    "landscape": FigureCheck("Figure 3", "the loss landscape is not flat in the DW-box direction", _landscape),
    "addt-settings": FigureCheck("Figures 6 / 9", "ADDT improves robustness under White-box and DW-box", _addt_settings),
    "gradsim": FigureCheck("Figure 7", "more EoT draws bring the gradient closer to the DW-box one and lower robust accuracy", _gradsim),
    "efficacy": FigureCheck("Figure 8", "perturbations crafted under DW_semi are less potent than under DW-box", _efficacy),
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
