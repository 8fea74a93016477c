"""`bench study`: each study stores its runs and a study row and writes a well-formed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from sqlalchemy.orm import Session

from bench.harness.store import Run, Study, open_store
from bench.harness.studies import STUDIES, StudyRequest, run_study
from bench.publish.svg import Series, line_chart

TINY = {"eot": ["1", "2"], "nfe": ["5", "10"], "settings": ["white", "dw_both"], "budget": ["0.05", "0.1"]}
TINY_ATTACK = {"budget": {"pgd_eot.eot": 2, "aa_rand_fixed.eot": 2, "aa_rand_fixed.eval_draws": 2,
                          "diffhammer.draws": 2, "diffhammer.restarts": 1}}
RUNS_PER_VALUE = {"budget": 3}  # pgd_eot, aa_rand_fixed, diffhammer


@pytest.mark.parametrize("name", STUDIES.names())
def test_study_stores_runs_and_writes_a_plot(name, tmp_path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    request = StudyRequest(defense="dp_ddim", n_samples=4, values=TINY[name], eval_draws=2, out_dir=tmp_path,
                           defense_options={} if name == "nfe" else {"nfe": 5},
                           attack_options=TINY_ATTACK.get(name, {"steps": 1, "eot": 2}))
    result = run_study(engine, name, request)
    runs = len(TINY[name]) * RUNS_PER_VALUE.get(name, 1)
    assert len(result.run_ids) == runs and result.table.count("\n") == runs + 1
    root = ET.fromstring(result.plot_path.read_text())
    assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 1
    with Session(engine) as session:
        study = session.get(Study, result.study_id)
        assert study.name == name and study.run_ids == result.run_ids
        assert all(session.get(Run, r).status == "complete" for r in result.run_ids)
    if name == "eot":
        assert all(-1.0 <= row["cosine"] <= 1.0 for row in result.results["rows"])
    if name == "budget":  # cost grows with the budget, and every point is paired to aa_rand_fixed
        for attack in ("pgd_eot", "aa_rand_fixed", "diffhammer"):
            draws = [r["gradient_draws"] for r in result.results["rows"] if r["attack"] == attack]
            assert draws == sorted(draws) and draws[-1] > 0, (attack, draws)
        pgd = [r for r in result.results["rows"] if r["attack"] == "pgd_eot"]
        assert [r["gradient_draws"] for r in pgd] == [1 * 2, 2 * 2]  # steps x EoT
        assert all("vs_aa_rand_fixed" in r for r in result.results["rows"])


def test_svg_text_is_escaped() -> None:
    svg = line_chart([Series("<script>alert(1)</script>", [(1, 0.5), (2, 0.25)])], title="a & b", x_label="x",
                     y_label="y")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)
