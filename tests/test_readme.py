"""The README is the front door: short, and every command in it runs.

Every ``bench`` line of its bash blocks runs here (with the store, output folders and scratch paths
moved to a temporary folder), every Python block is executed, the ranked table is the one
``bench leaderboard table`` prints from the committed records, and the docs' plug-in example is
real code that satisfies the defense contract."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core.defense import DEFENSES
from bench.core.noise import NoiseSource

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = ("pip ", "python3 -m venv", "python -m pytest", "mkdocs ")  # install / this suite / the docs test


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[str]:
    lines = [shlex.join(shlex.split(line, comments=True)) for block in _blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(NOT_RUN)]


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_every_readme_command_is_known() -> None:
    assert all(c.startswith("bench ") for c in _commands()), _commands()


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands())
def test_readme_command_runs(command: str, tmp_path: Path) -> None:
    argv = shlex.split(command.replace("/tmp/", f"{tmp_path}/"))
    if argv[1:3] == ["leaderboard", "build"]:
        argv += ["--out", str(tmp_path / "site")]
    env = {**os.environ, "BENCH_DB": str(tmp_path / "bench.sqlite"), "CI": "true"}
    if argv[1] == "results":  # a store to list: the run commands above write to their own
        subprocess.run([sys.executable, "-m", "bench.cli.main", "run", "--defense", "none", "--attack", "pgd_eot",
                        "--n-samples", "2"], env=env, cwd=ROOT, check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "bench.cli.main", *argv[1:]], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_readme_python_runs() -> None:
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def test_the_readme_table_is_generated_from_the_records() -> None:
    from bench.publish.leaderboard import load_tracks, track_markdown

    text = README.read_text()
    copy = text.split("<!-- ranked-table:start -->\n")[1].split("\n<!-- ranked-table:end -->")[0]
    track = next(t for t in load_tracks(ROOT / "results") if t.table_id == "toy__linf-0.25__toy")
    assert copy == track_markdown(track), "regenerate it: bench leaderboard table"


def test_the_docs_defense_example_registers_and_purifies() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "guides" / "adding.md").read_text(), flags=re.S)
    example = next(b for b in blocks if '@register_defense("my_defense")' in b)
    try:
        exec(compile(example, "docs/guides/adding.md", "exec"), {})
        cls = DEFENSES.get("my_defense")
        defense = cls.pretrained("toy", cls.config_cls())
        x = torch.rand(3, 1, 8, 8)
        spec = defense.noise_spec((1, 8, 8))
        noise = NoiseSource(0).batch(spec, [0, 1, 2], [{s: ("k",) for s in spec}] * 3)
        out = defense.purify(x, noise)
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
        assert not torch.equal(out, x)
    finally:
        DEFENSES.unregister("my_defense")


def test_the_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "docs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "docs" / "reference" / "api" / "index.html").exists()
