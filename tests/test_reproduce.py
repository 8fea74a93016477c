"""`bench reproduce`: a paper table as a protocol file, planned, priced and run as a grid."""

from __future__ import annotations

import pytest
import torch

from bench.cli.main import main
from bench.core.errors import ConfigError, UnknownNameError
from bench.harness.reproduce import available, estimate, load_reproduction, plan, plan_studies
from tests.test_cifar_pipeline import cifar_cache  # noqa: F401  (fixture: original-format files, random weights)


def test_protocol_files_for_the_main_table_and_the_nfe_table() -> None:
    assert {"addt-table2-cifar10", "addt-table3-nfe"} <= set(available())
    table3 = plan(load_reproduction("addt-table3-nfe"))
    assert [(c.entry, c.norm) for c in table3[:4]] == [("dp_ddpm[nfe=5]", "linf"), ("dp_ddpm[nfe=5]", "l2"),
                                                      ("dp_ddpm_addt[nfe=5]", "linf"), ("dp_ddpm_addt[nfe=5]", "l2")]
    assert len(table3) == 20 and {c.request.n_samples for c in table3} == {1024}
    assert table3[-2].entry == "dp_ddpm_addt[nfe=100]" and table3[-2].reported == {"clean": "85.64", "robust": "51.46"}
    assert all(c.request.protocol == "paper" and c.request.dataset == "cifar10" for c in table3)


def test_dry_run_prices_a_cell_from_draws_and_network_calls(capsys) -> None:
    repro = load_reproduction("addt-table3-nfe")
    cells = {(c.entry, c.norm): c for c in plan(repro)}
    default = estimate(cells[("dp_ddpm[nfe=100]", "linf")], repro.gpu_ms_per_call)
    assert default["gradient_draws"] == 200 and default["network_calls"] == 101
    # the file's calibration: the paper's 5 h on four GPUs for this cell (at K = 1; here K = 10)
    assert 19 < default["gpu_hours"] < 23
    assert estimate(cells[("dp_ddpm[nfe=5]", "linf")], repro.gpu_ms_per_call)["gpu_hours"] < default["gpu_hours"] / 10
    assert main(["reproduce", "addt-table2-cifar10", "--dry-run", "--norms", "linf"]) == 0
    out = capsys.readouterr().out
    assert "13 cells" in out and "gdmp[guidance=ssim]" in out and "estimated total" in out and "GPU-hours" in out
    assert main(["reproduce", "addt-table2-cifar10", "--dry-run", "--entries", "gdmp[guidance=ssim]; coup"]) == 0
    out = capsys.readouterr().out
    assert "4 cells" in out and "gdmp[guidance=ssim]" in out and "dp_ddim" not in out


def test_unknown_names_fail_with_the_valid_choices() -> None:
    with pytest.raises(UnknownNameError, match=r"Valid: .*addt-table2-cifar10, addt-table3-nfe"):
        load_reproduction("addt-table9")
    with pytest.raises(ConfigError, match="reports only l2, linf"):
        plan(load_reproduction("addt-table3-nfe"), norms=["l1"])
    with pytest.raises(ConfigError, match=r"--entries gdmp\[guidance=SSIM\]: addt-table2-cifar10's rows are none, dp_ddim"):
        plan(load_reproduction("addt-table2-cifar10"), entries=["gdmp[guidance=SSIM]"])


def test_a_protocol_runs_end_to_end_and_prints_reported_beside_measured(cifar_cache, capsys) -> None:  # noqa: F811
    from safetensors.torch import save_file

    from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

    torch.manual_seed(1)  # a random "ADDT fine-tune" in the original format `bench addt train` writes
    save_file({k: v.contiguous() for k, v in ddpm_cifar10_unet().state_dict().items()},
              str(cifar_cache / "models" / "addt-ddpm-cifar10.safetensors"))
    db = f"sqlite:///{cifar_cache / 'repro.db'}"
    args = ["reproduce", "addt-table3-nfe", "--n-samples", "2", "--draws", "1", "--norms", "linf",
            "--defense-opt", "nfe=1", "--attack-opt", "steps=1", "--attack-opt", "eot=1", "--db", db]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dp_ddpm_addt[nfe=100]" in out and "85.64 / 51.46" in out and "(n=2, run " in out
    assert main(args) == 0  # again: every cell is complete and skipped
    assert "(n=2, run " in capsys.readouterr().out


# --- every reproduction file: parses, names registered plug-ins, agrees with the literature records ---

ADDT_FILES = {"addt-table1-eot1", "addt-table1-eot10", "addt-table2-cifar10", "addt-table3-nfe", "addt-table9-edm",
              "addt-table10-ddim-nfe", "addt-table11-pc", "addt-table12-perturbations", "addt-table13-autoattack",
              "addt-table13-autoattack-ours", "addt-table13-pgd-eot10", "addt-table14-autoattack-addt",
              "addt-table15-lambda", "addt-table6-tinyimagenet"}


def _literature_rows() -> list[tuple[str, str, str, tuple[str, int | None], str | None, str]]:
    """(table, bench_defense, norm, attack key, clean, robust) of every ADDT row in results/literature."""
    import json
    from pathlib import Path

    rows = []
    for path in sorted((Path(__file__).resolve().parents[1] / "results" / "literature").glob("*/addt-iclr2025__*.json")):
        record = json.loads(path.read_text())
        for row in record["rows"]:
            label = row["protocol"]["attack"]
            attack = (("pgd_eot", int(row["protocol"]["eot"])) if label.startswith("PGD-20") else
                      ("aa_rand", None) if label.startswith("AutoAttack rand, original") else
                      ("aa_rand_fixed", None) if label.startswith("AutoAttack rand, fixed") else (label, None))
            rows.append((record["table"], record["bench_defense"], row["norm"], attack, row["clean"], row["robust"]))
    return rows


def _reported_cells() -> list[tuple[str, str, dict, str, tuple[str, int | None], str | None, str]]:
    """(table, defense name, entry options, norm, attack key, clean, robust) of every cell of the ADDT files."""
    import re

    from bench.core.attack import ATTACKS
    from bench.core.config import build_config, split_entry

    cells = []
    for key in sorted(ADDT_FILES):
        repro = load_reproduction(key)
        table = "Table " + re.search(r"arXiv:2404\.14309, Table (\d+)$", repro.source).group(1)
        config = build_config(ATTACKS.get(repro.attack).config_cls, repro.attack_options)
        attack = (repro.attack, config.eot if repro.attack == "pgd_eot" else None)
        for spec in repro.cells:
            name, options = split_entry(spec["defense"])
            for norm, numbers in spec["reported"].items():
                cells.append((table, name, options, norm, attack, numbers.get("clean"), numbers["robust"]))
    return cells


def test_every_reproduction_file_parses_and_names_registered_plugins() -> None:
    import re

    from bench.core.attack import ATTACKS
    from bench.core.config import build_config, split_entry
    from bench.core.defense import DEFENSES

    assert ADDT_FILES <= set(available())
    for key in available():
        repro = load_reproduction(key)
        assert repro.name == key and repro.title and repro.source and repro.n_samples > 0
        if repro.kind == "figure":
            _check_figure_file(repro)
            continue
        assert repro.attack in ATTACKS.names(), (key, repro.attack)
        build_config(ATTACKS.get(repro.attack).config_cls, repro.attack_options)  # the file's options are valid
        assert repro.cells or repro.needs, f"{key}: no cell and no `needs`"
        for spec in repro.cells:
            name, options = split_entry(spec["defense"])
            assert name in DEFENSES.names(), (key, spec["defense"])
            build_config(DEFENSES.get(name).config_cls, options)  # unknown or mistyped options raise
            assert spec["reported"] and set(spec["reported"]) <= {"linf", "l2"}, (key, spec)
            for numbers in spec["reported"].values():
                assert "robust" in numbers and set(numbers) <= {"clean", "robust"}, (key, spec)
                assert all(isinstance(v, str) and re.fullmatch(r"\d{1,3}\.\d{2}", v) for v in numbers.values()), spec
        cells = plan(repro)
        assert len(cells) == sum(len(spec["reported"]) for spec in repro.cells) * len(repro.settings)
        assert all(c.request.attack_options == repro.attack_options for c in cells)


def _check_figure_file(repro) -> None:
    from bench.core.config import build_config, split_entry
    from bench.core.defense import DEFENSES
    from bench.harness.studies import STUDIES

    assert repro.study in STUDIES.names() and repro.claim and repro.subjects
    for subject in repro.subjects:
        for entry in [subject["defense"], *(subject.get("values", []) if repro.study == "generation" else [])]:
            name, options = split_entry(entry)
            build_config(DEFENSES.get(name).config_cls, {**options, **subject.get("defense_options", {})})
    assert len(plan_studies(repro)) == len(repro.subjects) == len(plan_studies(repro, dataset="toy"))


FIGURE_FILES = {"addt-figure1-trajectory", "addt-figure2-settings", "addt-figure3-landscape", "addt-figure6-addt-settings",
                "addt-figure7-gradsim", "addt-figure8-efficacy", "addt-table7-generation"}


def test_every_table_and_figure_of_the_paper_has_a_file() -> None:
    """Tables 1, 2, 3, 5, 6, 7, 9-15 and Figures 1, 2, 3, 6/9, 7, 8 (Table 4 needs classifiers this
    project does not have; Table 8 is a list of what each setting knows)."""
    import re

    assert ADDT_FILES | FIGURE_FILES <= set(available())
    tables = {int(m.group(1)) for key in available() if (m := re.match(r"addt-table(\d+)", key))}
    figures = {int(m.group(1)) for key in available() if (m := re.match(r"addt-figure(\d+)", key))}
    assert tables >= {1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15} and figures >= {1, 2, 3, 6, 7, 8}


# a smoke budget for the end-to-end test: one attack iteration and one EoT draw
SMOKE_ATTACK = {"pgd_eot": {"steps": 1, "eot": 1}, "aa_rand": {"n_iter": 1, "eot": 1},
                "aa_rand_fixed": {"n_iter": 1, "eot": 1, "eval_draws": 1}}
SMOKE_STUDY = {"gradsim": (["1", "2"], {"max_attack_eot": 1, "steps": 1}), "efficacy": (["1", "2"], {}),
               "trajectory": ([], {"steps": 2}), "landscape": (["3"], {"steps": 2}),
               "addt-settings": (["5"], {"steps": 1, "eot": 1}), "settings": (["white", "dw_both"], {"steps": 1, "eot": 1}),
               "generation": (None, {})}


@pytest.mark.parametrize("key", sorted(ADDT_FILES | FIGURE_FILES))
def test_every_file_runs_end_to_end_on_the_toy_suite(key, tmp_path) -> None:
    """`bench reproduce KEY --dataset toy --n-samples 2`, at a smoke budget (one attack iteration;
    a table runs two cells, a figure each subject with its sweep cut short; every
    defense entry runs in the contract tests)."""
    import dataclasses

    from bench.harness.reproduce import run, run_studies
    from bench.harness.store import open_store

    engine = open_store(f"sqlite:///{tmp_path / 'b.sqlite'}")
    repro = load_reproduction(key)
    if repro.kind == "figure":
        values, options = SMOKE_STUDY[repro.study]
        cells = [dataclasses.replace(c, request=dataclasses.replace(
                     c.request, values=c.request.values[:1] if values is None else values,
                     attack_options={**c.request.attack_options, **options}, eval_draws=2))
                 for c in plan_studies(repro, n_samples=2, dataset="toy", out_dir=tmp_path)]
        for cell in run_studies(engine, cells):
            assert cell.result.table and (tmp_path / f"{cell.result.study_id}-{repro.study}.json").exists()
        return
    planned = plan(repro, n_samples=2, eval_draws=2, dataset="toy", attack_options=SMOKE_ATTACK[repro.attack])
    groups: dict[tuple, list] = {}  # the cheapest cell of the first and the last (defense, fine-tune) the file names
    for cell in planned:
        groups.setdefault((cell.request.defense, cell.request.defense_options.get("fine_tune")), []).append(cell)
    cheapest = [min(g, key=lambda c: estimate(c, 1.0)["call_images"]) for g in groups.values()]
    cells = [cheapest[0], cheapest[-1]] if len(cheapest) > 1 else cheapest
    assert all(c.request.dataset == "toy" and c.request.protocol == "toy" and c.request.classifier is None for c in cells)
    for cell in run(engine, cells):
        assert cell.action == "started" and cell.metrics["n"] == 2


def test_a_stored_run_from_before_an_option_existed_is_still_equivalent(tmp_path) -> None:
    """A run stored without a field its config class gained later (the ADDT entries' fine_tune) ran
    at that field's default: `bench reproduce` and `bench grid` skip it instead of re-running."""
    import dataclasses

    from sqlalchemy.orm import Session

    from bench.harness.grid import find_equivalent
    from bench.harness.runner import RunRequest, start_run
    from bench.harness.store import Run, open_store

    engine = open_store(f"sqlite:///{tmp_path / 'b.sqlite'}")
    request = RunRequest(defense="dp_ddpm_addt", attack="pgd_eot", dataset="toy", n_samples=2, eval_draws=2,
                         defense_options={"nfe": 5}, attack_options={"steps": 1, "eot": 1})
    run_id, _ = start_run(engine, request)
    with Session(engine) as session, session.begin():
        run = session.get(Run, run_id)
        run.defense_config = {k: v for k, v in run.defense_config.items() if k != "fine_tune"}
    assert find_equivalent(engine, request).id == run_id
    other = dataclasses.replace(request, defense_options={"nfe": 5, "fine_tune": "clean"})
    assert find_equivalent(engine, other) is None


def test_a_file_attack_options_reach_every_cell_under_the_command_line_ones() -> None:
    eot1 = plan(load_reproduction("addt-table1-eot1"))
    assert {c.entry for c in eot1} == {"diffpure[t_star=0.1]", "gdmp", "dp_ddpm", "dp_ddim"}
    assert all(c.request.attack_options == {"eot": 1} and c.norm == "linf" for c in eot1)
    cell = next(c for c in eot1 if c.entry == "dp_ddpm")
    assert estimate(cell, 3.5)["gradient_draws"] == 20 and cell.reported == {"clean": "85.94", "robust": "60.25"}
    overridden = plan(load_reproduction("addt-table1-eot1"), attack_options={"eot": "2", "steps": "5"})
    assert overridden[0].request.attack_options == {"eot": "2", "steps": "5"}


def test_reported_numbers_agree_with_the_literature_records() -> None:
    """Every cell at its plug-in's defaults that has literature rows of the same table, defense, norm
    and attack prints one of their (clean, robust) pairs; every literature row with a bench defense
    is some cell of its table (the records were checked by hand against the paper)."""
    from bench.core.config import build_config
    from bench.core.defense import DEFENSES

    literature = _literature_rows()
    cells = _reported_cells()
    assert {row[0] for row in literature if row[1]} <= {cell[0] for cell in cells}  # every table has a file
    for table, name, options, norm, attack, clean, robust in cells:
        config_cls = DEFENSES.get(name).config_cls
        if build_config(config_cls, options) != build_config(config_cls, {}):
            continue  # a variant (e.g. gdmp[guidance=ssim]); covered by the reverse check below
        printed = {(c, r) for t, d, n, a, c, r in literature if (t, d, n, a) == (table, name, norm, attack)}
        assert not printed or (clean, robust) in printed, (table, name, options, norm, attack, clean, robust, printed)
    for table, defense, norm, attack, clean, robust in literature:
        if defense is None:
            continue  # no plug-in here (COUP, ADDT + extra corrector, EDM-ODE + ADDT under no bench name)
        assert any((t, n, m, a, c, r) == (table, defense, norm, attack, clean, robust)
                   for t, n, _, m, a, c, r in cells), (table, defense, norm, attack, clean, robust)


def test_list_prints_every_reproduction_file_in_table_order(capsys) -> None:
    assert main(["reproduce", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(available())
    names = [line.split()[0] for line in lines]
    assert names.index("addt-table2-cifar10") < names.index("addt-table9-edm") < names.index("addt-table10-ddim-nfe")
    for line in lines:
        repro = load_reproduction(line.split()[0])
        count = f" {len(repro.subjects)} studies " if repro.kind == "figure" else f" {len(plan(repro))} cells "
        assert count in line and repro.title in line
        assert (f"not runnable here: {repro.needs}" in line) == bool(repro.needs)
    assert main(["reproduce"]) == 2  # NAME is optional only with --list
    assert "--list" in capsys.readouterr().err


def test_a_file_without_runnable_cells_is_listed_with_what_it_needs(tmp_path, monkeypatch, capsys) -> None:
    import bench.harness.reproduce as reproduce

    (tmp_path / "paper-table7.toml").write_text(
        'name = "paper-table7"\ntitle = "A table of CIFAR-100 rows"\nsource = "a paper, Table 7"\ndataset = "cifar10"\n'
        'n_samples = 8\nattack = "pgd_eot"\nneeds = "CIFAR-100 weights"\ncells = []\n')
    monkeypatch.setattr(reproduce, "PROTOCOL_DIR", tmp_path)
    assert reproduce.available() == ["paper-table7"] and plan(load_reproduction("paper-table7")) == []
    assert main(["reproduce", "--list"]) == 0
    assert "0 cells" in (out := capsys.readouterr().out) and "not runnable here: CIFAR-100 weights" in out
    assert main(["reproduce", "paper-table7", "--dry-run"]) == 2
    assert "no cell runnable here; it needs CIFAR-100 weights" in capsys.readouterr().err


def test_skip_recorded_leaves_out_the_cells_a_committed_record_ran(tmp_path, capsys) -> None:
    """``--skip-recorded DIR`` matches cells to records as the site's paper page does: the shipped
    toy records cover every cell of Table 3; a folder holding one of them covers that cell only."""
    import shutil

    from bench.core.provenance import PROJECT_ROOT

    toy = PROJECT_ROOT / "results" / "toy"
    assert main(["reproduce", "addt-table3-nfe", "--dataset", "toy", "--dry-run", "--skip-recorded", str(toy)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped, already recorded:") == 20 and "nothing to run" in out
    one = sorted(toy.rglob("dp_ddpm-nfe=100__pgd_eot__white__n64.json"))[0]
    shutil.copy(one, tmp_path / one.name)
    assert main(["reproduce", "addt-table3-nfe", "--dataset", "toy", "--dry-run", "--skip-recorded", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped, already recorded:") == 1 and "19 cells" in out
    assert main(["reproduce", "addt-table3-nfe", "--dry-run", "--skip-recorded", str(tmp_path / "none")]) == 2
