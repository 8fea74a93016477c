"""`bench study`: each study stores its runs and a study row and writes a well-formed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from sqlalchemy.orm import Session

from bench.harness.store import Run, Study, open_store
from bench.harness.studies import STUDIES, StudyRequest, run_study
from bench.publish.svg import Series, line_chart

TINY = {"eot": ["1", "2"], "nfe": ["5", "10"], "settings": ["white", "dw_both"]}


@pytest.mark.parametrize("name", STUDIES.names())
def test_study_stores_runs_and_writes_a_plot(name, tmp_path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    request = StudyRequest(defense="dp_ddim", n_samples=4, values=TINY[name], eval_draws=2, out_dir=tmp_path,
                           defense_options={} if name == "nfe" else {"nfe": 5},
                           attack_options={"steps": 1, "eot": 2})
    result = run_study(engine, name, request)
    assert len(result.run_ids) == len(TINY[name]) and result.table.count("\n") == len(TINY[name]) + 1
    root = ET.fromstring(result.plot_path.read_text())
    assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) >= 1
    with Session(engine) as session:
        study = session.get(Study, result.study_id)
        assert study.name == name and study.run_ids == result.run_ids
        assert all(session.get(Run, r).status == "complete" for r in result.run_ids)
    if name == "eot":
        assert all(-1.0 <= row["cosine"] <= 1.0 for row in result.results["rows"])


def test_svg_text_is_escaped() -> None:
    svg = line_chart([Series("<script>alert(1)</script>", [(1, 0.5), (2, 0.25)])], title="a & b", x_label="x",
                     y_label="y")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)
