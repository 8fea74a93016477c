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
def exported(exported_records) -> tuple[Path, list[Path]]:
    return exported_records


def test_export_writes_a_valid_reviewable_record(exported) -> None:
    results, paths = exported
    # 6 images, not the toy protocol's 256: the count is in the name
    assert paths[0].relative_to(results).as_posix() == "toy/linf-0.25/toy/dp_ddim-nfe=5__pgd_eot-eot=2,steps=2__white__n6.json"
    record = load_record_file(paths[0])
    data = json.loads(paths[0].read_text())
    assert data["schema_version"] == 2 and isinstance(data["robust"]["expected"]["acc"], float)
    assert len(data["samples"]["select_preds"]) == 6 and all(len(row) == 3 for row in data["samples"]["adv_preds"])
    assert record.preds("adv_preds").shape == (6, 3)  # one string of 3 one-digit classes per sample
    assert record.rob_m[0].ci_low == record.robust.expected.ci_low  # one interval per statistic: Rob(1) = expected
    assert record.rob_m[-1].ci_high == record.robust.worst.ci_high  # and Rob(K) = worst-of-K
    assert record.dataset.sample_indices == list(range(6)) and record.eval_draws == 3
    assert record.git_commit is not None and "torch" in record.package_versions
    assert '"clean_correct": [' in paths[0].read_text()  # per-sample lists stay on one line
    assert [p.m for p in record.rob_m] == [1, 2, 3] and abs(record.rob_m[0].acc - record.robust.expected.acc) < 1e-6
    assert record.cost.gradient_draws_per_sample == 2 * 2  # pgd_eot steps x EoT under white


def _mutate(path: Path, change) -> dict:  # noqa: ANN001
    data = json.loads(path.read_text())
    change(data)
    return data


def _flip(data: dict, i: int) -> None:
    """Make adversarial draw 0 of sample i right if it was wrong, wrong if it was right (one digit per draw)."""
    label, row = data["samples"]["label"][i], data["samples"]["adv_preds"][i]
    first = str(label) if int(row[0]) != label else str((label + 1) % 10)
    data["samples"]["adv_preds"][i] = first + row[1:]


def _relabel(data: dict, i: int) -> None:
    """Give sample i another label, renaming the classes of its draws so that every count stays."""
    old = data["samples"]["label"][i]
    new = (old + 1) % 10
    data["samples"]["label"][i] = new
    swap = {str(old): str(new), str(new): str(old)}
    for name in ("clean_preds", "adv_preds", "select_preds"):
        data["samples"][name][i] = "".join(swap.get(c, c) for c in data["samples"][name][i])


@pytest.mark.parametrize("change, message", [
    (lambda d: d["robust"]["expected"].update(acc=1.5), "robust.expected.acc: Input should be less than or equal to 1"),
    (lambda d: d["defense"].update(name="dp_ddpm2"), "unknown defense 'dp_ddpm2'"),
    (lambda d: d["clean"]["expected"].pop("ci_low"), "clean.expected.ci_low: Field required"),
    (lambda d: d["robust"]["expected"].update(ci_high=0.0, ci_low=0.0), "does not contain acc"),
    (lambda d: d["samples"]["adv_correct"].__setitem__(0, 99), "counts outside 0..eval_draws"),
    (lambda d: d.update(setting="grey"), "setting: String should match pattern"),
    # every summary separately against the per-draw outcomes
    (lambda d: d["robust"]["expected"].update(acc=0.0, ci_low=0.0), "robust.expected.acc: 0.000000 does not follow"),
    (lambda d: d["robust"]["expected"].update(ci_low=0.0), "robust.expected.ci_low: 0.000000 does not follow"),
    (lambda d: d["robust"]["worst"].update(acc=1.0, ci_high=1.0), "robust.worst.acc: 1.000000 does not follow"),
    (lambda d: d["clean"]["majority"].update(acc=0.0, ci_low=0.0), "clean.majority.acc: 0.000000 does not follow"),
    (lambda d: d["rob_m"][1].update(acc=d["rob_m"][1]["acc"] / 2 + 0.01, ci_low=0.0, ci_high=1.0),
     "rob_m.1.acc"),
    (lambda d: d["cost"].update(gradient_draws_per_sample=1.0), "cost.gradient_draws_per_sample: 1.000000 does not follow"),
    (lambda d: _flip(d, 0), "samples.adv_correct: ["),
    (lambda d: d["samples"].pop("select_preds"), "samples.select_preds missing"),
    (lambda d: _relabel(d, 0), "samples.label: 1 label(s) differ from the toy test split"),
    (lambda d: d["dataset"].update(sample_indices=[0, 0, 1, 2, 3, 4]), "repeated indices [0]"),
    (lambda d: d["dataset"].update(sample_indices=[0, 1, 2, 3, 4, 100000]), "[100000] outside the toy test split"),
    (lambda d: d.update(entry="gdmp"), "entry: 'gdmp' is not the entry its defense"),
])
def test_malformed_records_fail_with_file_field_and_problem(exported, change, message) -> None:
    _, paths = exported
    data = _mutate(paths[0], change)
    from bench.publish.records import registry_names

    with pytest.raises(RecordError) as err:
        validate_record(data, paths[0], *registry_names())
    assert str(paths[0]) in str(err.value) and message in str(err.value)


def test_export_never_overwrites_another_runs_record(exported, tmp_path) -> None:
    """A seed-1 run is named apart from the seed-0 record; a file that holds another run's record is
    not replaced without --replace, and the error names it."""
    from sqlalchemy.orm import Session

    from bench.publish.records import export_run, record_from_run, record_path

    results, paths = exported
    engine = open_store(f"sqlite:///{results.parent / 'runs.db'}")
    with Session(engine) as session:
        runs = list(session.query(Run).order_by(Run.created_at))
        record = record_from_run(runs[0])
        assert record_path(results, {**record, "seed": 1}).name.endswith("__white__seed1__n6.json")
        other = tmp_path / "other" / paths[0].relative_to(results)
        other.parent.mkdir(parents=True)
        data = json.loads(paths[0].read_text())
        data["run_id"] = "someoneelse"
        other.write_text(json.dumps(data))
        with pytest.raises(RecordError, match="holds the record of run someoneelse"):
            export_run(runs[0], tmp_path / "other")
        assert json.loads(other.read_text())["run_id"] == "someoneelse"
        assert export_run(runs[0], tmp_path / "other", replace=True) == other
        assert export_run(runs[0], results) == paths[0]  # re-exporting the same run is fine


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
    from bench.publish.records import entry_key

    data["classifier"] = '<script>alert("x")</script><img src=x onerror=alert(1)><b>bold</b>'
    data["entry"] = entry_key(data["defense"]["name"], data["defense"]["config"], data["classifier"], "toy")
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
    # brute force: per entry and track, the mean over images of the evaluation accuracy of the attack
    # whose selection draws are lowest (ties: mean over the tied attacks)
    per_track: dict = {}
    for path in results.rglob("*.json"):
        r = json.loads(path.read_text())
        if r["setting"] == "white" and r["attack"]["name"] in ("pgd_eot", "aa_rand_fixed", "diffhammer"):
            key = (r["dataset"]["name"], path.parent.name)
            labels, w = r["samples"]["label"], 2 if r["dataset"]["name"] == "cifar100" else 1  # digits per class

            def draws(text: str) -> list[int]:
                return [int(text[i:i + w]) for i in range(0, len(text), w)]

            per_track.setdefault(key, {}).setdefault(r["entry"], {})[r["attack"]["name"]] = [
                (sum(p == y for p in draws(sel)) / len(draws(sel)), sum(p == y for p in draws(adv)) / len(draws(adv)))
                for y, sel, adv in zip(labels, r["samples"]["select_preds"], r["samples"]["adv_preds"])]
    checked, incomplete = 0, []
    for table_csv in (tmp_path / "site" / "tables").glob("*.csv"):
        dataset, threat, _ = table_csv.stem.split("__")
        expected = per_track[(dataset, threat)]
        for row in csv.DictReader(table_csv.open()):
            if row["status"] == "ranked":
                attacks = expected[row["entry"]]
                worst = []
                for per_image in zip(*attacks.values()):
                    lowest = min(sel for sel, _ in per_image)
                    chosen = [adv for sel, adv in per_image if sel == lowest]
                    worst.append(sum(chosen) / len(chosen))
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


def test_the_two_process_build_writes_what_one_process_writes(tmp_path) -> None:
    """The build splits its work between two processes (bench.publish.forked); without fork it
    runs inline. Every file of the site, the database included, is the same either way."""
    import sqlite3

    write_synthetic_records(tmp_path / "results", 24)
    build_site(tmp_path / "results", tmp_path / "two")
    build_site(tmp_path / "results", tmp_path / "one", processes=1)
    files = sorted(p.relative_to(tmp_path / "one").as_posix() for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*")
                           if p.is_file())
    assert sum(f.startswith("entries/") for f in files) >= 2  # both halves of the entry pages
    for name in files:
        if name != "leaderboard.sqlite":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    dumps = ["\n".join(sqlite3.connect(tmp_path / d / "leaderboard.sqlite").iterdump()) for d in ("one", "two")]
    assert dumps[0] == dumps[1] and "INSERT INTO" in dumps[0]


@pytest.mark.parametrize("processes", [2, 1])
def test_a_record_that_passes_the_schema_but_not_the_checks_publishes_nothing(tmp_path, processes: int) -> None:
    """The pages are built from records parsed by the schema alone while a second process checks
    them; a record whose summary its own outcomes do not support stops the build before anything
    is published, and the staging folder is removed (in one process: before any page is rendered)."""
    write_synthetic_records(tmp_path / "results", 24)
    build_site(tmp_path / "results", tmp_path / "site", processes=processes)
    before = {p: p.read_bytes() for p in (tmp_path / "site").rglob("*.html")}
    victim = sorted((tmp_path / "results").rglob("*.json"))[3]
    data = json.loads(victim.read_text())
    stated = data["robust"]["expected"]
    stated["acc"] = stated["ci_low"] + 0.25 * (stated["ci_high"] - stated["ci_low"])  # in its CI; not the outcomes'
    victim.write_text(json.dumps(data))
    with pytest.raises(BenchError, match=r"(?s)1 invalid record.*robust"):
        build_site(tmp_path / "results", tmp_path / "site", processes=processes)
    assert {p: p.read_bytes() for p in (tmp_path / "site").rglob("*.html")} == before  # the old site stands
    assert not (tmp_path / "site.building").exists()


@pytest.mark.parametrize("ready_after", [0, 2, None])
def test_the_site_wide_pages_are_rendered_once_between_chunks_or_after_the_last(ready_after: int | None) -> None:
    """The parent draws entry pages until the check has reported, then renders the site-wide pages
    once: between two chunks as soon as the check is ready, or after its last chunk."""
    from bench.publish.forked import WorkCounter
    from bench.publish.leaderboard import _drawn_until

    counter, polls, events = WorkCounter(10, chunk=3), [], []

    def ready() -> bool:
        polls.append(len(events))
        return ready_after is not None and len(polls) > ready_after

    for position in _drawn_until(counter, ready, lambda: events.append("site pages")):
        events.append(position)
    pages_at = events.index("site pages")
    assert [e for e in events if e != "site pages"] == list(range(10)) and events.count("site pages") == 1
    assert pages_at == {0: 0, 2: 6, None: 10}[ready_after]


def test_a_failing_site_wide_step_stops_the_entry_pages() -> None:
    from bench.publish.forked import WorkCounter
    from bench.publish.leaderboard import _drawn_until

    def fail() -> None:
        raise BenchError("1 invalid record(s)")

    drawn = []
    with pytest.raises(BenchError, match="invalid"):
        for position in _drawn_until(WorkCounter(10, chunk=3), lambda: len(drawn) >= 3, fail):
            drawn.append(position)
    assert drawn == [0, 1, 2]


def test_a_forked_call_returns_its_value_and_raises_its_error() -> None:
    from bench.publish.forked import start

    assert start("sum", sum, [1, 2, 3]).result() == 6
    with pytest.raises(BenchError, match="no such"):
        start("fails", _raise_bench_error, "no such thing").result()


def _raise_bench_error(message: str) -> None:
    raise BenchError(message)


def test_a_shared_work_counter_hands_every_position_out_exactly_once_across_processes() -> None:
    """The entry pages are split by a counter both processes draw from: together they get every
    position once, none twice, and both get some (each position takes 10 ms here)."""
    import time

    from bench.publish.forked import WorkCounter, can_fork, start

    counter = WorkCounter(103, chunk=4)
    child = start("draw", lambda: [p for p in counter if time.sleep(0.01) is None])
    mine = [p for p in counter if time.sleep(0.01) is None]
    theirs = child.result()
    assert sorted(mine + theirs) == list(range(103))
    if can_fork():
        assert mine and theirs
    assert list(WorkCounter(0)) == [] and list(counter) == []
    with pytest.raises(ValueError, match="chunk"):
        WorkCounter(3, chunk=0)


def test_a_child_that_dies_without_reporting_is_an_error_not_a_result() -> None:
    import os

    from bench.publish.forked import can_fork, start

    if not can_fork():
        pytest.skip("needs fork and two CPUs")
    with pytest.raises(BenchError, match="exited with code 3 before reporting"):
        start("dies", os._exit, 3).result()


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


def test_an_off_protocol_record_is_not_ranked_and_says_why(tmp_path) -> None:
    """A pgd_eot record whose config says steps=1 (valid, and consistent with its outcomes) is not
    ranked as if it were the protocol's PGD: its entry becomes incomplete and the page names the
    difference. The same holds for another seed, other evaluation draws or other images."""
    results = tmp_path / "results"
    write_synthetic_records(results, 72)
    pgd = sorted(p for p in results.rglob("*__pgd_eot__white.json") if "/toy/" in p.as_posix())[0]
    data = json.loads(pgd.read_text())
    data["attack"]["config"]["steps"] = 1
    pgd.write_text(json.dumps(data))
    build_site(results, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "off-protocol: attack steps=1, not 20" in index
    from bench.publish.leaderboard import slugify

    page = (tmp_path / "site" / "entries" / f"{slugify(data['entry'])}.html").read_text()
    assert "off-protocol: attack steps=1, not 20" in page
    rows = list(csv.DictReader(next((tmp_path / "site" / "tables").glob("toy__*.csv")).open()))
    row = next(r for r in rows if r["entry"] == data["entry"])
    assert row["status"].startswith("incomplete: no record for pgd_eot; off-protocol records: pgd_eot (1)")


@pytest.mark.parametrize("change, reason", [
    (lambda d: d.update(seed=3), "seed 3, not 0"),
    (lambda d: d["defense"]["config"].update(nfe=5), "defense nfe=5, not 20"),
])
def test_protocol_differences_name_each_field(exported, change, reason) -> None:
    from bench.protocols import load_protocol
    from bench.publish.conformance import protocol_differences
    from bench.publish.records import Record

    _, paths = exported
    data = json.loads(paths[0].read_text())  # 6 images, nfe 5, pgd_eot steps 2 x EoT 2 under the toy protocol
    change(data)
    differences = protocol_differences(Record.model_validate(data), load_protocol("toy"))
    assert reason in differences
    assert "6 images from index 0, not indices 0–255" in differences and "attack steps=2, not 20" in differences


def test_scatter_labels_never_overlap_and_the_left_off_ones_are_counted() -> None:
    import re

    from bench.publish.svg import Point, scatter_chart

    crowded = [Point(f"entry-{i}[classifier=synthetic-{i}]", 0.8 + 0.001 * i, 0.2 + 0.002 * (i % 3), (0.7, 0.9),
                     (0.1, 0.3)) for i in range(8)]
    svg = scatter_chart(crowded, title="t", x_label="clean", y_label="robust")
    labels = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(start|end)" fill="#333">([^<]+)</text>', svg)
    assert 0 < len(labels) < len(crowded)
    from bench.publish.svg import text_width

    boxes = []
    for x, y, anchor, text in labels:
        x0 = float(x) if anchor == "start" else float(x) - text_width(text)
        boxes.append((x0, float(y) - 10, x0 + text_width(text), float(y) + 2))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert f"{len(crowded) - len(labels)} label(s) left off" in svg
    assert svg.count("<circle") == len(crowded)  # every point drawn, each with its name on hover
    spread = [Point(f"e{i}", 0.1 * i, 0.1 * i, (0.1 * i, 0.1 * i), (0.1 * i, 0.1 * i)) for i in range(1, 5)]
    assert "left off" not in scatter_chart(spread, title="t", x_label="x", y_label="y")


def test_record_files_are_rglob_in_pathlib_order_without_the_folders_of_other_files(tmp_path) -> None:
    """The site finds records with os.scandir (rglob was a third of a second per 10k records): the
    same files in the same order as sorted(rglob("*.json")), minus literature / sanity / studies
    folders at any depth, and symlinked folders not followed (as rglob)."""
    import os

    from bench.publish.records import record_files

    root = tmp_path / "results"
    for name in ("a/b.json", "a-b/c.json", "A/z.json", "a/b/deep.json", "x.txt", "top.json", ".hidden.json",
                 "toy/literature/l.json", "toy/sanity/s.json", "studies/st.json", "toy/studies2/kept.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    (root / "folder.json").mkdir()  # a folder by a record's name is listed (and then fails to read)
    os.symlink(root / "a", root / "linked")
    expected = [f for f in sorted(root.rglob("*.json"))
                if not {"literature", "sanity", "studies"} & set(f.relative_to(root).parts[:-1])]
    assert record_files([root]) == expected
    assert root / "linked" / "b.json" not in expected and root / "toy" / "studies2" / "kept.json" in expected
    assert record_files([root / "top.json", root / "a"]) == [root / "top.json", *sorted((root / "a").rglob("*.json"))]


def test_the_runs_section_escapes_every_text_field(tmp_path) -> None:
    """The entry pages' runs section (Python string formatting, not a template) escapes each text a
    submitter writes, and JSON configs as the templates' ``tojson`` does."""
    from bench.publish.records import Record
    from bench.publish.runs_section import runs_section

    write_synthetic_records(tmp_path, 12)
    data = json.loads(sorted(tmp_path.rglob("*.json"))[0].read_text())
    bad = '<script>x</script>&"\''
    data["run_id"] = bad[:60]
    data["cost"]["device"] = bad
    data["git_commit"] = bad
    data["package_versions"] = {"torch": bad, "diffusers": bad}
    data["defense"]["config"]["note"] = bad
    record = Record.model_validate_json(json.dumps(data), context={"unchecked": True})
    html = str(runs_section([(record, f"toy/{bad}.json", bad)]))
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;&amp;&#34;&#39;" in html
    assert '"note": "\\u003cscript\\u003ex\\u003c/script\\u003e\\u0026\\"\\u0027"' in html  # tojson's escapes
    assert html.count("<tr") == 2 and html.count("<details>") == 1  # the header row and the record's row


def test_validation_errors_come_file_by_file(tmp_path) -> None:
    """``bench validate`` and the site build check in passes (schema, record, summaries), but list
    the messages in file order: a summary mismatch in the first file before a schema error in a
    later one."""
    from bench.publish.records import validate_paths

    write_synthetic_records(tmp_path, 12)
    first, *_, last = sorted(tmp_path.rglob("*.json"))
    data = json.loads(first.read_text())
    data["robust"]["expected"]["acc"] = data["robust"]["expected"]["ci_low"]  # summary not its outcomes'
    first.write_text(json.dumps(data))
    data = json.loads(last.read_text())
    data["seed"] = "not a number"  # schema
    last.write_text(json.dumps(data))
    _, errors = validate_paths([tmp_path])
    assert [e.partition(": ")[0] for e in errors] == [str(first), str(last)], errors
    with pytest.raises(BenchError) as failure:
        build_site(tmp_path, tmp_path.parent / "site")
    message = str(failure.value)
    assert message.index(str(first)) < message.index(str(last))


def test_record_texts_are_the_files_bytes(tmp_path) -> None:
    """A record is read as its exact bytes (CRLF kept), so the site's SHA-256 of a record is the
    file's, as ``bench verify --report`` computes it; a non-UTF-8 file is reported, not read."""
    import hashlib

    from bench.publish.records import read_record_texts

    crlf, latin = tmp_path / "a.json", tmp_path / "b.json"
    crlf.write_bytes(b'{\r\n "x": "\xc3\xa9"\r\n}\r\n')
    latin.write_bytes(b'{"x": "\xe9"}')
    texts, errors = read_record_texts([crlf, latin])
    assert [file for file, _ in texts] == [crlf]
    assert hashlib.sha256(texts[0][1].encode("utf-8")).hexdigest() == hashlib.sha256(crlf.read_bytes()).hexdigest()
    assert len(errors) == 1 and errors[0].startswith(f"{latin}: cannot read:")
