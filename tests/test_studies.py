"""`bench study`: each study stores its runs and a study row and writes a well-formed SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import numpy as np
import torch

import pytest
from sqlalchemy.orm import Session

from bench.harness.store import Run, Study, open_store
from bench.harness.studies import STUDIES, StudyRequest, run_study
from bench.publish.svg import Series, line_chart

TINY = {"eot": ["1", "2"], "nfe": ["5", "10"], "settings": ["white", "dw_both"], "budget": ["0.05", "0.1"]}
TINY_ATTACK = {"budget": {"pgd_eot.eot": 2, "aa_rand_fixed.eot": 2, "aa_rand_fixed.eval_draws": 2,
                          "diffhammer.draws": 2, "diffhammer.restarts": 1}}
RUNS_PER_VALUE = {"budget": 3}  # pgd_eot, aa_rand_fixed, diffhammer


@pytest.mark.parametrize("name", sorted(TINY))
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


# -- the paper's analyses on tiny random models ---------------------------------------------------

def _tiny_subject(name: str = "dp_ddpm", n: int = 3):
    from bench.core.noise import NoiseSource
    from bench.harness.analyses import Subject
    from tests.conftest import tiny_model

    model = tiny_model(name)
    generator = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(n, 1, 8, 8, generator=generator)
    return Subject(model, x, torch.tensor([1, 2, 3][:n]), list(range(n)), NoiseSource(0))


def test_gradsim_cosine_is_one_for_a_deterministic_defense() -> None:
    from bench.harness.analyses import gradient_similarity

    cosines = gradient_similarity(_tiny_subject("none"), [1, 4])
    assert all(np.allclose(v, 1.0, atol=1e-5) for v in cosines.values())
    stochastic = gradient_similarity(_tiny_subject("dp_ddpm"), [1, 4])
    assert all(v.shape == (3,) and (v <= 1 + 1e-6).all() for v in stochastic.values())
    assert not np.allclose(stochastic[1], 1.0)


def test_the_landscape_plane_is_orthonormal_and_holds_the_endpoints() -> None:
    from bench.harness.analyses import loss_landscape, pgd_iterates

    subject = _tiny_subject()
    paths = {"DW-box": pgd_iterates(subject, "dw_both", 1, 3, 0.25, 0.0625),
             "White-box EoT-10": pgd_iterates(subject, "white", 2, 3, 0.25, 0.0625)}
    land = loss_landscape(subject, paths, "DW-box", "White-box EoT-10", grid=3, draws=2)
    gram = torch.stack([land.d1, land.d2], 1) @ torch.stack([land.d1, land.d2], 1).transpose(1, 2)  # (B, 2, 2)
    assert torch.allclose(gram, torch.eye(2).expand_as(gram), atol=1e-5)
    for name in paths:  # both endpoints lie on the plane; intermediate iterates are projections
        assert land.residuals[name][-1].max() < 1e-5
        assert land.residuals[name][0].max() < 1e-6  # the clean input is the origin
    assert land.loss.shape == (3, 3, 3) and np.isfinite(land.loss).all()


def test_efficacy_and_trajectories_on_tiny_models() -> None:
    from bench.harness.analyses import fgsm_efficacy, pgd_iterates, tsne_trajectories

    subject = _tiny_subject()
    increases = fgsm_efficacy(subject, 1 / 16, [1, 2], draws=2)
    assert set(increases) == {"dw_both", "dw_semi:1", "dw_semi:2", "random"}
    assert all(v.shape == (3,) and np.isfinite(v).all() for v in increases.values())
    paths = {"a": pgd_iterates(subject, "white", 1, 2, 0.25, 0.0625), "b": pgd_iterates(subject, "dw_both", 1, 2, 0.25, 0.0625)}
    embedded = tsne_trajectories(paths)
    assert embedded["a"].shape == (3, 3, 2) and embedded["b"].shape == (3, 3, 2)


def test_every_registered_study_is_tested() -> None:
    assert set(STUDIES.names()) == set(TINY) | {"gradsim", "efficacy", "trajectory", "landscape", "addt-settings",
                                               "generation"}  # generation: tests/test_generation.py


@pytest.mark.parametrize("name", ["gradsim", "efficacy", "trajectory", "landscape", "addt-settings"])
def test_paper_analysis_studies_store_export_and_plot(name: str, tmp_path) -> None:
    from bench.harness.store import Study, open_store
    from bench.harness.studies import StudyRequest, run_study
    from sqlalchemy.orm import Session

    engine = open_store(str(tmp_path / "s.sqlite"))
    values = {"gradsim": ["1", "2"], "efficacy": ["1", "2"], "trajectory": [], "landscape": ["3"],
              "addt-settings": ["5"]}[name]
    request = StudyRequest(defense="dp_ddpm", n_samples=2, values=values, eval_draws=2, out_dir=tmp_path,
                           defense_options={"nfe": 5} if name != "addt-settings" else {},
                           attack_options={"steps": 2, "max_attack_eot": 1} if name == "gradsim" else {"steps": 2})
    result = run_study(engine, name, request)
    assert result.plot_path.read_text().startswith("<svg") and "|" in result.table
    import json

    exported = json.loads(result.plot_path.with_suffix(".json").read_text())
    assert exported["name"] == name and exported["results"] and exported["git_commit"]
    with Session(engine) as session:
        assert session.get(Study, result.study_id).name == name


def test_the_paper_page_shows_each_rerun_with_its_direction(tmp_path) -> None:
    from bench.harness.perf import write_synthetic_records
    from bench.harness.store import open_store
    from bench.publish.leaderboard import build_site

    results = tmp_path / "results"
    write_synthetic_records(results, 6)
    engine = open_store(str(tmp_path / "s.sqlite"))
    request = StudyRequest(defense="dp_ddpm", n_samples=2, values=["1", "2"], eval_draws=2,
                           out_dir=results / "studies", defense_options={"nfe": 5})
    run_study(engine, "efficacy", request)
    build_site(results, tmp_path / "site")
    page = (tmp_path / "site" / "paper.html").read_text()
    assert "Figure 8" in page and "Direction reproduced on the toy:" in page and "bench study efficacy" in page
    assert "addt-table2-cifar10" in page  # the tables, as reproduction files
