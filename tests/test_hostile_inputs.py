"""Regressions for what hostile inputs found: nothing stored is lost or changed, bad requests are
refused before the store is touched, and every refusal is one clear line (exit status 2)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli.main import main
from bench.harness.perf import write_synthetic_records


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- data loss ------------------------------------------------------------------------------

def test_a_foreign_file_in_out_survives_the_site_build(tmp_path, capsys) -> None:
    records = tmp_path / "results"
    write_synthetic_records(records, 6)
    mine = tmp_path / "v"
    mine.mkdir()
    (mine / "f").write_text("x")
    code, output = _bench(capsys, "leaderboard", "build", "--records", str(records), "--out", str(mine))
    assert code == 2 and "did not write" in output and (mine / "f").read_text() == "x"
    for out in (records, tmp_path, Path(".")):  # the records, their parent, the working directory
        code, output = _bench(capsys, "leaderboard", "build", "--records", str(records), "--out", str(out))
        assert code == 2 and "would hold or replace the records" in output, output
    assert len(list(records.rglob("*.json"))) == 6
    site = tmp_path / "site"
    assert _bench(capsys, "leaderboard", "build", "--records", str(records), "--out", str(site))[0] == 0
    assert _bench(capsys, "leaderboard", "build", "--records", str(records), "--out", str(site))[0] == 0  # its own


def test_a_foreign_sqlite_file_is_left_byte_identical(tmp_path, capsys) -> None:
    foreign = tmp_path / "f.db"
    connection = sqlite3.connect(foreign)
    connection.execute("create table runs(x int)")
    connection.commit()
    connection.close()
    before = foreign.read_bytes()
    for argv in (("results", "--db", str(foreign)), ("export", "--all", "--db", str(foreign))):
        code, output = _bench(capsys, *argv)
        assert code == 2 and "another program's SQLite database" in output
    assert foreign.read_bytes() == before and not Path(str(foreign) + "-wal").exists()


# -- silently wrong: records -----------------------------------------------------------------

def test_a_label_outside_the_classes_is_refused(exported_records) -> None:
    from bench.publish.records import RecordError, registry_names, validate_record

    _, paths = exported_records
    data = json.loads(paths[0].read_text())
    data["samples"]["label"][0] = 99
    with pytest.raises(RecordError, match=r"classes \[99\] outside 0..9"):
        validate_record(data, paths[0], *registry_names())


def test_a_record_from_the_future_is_refused(exported_records) -> None:
    from bench.publish.records import RecordError, registry_names, validate_record

    _, paths = exported_records
    data = json.loads(paths[0].read_text())
    data["finished_at"] = "2099-01-01T00:00:00"
    with pytest.raises(RecordError, match="finished_at 2099-01-01T00:00:00 is in the future"):
        validate_record(data, paths[0], *registry_names())


# -- refused before any run row ----------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (("--setting", "dw_semi:999999"), "the largest that fits is"),
    (("--defense", "dp_ddim[votes=100000000]"), "votes=100000000 is too many; the largest that fits is"),
    (("--memory-budget", "1KiB"), "cannot hold one sample's"),
    (("--checkpoint", "sometimes"), "--checkpoint 'sometimes' is not one of never, always, auto"),
    (("--start-index", "-5"), "--start-index -5 is outside the toy test split (valid: 0..599)"),
    (("--start-index", "600"), "--start-index 600 is outside the toy test split (valid: 0..599)"),
    (("--n-samples", "10", "--start-index", "595"), "from index 595 the valid range is 1..5"),
    (("--defense", "DP_DDPM"), "Did you mean 'dp_ddpm'"),
])
def test_bad_requests_are_refused_before_the_store_exists(tmp_path, capsys, argv, message) -> None:
    db = tmp_path / "runs.sqlite"
    options = dict(zip(argv[::2], argv[1::2]))
    full = ["run", "--defense", options.pop("--defense", "dp_ddim"), "--attack", "pgd_eot", "--n-samples", "2",
            "--db", str(db), *[x for kv in options.items() for x in kv]]
    started = time.perf_counter()
    code, output = _bench(capsys, *full)
    assert code == 2 and message in output, output
    assert time.perf_counter() - started < 10
    assert not db.exists()


def test_a_grid_with_a_typo_in_its_last_cell_stores_nothing(tmp_path, capsys) -> None:
    db = tmp_path / "runs.sqlite"
    code, output = _bench(capsys, "grid", "--defenses", "none,nonee", "--attacks", "pgd_eot", "--n-samples", "2",
                          "--db", str(db))
    assert code == 2 and "Unknown defense 'nonee'" in output and "Did you mean 'none'" in output
    assert not db.exists()


# -- stores ------------------------------------------------------------------------------------

def test_read_only_commands_never_create_a_store(tmp_path, capsys) -> None:
    typo = tmp_path / "typo.db"
    for argv in (("results",), ("export", "--all"), ("resume", "abc123"), ("compare", "abc", "def")):
        code, output = _bench(capsys, *argv, "--db", str(typo))
        assert code == 2 and "no bench store at" in output, output
    assert not typo.exists()


def test_a_missing_folder_is_not_created(tmp_path, capsys) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.db"
    code, output = _bench(capsys, "run", "--defense", "none", "--attack", "pgd_eot", "--n-samples", "1",
                          "--db", f"sqlite:///{target}")
    assert code == 2 and f"the folder {target.parent} does not exist" in output
    assert not target.parent.exists()


def test_an_unreachable_server_is_named_as_such(capsys) -> None:
    pytest.importorskip("psycopg")
    code, output = _bench(capsys, "results", "--db", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert code == 2 and "cannot reach the database server" in output and "not a bench database" not in output


def test_a_read_only_store_is_a_clear_error(tmp_path, capsys) -> None:
    import shutil

    from bench.harness.store import open_store

    folder = tmp_path / "ro"
    folder.mkdir()
    store = folder / "ro.sqlite"
    open_store(str(store)).dispose()
    for suffix in ("-wal", "-shm"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(store)]).returncode != 0:
            pytest.skip("making a file read-only for root needs chattr +i, which this filesystem refuses")
    else:
        store.chmod(0o444)
        folder.chmod(0o555)
    try:
        code, output = _bench(capsys, "run", "--defense", "none", "--attack", "pgd_eot", "--n-samples", "1",
                              "--db", str(store))
        assert code == 2 and "read-only" in output, output
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(store)], capture_output=True)
        else:
            folder.chmod(0o755)


@pytest.mark.parametrize("prefix", ["%", "", "____", "a%"])
def test_resume_takes_no_wildcards(exported_records, capsys, prefix) -> None:
    results, _ = exported_records
    code, output = _bench(capsys, "resume", prefix, "--db", str(results.parent / "runs.db"))
    assert code == 2 and "is not a run id" in output


def test_verify_refuses_a_non_positive_sample_count(exported_records, capsys) -> None:
    _, paths = exported_records
    for count in ("-1", "0"):
        code, output = _bench(capsys, "verify", str(paths[0]), "--samples", count)
        assert code == 2 and f"--samples {count} must be at least 1" in output and "batch-size" not in output


# -- SIGTERM -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_leaves_the_run_interrupted_and_resumable(tmp_path) -> None:
    db = tmp_path / "runs.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.cli.main", "run", "--defense", "dp_ddpm", "--attack", "pgd_eot", "--n-samples",
         "8", "--batch-size", "1", "--steps", "4", "--eot", "2", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if db.exists():
            with sqlite3.connect(db) as connection:
                try:
                    done = connection.execute("select count(*) from sample_results").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            if done >= 1:
                break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    with sqlite3.connect(db) as connection:
        assert connection.execute("select status from runs").fetchone()[0] == "interrupted"


def _corrupt(data: dict, how: str) -> str:
    """One record text broken in one way (or left whole: "none")."""
    s = data["samples"]
    if how == "label":
        s["label"][0] = 99
    elif how == "wrong-label":  # a class of the dataset, not this image's; every draw shifted alike (same outcomes)
        s["label"][1] = (s["label"][1] + 1) % 10
        for name in ("clean_preds", "adv_preds", "select_preds"):
            s[name][1] = "".join(str((int(c) + 1) % 10) for c in s[name][1])
    elif how == "short-list":
        s["adv_correct"] = s["adv_correct"][:-1]
    elif how == "count-above-k":
        s["clean_correct"][0] = data["eval_draws"] + 1
    elif how == "draw-string":
        s["adv_preds"][0] = s["adv_preds"][0][:-1]
    elif how == "non-ascii-digit":  # str.isdigit() accepts it; the per-draw decoder does not
        s["adv_preds"][0] = "\u0663" + s["adv_preds"][0][1:]
    elif how == "summary":
        e = data["robust"]["expected"]
        e["acc"] = e["ci_low"] + 0.25 * (e["ci_high"] - e["ci_low"])
    elif how == "entry":
        data["entry"] = data["entry"] + "x"
    elif how == "future":
        data["finished_at"] = "2099-01-01T00:00:00"
    elif how == "unknown-attack":
        data["attack"]["name"] = "no_such_attack"
    elif how == "schema":
        data["eval_draws"] = 0
    elif how == "not-json":
        return json.dumps(data)[:-2]
    return json.dumps(data)


@pytest.mark.parametrize("how", ["none", "label", "wrong-label", "short-list", "count-above-k", "draw-string", "non-ascii-digit",
                                 "summary", "entry", "future", "unknown-attack", "schema", "not-json"])
def test_the_split_check_reports_exactly_what_the_record_validator_reports(exported_records, how) -> None:
    """The site build parses by the schema alone and checks the parsed objects in a second process
    (parse_unchecked + check_parsed, also behind `bench validate`); for every kind of broken record
    the messages are the ones the record's own validator gives when it parses the text whole."""
    from bench.publish.records import RecordError, _record_from_text, check_record_texts, registry_names

    _, paths = exported_records
    text = _corrupt(json.loads(paths[0].read_text()), how)
    try:
        _record_from_text(text, paths[0], registry_names(), defer_derivation=False)
        whole = []
    except RecordError as err:
        whole = str(err).split("\n")
    valid, errors = check_record_texts([(paths[0], text)])
    split = [line for error in errors for line in error.split("\n")]
    assert split == whole
    assert (how == "none") == (len(valid) == 1 and not whole)
    if how in ("draw-string", "non-ascii-digit"):
        assert any("samples.adv_preds must be" in line for line in whole), whole
    if how == "wrong-label":
        assert any("1 label(s) differ from the toy test split: index" in line for line in whole), whole
