"""``bench reproduce NAME``: a paper's table as data (``bench/protocols/NAME.toml``) run as a grid.

A reproduction file lists cells (a defense entry, e.g. ``gdmp[guidance=ssim]``) with the numbers
the paper reports per norm, plus what every cell shares: dataset, classifier, n, seed, evaluation
draws, attack (with optional ``attack_options``, e.g. ``{ eot = 1 }``) and settings; an optional
``needs`` says what the table's rows that are not cells would need (a file whose rows all need
something absent here has ``cells = []``). :func:`plan` expands it into
:class:`bench.harness.runner.RunRequest` objects (the paper's budgets: protocol ``paper``; a
defense's norm-dependent defaults apply, see ``Defense.norm_defaults``), :func:`estimate` prices a
cell from its attack's gradient and forward-only draws per image and the defense's network calls,
and :func:`run` executes the cells through :func:`bench.harness.grid.run_grid` (complete cells are
skipped, interrupted ones resumed, any executor).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any

from bench.core.errors import ConfigError, UnknownNameError
from bench.protocols import PROTOCOL_DIR
from bench.harness.runner import RunRequest

FORWARD_SHARE = 1 / 3  # a forward-only call costs about a third of forward+backward (one forward, backward ≈ 2)


@dataclass(frozen=True)
class Reproduction:
    key: str
    name: str
    title: str
    source: str
    dataset: str
    classifier: str | None
    n_samples: int
    seed: int
    eval_draws: int
    attack: str
    settings: tuple[str, ...]
    gpu_ms_per_call: float
    cells: tuple[dict[str, Any], ...]
    attack_options: dict[str, Any] = field(default_factory=dict)  # the file's, under any --attack-opt
    needs: str = ""  # what the rows left out of ``cells`` need (``bench reproduce --list`` prints it)


@dataclass
class Cell:
    entry: str
    norm: str
    setting: str
    request: RunRequest
    reported: dict[str, str]  # {"clean": "88.38", "robust": "42.19"} as printed
    run_id: str = ""
    action: str = ""
    metrics: dict[str, Any] | None = field(default=None, repr=False)


def available() -> list[str]:
    found = []
    for path in sorted(PROTOCOL_DIR.glob("*.toml")):
        with path.open("rb") as handle:
            if "cells" in tomllib.load(handle):
                found.append(path.stem)
    return found


def load_reproduction(key: str) -> Reproduction:
    path = PROTOCOL_DIR / f"{key}.toml"
    if key not in available():
        raise UnknownNameError(f"Unknown reproduction {key!r}. Valid: {', '.join(available())}.")
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    try:
        cells = tuple(dict(c) for c in data["cells"])
        for c in cells:
            if not c.get("defense") or not c.get("reported"):
                raise KeyError(f"a cell without defense or reported numbers: {c}")
        return Reproduction(key, data["name"], data["title"], data["source"], data["dataset"], data.get("classifier"),
                            int(data["n_samples"]), int(data.get("seed", 0)), int(data.get("eval_draws", 10)),
                            data["attack"], tuple(data.get("settings", ["white"])),
                            float(data.get("gpu_ms_per_call", 0.0)), cells, dict(data.get("attack_options", {})),
                            str(data.get("needs", "")))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"reproduction file {path} is malformed: {err}") from None


def plan(repro: Reproduction, n_samples: int | None = None, defense_options: dict[str, Any] | None = None,
         attack_options: dict[str, Any] | None = None, device: str = "cpu",
         norms: list[str] | None = None, eval_draws: int | None = None) -> list[Cell]:
    """One cell per (entry, norm the paper reports, setting), each with its run request."""
    from bench.core.config import split_entry

    unknown = sorted(set(norms or []) - {n for spec in repro.cells for n in spec["reported"]})
    if unknown:
        raise ConfigError(f"--norms {', '.join(unknown)}: {repro.name} reports only "
                          f"{', '.join(sorted({n for spec in repro.cells for n in spec['reported']}))}")
    cells = []
    for spec in repro.cells:
        name, options = split_entry(spec["defense"])
        for norm, reported in spec["reported"].items():
            if norms and norm not in norms:
                continue
            for setting in repro.settings:
                request = RunRequest(
                    defense=name, attack=repro.attack, setting=setting, norm=norm, dataset=repro.dataset,
                    classifier=repro.classifier, n_samples=n_samples or repro.n_samples, seed=repro.seed,
                    eval_draws=eval_draws or repro.eval_draws, defense_options={**options, **(defense_options or {})},
                    attack_options={**repro.attack_options, **(attack_options or {})}, device=device,
                    protocol="paper")
                cells.append(Cell(spec["defense"], norm, setting, request, dict(reported)))
    return cells


def format_list() -> str:
    """One line per reproduction file: name, title, number of cells (entry x norm x setting, as
    ``bench reproduce NAME`` runs them) and, where the file says so, what its other rows need."""
    import re

    lines = []
    for key in sorted(available(), key=lambda k: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)]):
        repro = load_reproduction(key)  # in table order: table1, table2, ..., table10
        line = f"{key:<34}{len(plan(repro)):>3} cells  {repro.title}"
        lines.append(line + (f"; not runnable here: {repro.needs}" if repro.needs else ""))
    return "\n".join(lines)


def attack_draws(attack: str, config: dict[str, Any]) -> tuple[int, int]:
    """Upper bounds of (gradient draws, forward-only draws) per image for ``attack`` at ``config``
    (early stopping only lowers them)."""
    c = config
    if attack == "pgd_eot":
        forwards = (c["select_draws"] * c["restarts"] if c["restarts"] > 1 else 0) + (
            c["select_draws"] * c["steps"] * c["restarts"] if c["select"] == "best" else 0)
        return c["steps"] * c["eot"] * c["restarts"], forwards
    if attack in ("aa_rand", "aa_rand_fixed"):
        iterations = len(c["attacks"]) * c["n_iter"]
        return iterations * c["eot"], iterations * c.get("eval_draws", 1)
    if attack == "diffhammer":
        steps = c["restarts"] * c["steps"]
        return steps * c["n_eot"], steps * c["draws"]
    raise ConfigError(f"no cost model for attack {attack!r} (known: pgd_eot, aa_rand, aa_rand_fixed, diffhammer)")


def estimate(cell: Cell, gpu_ms_per_call: float) -> dict[str, float]:
    """Network calls per image and GPU-hours of one cell: (gradient draws + FORWARD_SHARE ×
    forward-only draws + 2K evaluation passes × FORWARD_SHARE) × denoiser calls per purification × n."""
    from bench.core.config import build_config
    from bench.core.defense import DEFENSES
    from bench.harness.runner import normalized_request

    wanted = normalized_request(cell.request)
    defense_cls = DEFENSES.get(cell.request.defense)
    calls = defense_cls.for_testing(build_config(defense_cls.config_cls, wanted.defense_config)).network_calls
    gradient, forward = attack_draws(cell.request.attack, wanted.attack_config)
    per_image = calls * (gradient + FORWARD_SHARE * (forward + 2 * cell.request.eval_draws))
    n = cell.request.n_samples or 0
    return {"network_calls": calls, "gradient_draws": gradient, "forward_draws": forward,
            "call_images": per_image * n, "gpu_hours": per_image * n * gpu_ms_per_call / 3.6e6}


def run(engine: Any, cells: list[Cell], executor: str = "local", db_url: str | None = None,
        address: str | None = None, progress: Any = None) -> list[Cell]:
    """Run (or skip / resume) every cell; fills ``run_id``, ``action`` and ``metrics``."""
    from bench.harness.grid import run_grid

    for cell in cells:
        base = dataclasses.replace(cell.request)  # its options already hold the entry's and the overrides
        (done,) = run_grid(engine, base, [cell.request.defense], [cell.request.attack], [cell.setting], executor=executor,
                           db_url=db_url, address=address, progress=progress)
        cell.run_id, cell.action, cell.metrics = done.run_id, done.action, done.metrics
    return cells


def format_plan(repro: Reproduction, cells: list[Cell], gpu_ms_per_call: float) -> str:
    options = ",".join(f"{k}={v}" for k, v in repro.attack_options.items())
    lines = [f"{repro.title} ({repro.source})",
             f"{len(cells)} cells: {repro.dataset}, n={cells[0].request.n_samples if cells else 0}, seed {repro.seed}, "
             f"K={repro.eval_draws}, classifier {repro.classifier or 'default'}, attack {repro.attack}"
             + (f"[{options}]" if options else ""),
             f"{'entry':<28}{'norm':<6}{'setting':<9}{'calls':>6}{'grad/img':>10}{'fwd/img':>9}{'GPU-h':>8}"]
    total = 0.0
    for cell in cells:
        e = estimate(cell, gpu_ms_per_call)
        total += e["gpu_hours"]
        lines.append(f"{cell.entry:<28}{cell.norm:<6}{cell.setting:<9}{e['network_calls']:>6}"
                     f"{e['gradient_draws']:>10}{e['forward_draws']:>9}{e['gpu_hours']:>8.2f}")
    lines.append(f"estimated total: {total:.1f} GPU-hours at {gpu_ms_per_call:g} ms per denoiser call (forward+backward) "
                 "per image (the protocol file's calibration from the paper's own reported run time); measure yours with "
                 "`bench perf --device cuda` and pass --gpu-ms-per-call")
    return "\n".join(lines)


def format_results(cells: list[Cell]) -> str:
    lines = [f"{'entry':<28}{'norm':<6}{'setting':<9}{'reported clean/robust':>23}   measured clean [95% CI] / robust [95% CI]"]
    for cell in cells:
        m = cell.metrics or {}
        if m:
            c, r = m["clean"]["expected"], m["robust"]["expected"]
            measured = (f"{100 * c['acc']:.2f} [{100 * c['ci_low']:.2f}, {100 * c['ci_high']:.2f}] / "
                        f"{100 * r['acc']:.2f} [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]  (n={m['n']}, run {cell.run_id})")
        else:
            measured = "not run"
        reported = f"{cell.reported.get('clean', '–')} / {cell.reported.get('robust', '–')}"
        lines.append(f"{cell.entry:<28}{cell.norm:<6}{cell.setting:<9}{reported:>23}   {measured}")
    lines.append("reported: as printed in the paper (one purification per image); measured: expected accuracy over "
                 "K fresh draws, in %")
    return "\n".join(lines)
