"""The `bench` command line as a user runs it (subprocesses, small settings)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli.main import main


def bench(*args: str, db: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench.cli.main", *args]
    if db is not None:
        command += ["--db", str(db)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_ls_lists_plugins_with_descriptions(capsys: pytest.CaptureFixture) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("dp_ddpm", "dp_ddim", "none", "pgd_eot", "white", "dw_semi:K", "toy"):
        assert name in out
    assert "DDPM purification" in out


@pytest.mark.parametrize("args, message", [
    (["--defense", "dp_ddmp", "--attack", "pgd_eot"], "Unknown defense 'dp_ddmp'. Did you mean 'dp_ddpm'"),
    (["--defense", "dp_ddpm", "--attack", "pgd_eto"], "Unknown attack 'pgd_eto'. Did you mean 'pgd_eot'"),
    (["--defense", "none", "--attack", "pgd_eot", "--eps", "0"], "eps=0.0 must be a positive finite number"),
    (["--defense", "none", "--attack", "pgd_eot", "--eps", "1.5"], "out of range for linf"),
    (["--defense", "none", "--attack", "pgd_eot", "--n-samples", "5000"], "holds 600 images"),
    (["--defense", "none", "--attack", "pgd_eot", "--setting", "grey"], "Unknown setting 'grey'"),
    (["--defense", "none", "--attack", "pgd_eot", "--dataset", "mnist"], "Unknown dataset 'mnist'"),
    (["--defense", "dp_ddpm", "--attack", "pgd_eot", "--defense-opt", "nfe=3"], "nfe=3 must divide t_star=100"),
    (["--defense", "dp_ddpm", "--attack", "pgd_eot", "--dataset", "cifar100"], "cifar100 has no default classifier"),
    (["--defense", "dp_ddpm", "--attack", "pgd_eot", "--dataset", "cifar100", "--classifier", "wrn-28-10:/nonexistent.pt"],
     "no public cifar100 checkpoint"),
])
def test_bad_input_gets_one_clear_line(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("bench.zoo.datasets._load_cifar", _offline_cifar)
    assert main(["run", *args, "--db", str(tmp_path / "r.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and message in err
    assert "Traceback" not in err


def _stored_runs(db: Path) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from bench.harness.store import Run, open_store

    with Session(open_store(str(db))) as session:
        return int(session.scalar(select(func.count()).select_from(Run)) or 0)


@pytest.mark.parametrize("args, message", [
    (["--defense", "dp_ddpm", "--attack", "aa_standard"], "aa_standard needs a deterministic target"),
    (["--defense", "dp_ddpm", "--attack", "aa_rand_fixed", "--step-size", "0.1"], "takes no step size"),
    (["--defense", "dp_ddpm", "--attack", "aa_rand_fixed", "--attack-opt", "step_size=0.1"], "takes no step size"),
])
def test_refusals_happen_before_anything_is_stored(args: list[str], message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    assert main(["run", *args, "--n-samples", "2", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and message in err and err.count("\n") == 1
    assert _stored_runs(db) == 0, "a refused run must leave no run row behind"


def test_resume_of_an_unknown_id_says_one_thing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "r.sqlite"
    from bench.harness.store import open_store

    open_store(str(db)).dispose()  # an existing store without that run
    assert main(["resume", "0123456789ab", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err == "bench: error: no run with id '0123456789ab' in the store; `bench results` lists them\n"
    assert _stored_runs(db) == 0


def _offline_cifar(name: str):
    from bench.core.errors import MissingAssetError

    raise MissingAssetError(f"{name} is not available offline")


def test_quick_start_end_to_end(tmp_path: Path) -> None:
    """`bench run` on the toy suite stores a run that `bench results` lists (small settings)."""
    db = tmp_path / "r.sqlite"
    run = bench("run", "--defense", "dp_ddpm", "--attack", "pgd_eot", "--n-samples", "4", "--steps", "2",
                "--eot", "2", "--draws", "2", "--defense-opt", "nfe=5", db=db)
    assert run.returncode == 0, run.stderr
    assert "expected" in run.stdout and "worst-of-2" in run.stdout and "majority vote" in run.stdout
    run_id = run.stdout.split()[1].rstrip(":")
    listed = bench("results", "--format", "json", db=db)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert len(records) == 1
    record = records[0]
    assert record["run_id"] == run_id
    for key in ("defense", "attack", "setting", "norm", "eps", "dataset", "n_samples", "clean_acc", "robust_acc",
                "clean_ci_low", "clean_ci_high", "robust_ci_low", "robust_ci_high"):
        assert key in record
    assert isinstance(record["robust_acc"], float) and 0 <= record["robust_acc"] <= 1
    assert record["n_samples"] == 4 and record["dataset"] == "toy"
    csv = bench("results", "--format", "csv", db=db)
    assert csv.stdout.splitlines()[0].startswith("run_id,status,defense")
    table = bench("results", db=db)
    assert run_id in table.stdout
