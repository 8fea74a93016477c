"""Records (export, schema, validation errors) and the static site (ranking, escaping, CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.publish.leaderboard import build_site, paper_url
from bench.harness.perf import write_synthetic_records
from bench.publish.records import RecordError, load_record_file, validate_paths, validate_record
from bench.harness.runner import RunRequest, execute_run, start_run
from bench.harness.store import Run, open_store


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two real toy runs (pgd_eot white and dw_both) exported as records."""
    from sqlalchemy.orm import Session

    from bench.publish.records import export_run

    root = tmp_path_factory.mktemp("lb")
    engine = open_store(f"sqlite:///{root / 'runs.db'}")
    paths = []
    for setting in ("white", "dw_both"):
        request = RunRequest(defense="dp_ddim", attack="pgd_eot", setting=setting, n_samples=6, eval_draws=3,
                             defense_options={"nfe": 5}, attack_options={"steps": 2, "eot": 2})
        run_id, parts = start_run(engine, request)
        execute_run(engine, run_id, parts=parts)
        with Session(engine) as session:
            paths.append(export_run(session.get(Run, run_id), root / "results"))
    return root / "results", paths


def test_export_writes_a_valid_reviewable_record(exported) -> None:
    results, paths = exported
    assert paths[0].relative_to(results).as_posix() == "toy/linf-0.25/toy/dp_ddim-nfe=5__pgd_eot-eot=2,steps=2__white.json"
    record = load_record_file(paths[0])
    data = json.loads(paths[0].read_text())
    assert data["schema_version"] == 1 and isinstance(data["robust"]["expected"]["acc"], float)
    assert record.dataset.sample_indices == list(range(6)) and record.eval_draws == 3
    assert record.git_commit is not None and "torch" in record.package_versions
    assert '"clean_correct": [' in paths[0].read_text()  # per-sample lists stay on one line
    assert [p.m for p in record.rob_m] == [1, 2, 3] and abs(record.rob_m[0].acc - record.robust.expected.acc) < 1e-6
    assert record.cost.gradient_draws_per_sample == 2 * 2  # pgd_eot steps x EoT under white


def _mutate(path: Path, change) -> dict:  # noqa: ANN001
    data = json.loads(path.read_text())
    change(data)
    return data


@pytest.mark.parametrize("change, message", [
    (lambda d: d["robust"]["expected"].update(acc=1.5), "robust.expected.acc: Input should be less than or equal to 1"),
    (lambda d: d["defense"].update(name="dp_ddpm2"), "unknown defense 'dp_ddpm2'"),
    (lambda d: d["clean"]["expected"].pop("ci_low"), "clean.expected.ci_low: Field required"),
    (lambda d: d["robust"]["expected"].update(ci_high=0.0, ci_low=0.0), "does not contain acc"),
    (lambda d: d["samples"]["adv_correct"].__setitem__(0, 99), "counts outside 0..eval_draws"),
    (lambda d: d.update(setting="grey"), "setting: String should match pattern"),
    (lambda d: d["robust"]["expected"].update(acc=0.0, ci_low=0.0), "does not follow from the per-sample outcomes"),
    (lambda d: d["rob_m"][1].update(acc=d["rob_m"][1]["acc"] / 2 + 0.01, ci_low=0.0, ci_high=1.0),
     "rob_m M=2: acc"),
])
def test_malformed_records_fail_with_file_field_and_problem(exported, change, message) -> None:
    _, paths = exported
    data = _mutate(paths[0], change)
    from bench.publish.records import registry_names

    with pytest.raises(RecordError) as err:
        validate_record(data, paths[0], *registry_names())
    assert str(paths[0]) in str(err.value) and message in str(err.value)


def test_invalid_record_never_reaches_the_site(exported, tmp_path) -> None:
    results, paths = exported
    bad = tmp_path / "results" / "toy"
    bad.mkdir(parents=True)
    (bad / "broken.json").write_text("{not json")
    good = tmp_path / "results" / paths[0].name
    good.write_text(paths[0].read_text())
    records, errors = validate_paths([tmp_path / "results"])
    assert len(records) == 1 and len(errors) == 1 and "broken.json: not valid JSON" in errors[0]
    with pytest.raises(BenchError, match="1 invalid record"):
        build_site(tmp_path / "results", tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_site_ranks_by_the_per_sample_worst_case_and_escapes_text(tmp_path) -> None:
    results = tmp_path / "results"
    write_synthetic_records(results, 48)
    # an entry whose name carries markup: it must be rendered inert everywhere
    victim = sorted(results.rglob("*__aa_rand__white.json"))[0]  # not a ranking attack: the ranking is unchanged
    data = json.loads(victim.read_text())
    data["entry"] = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    data["classifier"] = "<b>bold</b>"
    victim.write_text(json.dumps(data))
    # one entry loses its diffhammer record: it must be listed as incomplete, not ranked
    dropped = sorted(results.rglob("*__diffhammer__white.json"))[-1]
    dropped_entry = json.loads(dropped.read_text())["entry"]
    dropped.unlink()
    summary = build_site(results, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<script>alert" not in index and "&lt;script&gt;alert" in index and "<b>bold</b>" not in index
    for page in (tmp_path / "site" / "entries").glob("*.html"):
        assert "<script>alert" not in page.read_text()
    assert summary["records"] == 47
    # brute force: per entry and track, the mean over images of the lowest expected accuracy any ranking attack leaves
    per_track: dict = {}
    for path in results.rglob("*.json"):
        r = json.loads(path.read_text())
        if r["setting"] == "white" and r["attack"]["name"] in ("pgd_eot", "aa_rand_fixed", "diffhammer"):
            key = (r["dataset"]["name"], path.parent.name)
            per_track.setdefault(key, {}).setdefault(r["entry"], {})[r["attack"]["name"]] = [
                c / r["eval_draws"] for c in r["samples"]["adv_correct"]]
    checked, incomplete = 0, []
    for table_csv in (tmp_path / "site" / "tables").glob("*.csv"):
        dataset, threat, _ = table_csv.stem.split("__")
        expected = per_track[(dataset, threat)]
        for row in csv.DictReader(table_csv.open()):
            if row["status"] == "ranked":
                attacks = expected[row["entry"]]
                worst = [min(v) for v in zip(*attacks.values())]
                assert float(row["robust_acc"]) == pytest.approx(sum(worst) / len(worst))
                assert int(row["rank_low"]) <= int(row["rank"]) <= int(row["rank_high"])
                checked += 1
            else:
                incomplete.append((row["entry"], row["status"]))
    assert checked >= 6
    assert (dropped_entry, "incomplete: no record for diffhammer") in incomplete
    assert json.loads((tmp_path / "site" / "records" / "index.json").read_text())


def test_site_rebuilds_byte_identically(tmp_path) -> None:
    write_synthetic_records(tmp_path / "results", 24)
    build_site(tmp_path / "results", tmp_path / "a")
    build_site(tmp_path / "results", tmp_path / "b")
    for page in ("index.html", *(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.html")),
                 *(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a" / "tables").glob("*.csv"))):
        assert (tmp_path / "a" / page).read_bytes() == (tmp_path / "b" / page).read_bytes(), page


def test_paper_links() -> None:
    assert paper_url("Nie et al., ICML 2022, arXiv:2205.07460") == "https://arxiv.org/abs/2205.07460"
    assert paper_url("-") is None


def test_default_options_stored_as_json_lists_do_not_rename_the_attack() -> None:
    """Configs come back from the database with lists where the dataclass has tuples: the
    default AutoAttack stays plain ``aa_rand_fixed``; a real change is named."""
    import dataclasses

    from bench.core.attack import ATTACKS
    from bench.publish.records import _non_default

    defaults = dataclasses.asdict(ATTACKS.get("aa_rand_fixed").config_cls())
    stored = {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()}
    assert _non_default(stored, defaults) == []
    assert _non_default({**stored, "attacks": ["apgd-ce"]}, defaults) == ["attacks=apgd-ce"]
