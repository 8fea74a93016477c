"""``bench reproduce NAME``: a paper's table or figure as data (``bench/protocols/NAME.toml``).

A table file lists cells (a defense entry, e.g. ``gdmp[guidance=ssim]``) with the numbers
the paper reports per norm, plus what every cell shares: dataset, classifier, n, seed, evaluation
draws, attack (with optional ``attack_options``, e.g. ``{ eot = 1 }``) and settings; an optional
``needs`` says what the table's rows that are not cells would need (a file whose rows all need
something absent here has ``cells = []``). :func:`plan` expands it into
:class:`bench.harness.runner.RunRequest` objects (the paper's budgets: protocol ``paper``; a
defense's norm-dependent defaults apply, see ``Defense.norm_defaults``), :func:`estimate` prices a
cell from its attack's gradient and forward-only draws per image and the defense's network calls,
and :func:`run` executes the cells through :func:`bench.harness.grid.run_grid` (complete cells are
skipped, interrupted ones resumed, any executor).

A figure file names a study (:mod:`bench.harness.studies`) and its ``[[subjects]]`` (a defense, the
swept values, a classifier per dataset); :func:`plan_studies` turns them into study requests and
:func:`run_studies` runs them. ``--dataset toy`` re-runs either kind on the toy suite at the toy
protocol's budgets (``bench/protocols/toy.toml``; a cell's own options, e.g. ``nfe=5`` or
``eot=1``, still apply, as they define the cell), with the toy classifier and threat model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.core.errors import ConfigError, UnknownNameError
from bench.protocols import PROTOCOL_DIR, is_reproduction, read_toml
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
    study: str = ""  # a figure file: the study it runs (then ``subjects`` instead of ``cells``)
    subjects: tuple[dict[str, Any], ...] = ()
    claim: str = ""  # a figure's caption claim (the site's direction check)
    toy_n_samples: int | None = None  # the toy re-run's size (default: the toy protocol's)
    # a table whose claim is one column against another (Table 13: AutoAttack as published against
    # the fixed selection): the other column's file; the site compares their cells image by image
    compare_with: str = ""

    @property
    def kind(self) -> str:
        return "figure" if self.study else "table"


@dataclass
class StudyCell:
    """One study of a figure file: ``entry`` (defense, as the subject names it) and its request."""

    entry: str
    request: Any  # bench.harness.studies.StudyRequest
    study: str
    result: Any = None  # bench.harness.studies.StudyResult once run


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
        if is_reproduction(path):
            found.append(path.stem)
    return found


def _companion(key: str) -> str:
    if key and key not in available():
        raise ValueError(f"compare_with names unknown reproduction {key!r} (valid: {', '.join(available())})")
    return str(key)


def load_reproduction(key: str) -> Reproduction:
    path = PROTOCOL_DIR / f"{key}.toml"
    if key not in available():
        raise UnknownNameError(f"Unknown reproduction {key!r}. Valid: {', '.join(available())}.")
    data = read_toml(path)
    try:
        if "subjects" in data:
            from bench.harness.studies import STUDIES

            subjects = tuple(dict(s) for s in data["subjects"])
            STUDIES.get(data["study"])
            for s in subjects:
                if not s.get("defense"):
                    raise KeyError(f"a subject without a defense: {s}")
            return Reproduction(key, data["name"], data["title"], data["source"], data["dataset"], data.get("classifier"),
                                int(data["n_samples"]), int(data.get("seed", 0)), int(data.get("eval_draws", 10)),
                                "", (), float(data.get("gpu_ms_per_call", 0.0)), (), {}, str(data.get("needs", "")),
                                study=str(data["study"]), subjects=subjects, claim=str(data["claim"]),
                                toy_n_samples=data.get("toy_n_samples"))
        cells = tuple(dict(c) for c in data["cells"])
        for c in cells:
            if not c.get("defense") or not c.get("reported"):
                raise KeyError(f"a cell without defense or reported numbers: {c}")
        return Reproduction(key, data["name"], data["title"], data["source"], data["dataset"], data.get("classifier"),
                            int(data["n_samples"]), int(data.get("seed", 0)), int(data.get("eval_draws", 10)),
                            data["attack"], tuple(data.get("settings", ["white"])),
                            float(data.get("gpu_ms_per_call", 0.0)), cells, dict(data.get("attack_options", {})),
                            str(data.get("needs", "")), toy_n_samples=data.get("toy_n_samples"),
                            compare_with=_companion(data.get("compare_with", "")))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"reproduction file {path} is malformed: {err}") from None


def _toy_defaults(repro: Reproduction, dataset: str | None) -> tuple[str, str | None, str, int | None, int | None]:
    """(dataset, classifier, protocol, n, K) of a run: the file's, or on another dataset (the toy
    suite) that dataset's classifier, default protocol, the file's ``toy_n_samples`` or the
    protocol's size, and the protocol's evaluation draws."""
    from bench.protocols import DEFAULT_FOR_DATASET, PAPER, protocol_for

    if dataset is None or dataset == repro.dataset:
        return repro.dataset, repro.classifier, PAPER, repro.n_samples, repro.eval_draws
    protocol = protocol_for(dataset, None)
    return (dataset, None, DEFAULT_FOR_DATASET.get(dataset, PAPER), repro.toy_n_samples or protocol.n_samples,
            protocol.eval_draws)


def plan(repro: Reproduction, n_samples: int | None = None, defense_options: dict[str, Any] | None = None,
         attack_options: dict[str, Any] | None = None, device: str = "cpu",
         norms: list[str] | None = None, eval_draws: int | None = None, dataset: str | None = None,
         entries: list[str] | None = None) -> list[Cell]:
    """One cell per (entry, norm the paper reports, setting), each with its run request; on
    ``dataset`` (e.g. ``toy``) instead of the paper's, at that dataset's protocol. ``norms`` /
    ``entries``: only these of the table's norms / rows (e.g. to split a table between machines)."""
    from bench.core.config import split_entry

    if repro.kind == "figure":
        raise ConfigError(f"{repro.name} is a figure (study {repro.study!r}): use plan_studies")
    run_dataset, classifier, protocol, default_n, default_draws = _toy_defaults(repro, dataset)

    unknown = sorted(set(norms or []) - {n for spec in repro.cells for n in spec["reported"]})
    if unknown:
        raise ConfigError(f"--norms {', '.join(unknown)}: {repro.name} reports only "
                          f"{', '.join(sorted({n for spec in repro.cells for n in spec['reported']}))}")
    rows = [spec["defense"] for spec in repro.cells]
    unknown = sorted(set(entries or []) - set(rows))
    if unknown:
        raise ConfigError(f"--entries {', '.join(unknown)}: {repro.name}'s rows are {', '.join(rows)}")
    cells = []
    for spec in repro.cells:
        if entries and spec["defense"] not in entries:
            continue
        name, options = split_entry(spec["defense"])
        for norm, reported in spec["reported"].items():
            if norms and norm not in norms:
                continue
            for setting in repro.settings:
                request = RunRequest(
                    defense=name, attack=repro.attack, setting=setting, norm=norm, dataset=run_dataset,
                    classifier=classifier, n_samples=n_samples or default_n, seed=repro.seed,
                    eval_draws=eval_draws or default_draws, defense_options={**options, **(defense_options or {})},
                    attack_options={**repro.attack_options, **(attack_options or {})}, device=device,
                    protocol=protocol)
                cells.append(Cell(spec["defense"], norm, setting, request, dict(reported)))
    return cells


def plan_studies(repro: Reproduction, n_samples: int | None = None, dataset: str | None = None,
                 eval_draws: int | None = None, out_dir: Any = None) -> list[StudyCell]:
    """A figure file's studies: one per subject, on the file's dataset or ``dataset``."""
    from pathlib import Path

    from bench.harness.studies import StudyRequest

    if repro.kind != "figure":
        raise ConfigError(f"{repro.name} is a table: use plan")
    run_dataset, _, _, default_n, _ = _toy_defaults(repro, dataset)
    if run_dataset != repro.dataset:
        default_n = repro.toy_n_samples or 64
    out = []
    for subject in repro.subjects:
        classifier = subject.get("classifier", {})
        request = StudyRequest(
            defense=subject["defense"], dataset=run_dataset, n_samples=n_samples or default_n, seed=repro.seed,
            values=[str(v) for v in subject.get("values", [])], defense_options=dict(subject.get("defense_options", {})),
            attack_options=dict(subject.get("attack_options", {})), eval_draws=eval_draws or repro.eval_draws,
            out_dir=Path(out_dir or "results/studies"),
            classifier=classifier.get(run_dataset) if isinstance(classifier, dict) else classifier)
        out.append(StudyCell(subject["defense"] + (f" ({request.classifier})" if request.classifier else ""), request,
                             repro.study))
    return out


def run_studies(engine: Any, cells: list[StudyCell]) -> list[StudyCell]:
    from bench.harness.studies import run_study

    for cell in cells:
        cell.result = run_study(engine, cell.study, cell.request)
    return cells


def in_table_order(keys: list[str]) -> list[str]:
    """table1, table2, ..., table10 (numbers compared as numbers)."""
    import re

    return sorted(keys, key=lambda k: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", k)])


def format_list() -> str:
    """One line per reproduction file: name, title, number of cells (entry x norm x setting, as
    ``bench reproduce NAME`` runs them) or of studies and, where the file says so, what its other
    rows need."""
    lines = []
    for key in in_table_order(available()):
        repro = load_reproduction(key)  # in table order: table1, table2, ..., table10
        count = f"{len(repro.subjects):>3} studies" if repro.kind == "figure" else f"{len(plan(repro)):>3} cells  "
        line = f"{key:<34}{count}  {repro.title}"
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


def _network_calls(defense: str, dataset: str, options: dict[str, Any]) -> int:
    """Denoiser calls of one purification of ``defense`` at ``options`` over ``dataset``'s protocol."""
    from bench.core.config import build_config
    from bench.core.defense import DEFENSES
    from bench.harness.runner import normalized_request

    wanted = normalized_request(RunRequest(defense=defense, attack="pgd_eot", dataset=dataset, defense_options=options))
    defense_cls = DEFENSES.get(defense)
    return defense_cls.for_testing(build_config(defense_cls.config_cls, wanted.defense_config)).network_calls


def _pgd_run(calls: int, eot: int, steps: int, draws: int) -> float:
    """Call-images per image of one PGD-EoT run plus its 2K evaluation passes (forward-only at FORWARD_SHARE)."""
    return calls * (steps * eot + FORWARD_SHARE * 2 * draws)


def estimate_study(cell: StudyCell, ms_per_call: float) -> dict[str, float]:
    """Denoiser call-images and hours of one study, from what it runs per image (upper bounds;
    the analyses' defaults: PGD20, EoT-10 White-box, a 9 x 9 landscape grid)."""
    r, k = cell.request, cell.request.eval_draws
    calls = _network_calls(r.defense, r.dataset, r.defense_options)
    values = [int(v) for v in r.values] if cell.study in ("gradsim", "efficacy", "addt-settings") and r.values else []
    if cell.study == "gradsim":
        values = values or [2**i for i in range(10)]
        attacked = [v for v in values if v <= int(r.attack_options.get("max_attack_eot", 16))]
        per_image = calls * (sum(values) + 1) + sum(_pgd_run(calls, v, 20, k) for v in attacked)
    elif cell.study == "efficacy":
        values = values or [2**i for i in range(8)]
        per_image = calls * (1 + sum(values) + FORWARD_SHARE * 2 * k * (len(values) + 2))
    elif cell.study == "trajectory":
        per_image = calls * (20 * (1 + 10 + 1) + FORWARD_SHARE * 3 * 21 * k)
    elif cell.study == "landscape":
        grid = int(r.values[0]) if r.values else 9
        per_image = calls * (20 * (10 + 1) + FORWARD_SHARE * grid * grid * k)
    elif cell.study == "addt-settings":
        twin = f"{r.defense}_addt"
        per_image = sum(2 * _pgd_run(_network_calls(d, r.dataset, {**r.defense_options, "nfe": nfe}), 10, 20, k)
                        for d in (r.defense, twin) for nfe in (values or [5, 10, 20]))
    elif cell.study == "generation":  # every training timestep, forward only, per generated image and model
        calls = 1000
        per_image = calls * FORWARD_SHARE * len(r.values or [0] * 4)
    elif cell.study == "settings":
        per_image = len(r.values or ["white", "dw_fwd", "dw_both", "dw_semi:8"]) * _pgd_run(calls, 10, 20, k)
    else:
        raise ConfigError(f"no cost model for study {cell.study!r}")
    return {"network_calls": calls, "call_images": per_image * r.n_samples,
            "hours": per_image * r.n_samples * ms_per_call / 3.6e6}


def format_study_plan(repro: Reproduction, cells: list[StudyCell], ms_per_call: float, unit: str = "GPU") -> str:
    lines = [f"{repro.title} ({repro.source})",
             f"{len(cells)} studies ({repro.study}): {cells[0].request.dataset if cells else repro.dataset}, "
             f"n={cells[0].request.n_samples if cells else 0}, seed {repro.seed}, K={cells[0].request.eval_draws if cells else 0}",
             f"{'subject':<40}{'calls':>6}{'call-images':>14}{unit + '-h':>8}"]
    total = 0.0
    for cell in cells:
        e = estimate_study(cell, ms_per_call)
        total += e["hours"]
        lines.append(f"{cell.entry:<40}{e['network_calls']:>6}{e['call_images']:>14.0f}{e['hours']:>8.2f}")
    lines.append(_total_line(total, ms_per_call, unit))
    return "\n".join(lines)


def _total_line(total: float, ms_per_call: float, unit: str) -> str:
    if unit == "CPU":
        return (f"estimated total: {total:.2f} CPU-hours at {ms_per_call:g} ms per denoiser call (forward+backward) per "
                "image (the toy protocol's calibration, one thread)")
    return (f"estimated total: {total:.1f} GPU-hours at {ms_per_call:g} ms per denoiser call (forward+backward) "
            "per image (the protocol file's calibration from the paper's own reported run time); measure yours with "
            "`bench perf --device cuda` and pass --gpu-ms-per-call")


def format_plan(repro: Reproduction, cells: list[Cell], gpu_ms_per_call: float, unit: str = "GPU") -> str:
    options = ",".join(f"{k}={v}" for k, v in repro.attack_options.items())
    first = cells[0].request if cells else None
    lines = [f"{repro.title} ({repro.source})",
             f"{len(cells)} cells: {first.dataset if first else repro.dataset}, n={first.n_samples if first else 0}, "
             f"seed {repro.seed}, K={first.eval_draws if first else repro.eval_draws}, classifier "
             f"{(first.classifier if first else repro.classifier) or 'default'}, attack {repro.attack}"
             + (f"[{options}]" if options else ""),
             f"{'entry':<40}{'norm':<6}{'setting':<9}{'calls':>6}{'grad/img':>10}{'fwd/img':>9}{unit + '-h':>8}"]
    total = 0.0
    for cell in cells:
        e = estimate(cell, gpu_ms_per_call)
        total += e["gpu_hours"]
        lines.append(f"{cell.entry:<40}{cell.norm:<6}{cell.setting:<9}{e['network_calls']:>6}"
                     f"{e['gradient_draws']:>10}{e['forward_draws']:>9}{e['gpu_hours']:>8.2f}")
    lines.append(_total_line(total, gpu_ms_per_call, unit))
    return "\n".join(lines)


def format_results(cells: list[Cell]) -> str:
    lines = [f"{'entry':<40}{'norm':<6}{'setting':<9}{'reported clean/robust':>23}   measured clean [95% CI] / robust [95% CI]"]
    for cell in cells:
        m = cell.metrics or {}
        if m:
            c, r = m["clean"]["expected"], m["robust"]["expected"]
            measured = (f"{100 * c['acc']:.2f} [{100 * c['ci_low']:.2f}, {100 * c['ci_high']:.2f}] / "
                        f"{100 * r['acc']:.2f} [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]  (n={m['n']}, run {cell.run_id})")
        else:
            measured = "not run"
        reported = f"{cell.reported.get('clean', '–')} / {cell.reported.get('robust', '–')}"
        lines.append(f"{cell.entry:<40}{cell.norm:<6}{cell.setting:<9}{reported:>23}   {measured}")
    lines.append("reported: as printed in the paper (one purification per image); measured: expected accuracy over "
                 "K fresh draws, in %")
    return "\n".join(lines)
