"""``bench study NAME``: the ADDT paper's diagnostic studies, stored as runs plus a study row.

- ``eot``: PGD-EoT robust accuracy and the cosine similarity between the White-box EoT
  gradient (mean of E draws) and the DW_Both gradient (the evaluation's known noise) as E
  grows (paper Figure 7). The cosine is measured at the clean inputs, per sample, then averaged.
- ``nfe``: clean and PGD-EoT robust accuracy of ``dp_ddpm`` and ``dp_ddim`` across NFE
  (paper Tables 3 and 10).
- ``settings``: one defense under ``white``, ``dw_fwd``, ``dw_both`` and ``dw_semi:K``
  (paper Figure 2, Appendix C).
- ``budget``: attack strength per unit of compute — ``pgd_eot``, ``aa_rand_fixed`` and
  ``diffhammer`` on the same images at budget fractions (``--values``, default 0.25,0.5,1 of each
  attack's iterations), robust accuracy against the gradient draws per sample the attack spent
  (counted by the target), each point with its paired difference to ``aa_rand_fixed`` at the
  largest budget. Other options per attack: ``--attack-opt ATTACK.KEY=VALUE``.

The ADDT paper's analyses (:mod:`bench.harness.analyses`), on the study's first images:

- ``gradsim`` (Fig. 7): the cosine between the White-box EoT-k gradient and the DW-box gradient
  for k = 1 … 512 (powers of two), per image with a 95% interval, and robust accuracy under
  PGD20-EoT-k for the values of k up to ``--attack-opt max_attack_eot`` (default 16);
- ``efficacy`` (Fig. 8): the expected-loss increase of one FGSM step of one grey level crafted
  under DW-box and under DW_semi-K (K = 1 … 128), against random signs;
- ``trajectory`` (Fig. 1): PGD20 iterates under White-box EoT-1, EoT-10 and DW-box, embedded
  together by t-SNE, with the final loss per setting;
- ``landscape`` (Fig. 3, App. D): the expected loss on the plane of the DW-box PGD20 direction and
  the orthogonal part of the White-box PGD20-EoT10 direction, both trajectories on it, averaged
  over the images;
- ``addt-settings`` (Figs. 6 / 9): a defense and its ADDT twin under White-box and DW_Both
  across NFE.

Each study prints a Markdown table and writes an SVG plot (``<out>/<study id>-<name>.svg``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.core.errors import ConfigError
from bench.core.registry import Registry
from bench.publish.svg import Series, line_chart

log = logging.getLogger(__name__)


@dataclass
class StudyRequest:
    defense: str | None = None
    dataset: str = "toy"
    n_samples: int = 64
    seed: int = 0
    values: list[str] = field(default_factory=list)  # the swept values (study-specific defaults)
    defense_options: dict[str, Any] = field(default_factory=dict)
    attack_options: dict[str, Any] = field(default_factory=dict)
    eval_draws: int = 10
    out_dir: Path = Path("results/studies")
    classifier: str | None = None  # e.g. toy-at (the landscape of an adversarially trained classifier)


@dataclass
class StudyResult:
    study_id: str
    table: str
    plot_path: Path
    run_ids: list[str]
    results: dict[str, Any]


StudyFunction = Callable[[Engine, StudyRequest], tuple[list[str], dict[str, Any], str, str]]
STUDIES: Registry[StudyFunction] = Registry("study")


def _run(engine: Engine, request: StudyRequest, *, defense: str, setting: str = "white",
         defense_options: dict[str, Any] | None = None, attack_options: dict[str, Any] | None = None,
         attack: str = "pgd_eot") -> tuple[str, dict]:
    from bench.harness.runner import RunRequest, execute_run, start_run

    run_request = RunRequest(
        defense=defense, attack=attack, setting=setting, dataset=request.dataset, n_samples=request.n_samples,
        classifier=request.classifier,
        seed=request.seed, eval_draws=request.eval_draws,
        defense_options={**request.defense_options, **(defense_options or {})},
        attack_options={**({} if "." in "".join(request.attack_options) else request.attack_options),
                        **(attack_options or {})},
    )
    run_id, parts = start_run(engine, run_request)
    log.info("study run %s: %s %s %s", run_id, defense, setting, run_request.defense_options)
    return run_id, execute_run(engine, run_id, parts=parts)


def _acc(metrics: dict, part: str) -> dict[str, float]:
    return metrics[part]["expected"]


def _fmt(m: dict[str, float]) -> str:
    return f"{m['acc']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def gradient_cosines(request: StudyRequest, defense: str, eot_values: list[int]) -> dict[int, float]:
    """Mean per-sample cosine between the White-box EoT gradient with E draws and the DW_Both
    gradient, at the clean inputs of the study's images."""
    from bench.core.config import build_config, config_to_dict
    from bench.core.defense import DEFENSES
    from bench.core.memory import default_budget, plan_gradient, plan_inference
    from bench.core.noise import NoiseSource
    from bench.core.settings import parse_setting
    from bench.core.target import StochasticTarget
    from bench.harness.components import build_components
    from bench.zoo.datasets import select_indices

    defense_config = config_to_dict(build_config(DEFENSES.get(defense).config_cls, request.defense_options))
    parts = build_components(defense=defense, defense_config=defense_config, attack="pgd_eot", attack_config={},
                             setting="white", dataset=request.dataset,
                             runtime={"device": "cpu", "dtype": "float32", "checkpoint": "auto", "memory_budget": None})
    ids = select_indices(parts.split, request.n_samples)
    x, y = parts.split.images[ids], parts.split.labels[ids]
    shape, budget = tuple(x.shape[1:]), default_budget(parts.device)
    grad_plan = plan_gradient(parts.model, shape, parts.device, parts.dtype, "auto", budget, len(ids) * max(eot_values))
    eval_plan = plan_inference(parts.model, shape, parts.device, parts.dtype, budget, len(ids))
    noise = NoiseSource(request.seed)

    def target(setting: str) -> StochasticTarget:
        return StochasticTarget(parts.model, parse_setting(setting), noise, ids, grad_plan, eval_plan)

    reference, _ = target("dw_both").eot_gradient(x, y, 0, 1)
    cosines = {}
    for eot in eot_values:
        grad, _ = target("white").eot_gradient(x, y, 0, eot)
        cosines[eot] = float(F.cosine_similarity(grad.flatten(1), reference.flatten(1), dim=1).mean())
    return cosines


@STUDIES.register("eot")
def eot_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    defense = request.defense or "dp_ddpm"
    values = [int(v) for v in (request.values or ["1", "2", "4", "8", "16"])]
    if any(v < 1 for v in values):
        raise ConfigError(f"eot values {values} must be positive integers")
    cosines = gradient_cosines(request, defense, values)
    run_ids, rows = [], []
    for eot in values:
        run_id, metrics = _run(engine, request, defense=defense, attack_options={"eot": eot})
        run_ids.append(run_id)
        rows.append({"eot": eot, "run_id": run_id, "robust": _acc(metrics, "robust"), "cosine": cosines[eot]})
    table = "\n".join(
        ["| EoT samples | robust (expected) [95% CI] | cos(White EoT grad, DW_Both grad) | run |", "|---|---|---|---|"]
        + [f"| {r['eot']} | {_fmt(r['robust'])} | {r['cosine']:.3f} | {r['run_id']} |" for r in rows]
    )
    svg = line_chart(
        [Series("robust accuracy", [(r["eot"], r["robust"]["acc"]) for r in rows],
                [(r["robust"]["ci_low"], r["robust"]["ci_high"]) for r in rows]),
         Series("gradient cosine", [(r["eot"], r["cosine"]) for r in rows], dashed=True)],
        title=f"EoT study: {defense} on {request.dataset}", x_label="EoT samples", y_label="value",
        log_x=True, y_range=(0.0, 1.0))
    return run_ids, {"defense": defense, "rows": rows}, table, svg


@STUDIES.register("nfe")
def nfe_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    defenses = [request.defense] if request.defense else ["dp_ddpm", "dp_ddim"]
    values = [int(v) for v in (request.values or ["2", "5", "10", "20", "50", "100"])]
    run_ids, rows = [], []
    for defense in defenses:
        for nfe in values:
            run_id, metrics = _run(engine, request, defense=defense, defense_options={"nfe": nfe})
            run_ids.append(run_id)
            rows.append({"defense": defense, "nfe": nfe, "run_id": run_id,
                         "clean": _acc(metrics, "clean"), "robust": _acc(metrics, "robust")})
    table = "\n".join(
        ["| defense | NFE | clean [95% CI] | robust [95% CI] | run |", "|---|---|---|---|---|"]
        + [f"| {r['defense']} | {r['nfe']} | {_fmt(r['clean'])} | {_fmt(r['robust'])} | {r['run_id']} |" for r in rows]
    )
    series = []
    for defense in defenses:
        mine = [r for r in rows if r["defense"] == defense]
        for part, dashed in (("clean", True), ("robust", False)):
            series.append(Series(f"{defense} {part}", [(r["nfe"], r[part]["acc"]) for r in mine],
                                 [(r[part]["ci_low"], r[part]["ci_high"]) for r in mine], dashed=dashed))
    svg = line_chart(series, title=f"NFE study on {request.dataset}", x_label="NFE (reverse steps)",
                     y_label="accuracy (expected)", log_x=True, y_range=(0.0, 1.0))
    return run_ids, {"rows": rows}, table, svg


@STUDIES.register("settings")
def settings_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    from bench.core.settings import parse_setting

    defense = request.defense or "dp_ddpm"
    values = request.values or ["white", "dw_fwd", "dw_both", "dw_semi:8"]
    for value in values:
        parse_setting(value)
    run_ids, rows = [], []
    for setting in values:
        run_id, metrics = _run(engine, request, defense=defense, setting=setting)
        run_ids.append(run_id)
        rows.append({"setting": setting, "run_id": run_id, "clean": _acc(metrics, "clean"),
                     "robust": _acc(metrics, "robust")})
    table = "\n".join(
        ["| setting | clean [95% CI] | robust [95% CI] | run |", "|---|---|---|---|"]
        + [f"| {r['setting']} | {_fmt(r['clean'])} | {_fmt(r['robust'])} | {r['run_id']} |" for r in rows]
    )
    svg = line_chart(
        [Series("robust accuracy", [(i, r["robust"]["acc"]) for i, r in enumerate(rows)],
                [(r["robust"]["ci_low"], r["robust"]["ci_high"]) for r in rows])],
        title=f"Settings study: {defense} ({', '.join(values)} = 0..{len(values) - 1})",
        x_label="attacker knowledge: " + ", ".join(f"{i}={v}" for i, v in enumerate(values)),
        y_label="robust accuracy (expected)", y_range=(0.0, 1.0))
    return run_ids, {"defense": defense, "rows": rows}, table, svg


# the option that scales each attack's budget, and its full value
BUDGET_KNOBS = {"pgd_eot": ("steps", 20), "aa_rand_fixed": ("n_iter", 100), "diffhammer": ("steps", 50)}


def _paired_to(engine: Engine, run_id: str, reference: str) -> dict[str, float]:
    from bench.harness.compare import compare, load_evaluation

    return compare(load_evaluation(run_id, engine), load_evaluation(reference, engine))["robust"]


@STUDIES.register("budget")
def budget_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    defense = request.defense or "dp_ddpm"
    fractions = [float(v) for v in (request.values or ["0.25", "0.5", "1"])]
    if any(not 0 < f <= 4 for f in fractions):
        raise ConfigError(f"budget fractions {fractions} must be in (0, 4]")
    run_ids, rows = [], []
    for attack, (knob, full) in BUDGET_KNOBS.items():
        for fraction in sorted(fractions):
            options = {knob: max(1, round(full * fraction))}
            extra = {k.partition(".")[2]: v for k, v in request.attack_options.items() if k.startswith(attack + ".")}
            run_id, metrics = _run(engine, request, defense=defense, attack=attack, attack_options={**extra, **options})
            run_ids.append(run_id)
            rows.append({"attack": attack, "fraction": fraction, **options, "run_id": run_id,
                         "robust": _acc(metrics, "robust"), "rob_k": metrics["rob_m"]["adv"][-1],
                         "gradient_draws": metrics.get("cost_per_sample", {}).get("gradient_draws", 0.0),
                         "forward_draws": metrics.get("cost_per_sample", {}).get("forward_draws", 0.0)})
    reference = max((r for r in rows if r["attack"] == "aa_rand_fixed"), key=lambda r: r["fraction"])
    for row in rows:
        row["vs_aa_rand_fixed"] = _paired_to(engine, row["run_id"], reference["run_id"])
    table = "\n".join(
        ["| attack | budget | gradient draws / sample | forward draws / sample | robust (expected) [95% CI] | "
         f"Rob(K) [95% CI] | − aa_rand_fixed@{reference['fraction']:g} [95% paired CI] | run |",
         "|---|---|---|---|---|---|---|---|"]
        + [f"| {r['attack']} | {r['fraction']:g} | {r['gradient_draws']:.0f} | {r['forward_draws']:.0f} | "
           f"{_fmt(r['robust'])} | {_fmt(r['rob_k'])} | {r['vs_aa_rand_fixed']['mean']:+.3f} "
           f"[{r['vs_aa_rand_fixed']['ci_low']:+.3f}, {r['vs_aa_rand_fixed']['ci_high']:+.3f}] | {r['run_id']} |"
           for r in rows])
    svg = line_chart(
        [Series(attack, [(max(r["gradient_draws"], 1.0), r["robust"]["acc"]) for r in rows if r["attack"] == attack],
                [(r["robust"]["ci_low"], r["robust"]["ci_high"]) for r in rows if r["attack"] == attack])
         for attack in BUDGET_KNOBS],
        title=f"Attack strength per unit of compute: {defense} on {request.dataset}",
        x_label="gradient draws per sample (log)", y_label="robust accuracy (expected)", log_x=True,
        y_range=(0.0, 1.0))
    return run_ids, {"defense": defense, "rows": rows, "reference": reference["run_id"]}, table, svg


def run_study(engine: Engine, name: str, request: StudyRequest) -> StudyResult:
    """Run study ``name``, store it (runs + a study row) and write its plot."""
    from bench.harness.store import Study

    import time

    function = STUDIES.get(name)
    started, cpu_started = time.perf_counter(), time.process_time()
    run_ids, results, table, svg = function(engine, request)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    study_id = uuid.uuid4().hex[:12]
    request.out_dir.mkdir(parents=True, exist_ok=True)
    plot_path = request.out_dir / f"{study_id}-{name}.svg"
    plot_path.write_text(svg)
    config = {"defense": request.defense, "classifier": request.classifier, "dataset": request.dataset,
              "n_samples": request.n_samples,
              "seed": request.seed, "values": request.values, "defense_options": request.defense_options,
              "attack_options": request.attack_options, "eval_draws": request.eval_draws}
    import json

    from bench.core.provenance import git_commit

    # the study as a file beside its plot: what ran, at which commit, and every value it measured
    plot_path.with_suffix(".json").write_text(json.dumps(
        {"study_id": study_id, "name": name, "config": config, "git_commit": git_commit(), "run_ids": run_ids,
         "results": results, "table": table, "wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)},
        indent=1, default=str) + "\n", encoding="utf-8")
    with Session(engine) as session, session.begin():
        session.add(Study(id=study_id, name=name, config=config, run_ids=run_ids, results=results,
                          plot_path=str(plot_path)))
    return StudyResult(study_id, table, plot_path, run_ids, results)


# -- the paper's analyses -------------------------------------------------------------------------

def _subject(request: StudyRequest, defense: str) -> Any:
    """The study's defense (at its protocol budgets), first images and noise, for the analyses."""
    from bench.core.noise import NoiseSource
    from bench.harness.analyses import Subject
    from bench.harness.components import build_components
    from bench.harness.request import RunRequest, normalized_request
    from bench.zoo.datasets import select_indices

    wanted = normalized_request(RunRequest(defense=defense, attack="pgd_eot", dataset=request.dataset,
                                           defense_options=dict(request.defense_options),
                                           classifier=request.classifier))
    parts = build_components(defense=defense, defense_config=wanted.defense_config, attack="pgd_eot",
                             attack_config=wanted.attack_config, setting="white", dataset=request.dataset,
                             runtime={"device": "cpu", "dtype": "float32", "checkpoint": "auto", "memory_budget": None},
                             classifier=wanted.classifier)
    ids = select_indices(parts.split, request.n_samples)
    return Subject(parts.model, parts.split.images[ids], parts.split.labels[ids], ids, NoiseSource(request.seed)), wanted


def _mean_interval(values: Any) -> tuple[float, float, float]:
    """Mean of per-image values with a 95% normal-approximation interval (values need not be in [0, 1])."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    half = 1.959963984540054 * (v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


@STUDIES.register("gradsim")
def gradsim_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    from bench.harness.analyses import gradient_similarity

    defense = request.defense or "dp_ddpm"
    values = [int(v) for v in (request.values or [str(2**i) for i in range(10)])]
    if any(v < 1 for v in values):
        raise ConfigError(f"gradsim values {values} must be positive integers")
    import dataclasses

    options = dict(request.attack_options)
    max_attack = int(options.pop("max_attack_eot", 16))
    request = dataclasses.replace(request, attack_options=options)
    subject, _ = _subject(request, defense)
    cosines = gradient_similarity(subject, values)
    run_ids, rows = [], []
    for k in values:
        row = {"k": k, "cosine": _mean_interval(cosines[k]), "per_image": cosines[k].tolist()}
        if k <= max_attack:
            run_id, metrics = _run(engine, request, defense=defense, attack_options={**options, "eot": k})
            run_ids.append(run_id)
            row.update(run_id=run_id, robust=_acc(metrics, "robust"))
        rows.append(row)
    table = "\n".join(
        ["| k (EoT draws) | cos(White EoT-k, DW-box) mean [95% CI] | robust (PGD20-EoT-k) [95% CI] |", "|---|---|---|"]
        + [f"| {r['k']} | {r['cosine'][0]:.3f} [{r['cosine'][1]:.3f}, {r['cosine'][2]:.3f}] | "
           f"{_fmt(r['robust']) if 'robust' in r else '–'} |" for r in rows])
    series = [Series("gradient cosine", [(r["k"], r["cosine"][0]) for r in rows],
                     [(r["cosine"][1], r["cosine"][2]) for r in rows])]
    attacked = [r for r in rows if "robust" in r]
    if attacked:
        series.append(Series("robust accuracy", [(r["k"], r["robust"]["acc"]) for r in attacked],
                             [(r["robust"]["ci_low"], r["robust"]["ci_high"]) for r in attacked], dashed=True))
    svg = line_chart(series, title=f"Gradient similarity to the DW-box gradient: {defense} on {request.dataset}",
                     x_label="k (White-box EoT draws)", y_label="value", log_x=True, y_range=(-0.1, 1.0))
    return run_ids, {"defense": defense, "rows": rows}, table, svg


@STUDIES.register("efficacy")
def efficacy_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    from bench.harness.analyses import fgsm_efficacy
    from bench.publish.svg import bar_chart

    defense = request.defense or "dp_ddpm"
    semi = [int(v) for v in (request.values or ["1", "2", "4", "8", "16", "32", "64", "128"])]
    subject, _ = _subject(request, defense)
    step = 1 / 16 if request.dataset == "toy" else 1 / 255  # one grey level
    increases = fgsm_efficacy(subject, step, semi, request.eval_draws)
    rows = [{"method": name, "increase": _mean_interval(v), "per_image": v.tolist()} for name, v in increases.items()]
    table = "\n".join(["| FGSM direction | expected-loss increase mean [95% CI] |", "|---|---|"]
                      + [f"| {r['method']} | {r['increase'][0]:+.4f} [{r['increase'][1]:+.4f}, {r['increase'][2]:+.4f}] |"
                         for r in rows])
    top = max(max(abs(r["increase"][1]), abs(r["increase"][2])) for r in rows) or 1.0
    svg = bar_chart([(r["method"], max(r["increase"][0], 0) / top, max(r["increase"][1], 0) / top,
                      max(r["increase"][2], 0) / top) for r in rows],
                    title=f"FGSM efficacy (one grey level): {defense} on {request.dataset}",
                    x_label=f"expected-loss increase, as a fraction of {top:.3g} (95% CI)")
    return [], {"defense": defense, "step": step, "rows": rows}, table, svg


def _trajectory_paths(request: StudyRequest, subject: Any) -> dict[str, Any]:
    from bench.harness.analyses import pgd_iterates
    from bench.harness.request import THREAT_DEFAULTS

    eps, step_size = THREAT_DEFAULTS[request.dataset]["linf"]
    steps = int(request.attack_options.get("steps", 20))
    return {"White-box EoT-1": pgd_iterates(subject, "white", 1, steps, eps, step_size),
            "White-box EoT-10": pgd_iterates(subject, "white", 10, steps, eps, step_size),
            "DW-box": pgd_iterates(subject, "dw_both", 1, steps, eps, step_size)}


@STUDIES.register("trajectory")
def trajectory_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    from bench.harness.analyses import expected_loss, tsne_trajectories

    defense = request.defense or "dp_ddpm"
    subject, _ = _subject(request, defense)
    paths = _trajectory_paths(request, subject)
    embedded = tsne_trajectories(paths, seed=request.seed)
    losses = {name: [expected_loss(subject, it, request.eval_draws, key=("trajectory", name, t)).tolist()
                     for t, it in enumerate(iterates)] for name, iterates in paths.items()}
    import torch.nn.functional as F_

    known = subject.target("dw_both")  # the loss on the evaluation's known noise (what a DW-box attacker sees)
    known_loss = {}
    for name, iterates in paths.items():
        noise, n = known.attack_noise(iterates[-1], 0, 1)
        logits = known.logits_with_noise(iterates[-1], noise, n)[0]
        known_loss[name] = F_.cross_entropy(logits, subject.y, reduction="none").tolist()
    rows = [{"setting": name, "final_loss": _mean_interval(losses[name][-1]), "final_known_loss": _mean_interval(known_loss[name]),
             "tsne": embedded[name].tolist(), "loss": losses[name]} for name in paths]
    table = "\n".join(["| attacker | final loss, fresh draws, mean [95% CI] | final loss on the known (DW-box) noise |",
                       "|---|---|---|"]
                      + [f"| {r['setting']} | {r['final_loss'][0]:.3f} [{r['final_loss'][1]:.3f}, {r['final_loss'][2]:.3f}] | "
                         f"{r['final_known_loss'][0]:.3f} [{r['final_known_loss'][1]:.3f}, {r['final_known_loss'][2]:.3f}] |"
                         for r in rows])
    svg = line_chart([Series(name, [tuple(p) for p in embedded[name][:, 0, :].tolist()], ordered=True)
                      for name in paths],
                     title=f"PGD20 trajectories of image {subject.ids[0]} in t-SNE coordinates: {defense}",
                     x_label="t-SNE 1", y_label="t-SNE 2")
    return [], {"defense": defense, "rows": rows, "images": subject.ids}, table, svg


@STUDIES.register("landscape")
def landscape_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    from bench.harness.analyses import loss_landscape
    from bench.publish.svg import heatmap

    defense = request.defense or "dp_ddpm"
    grid = int(request.values[0]) if request.values else 9
    subject, _ = _subject(request, defense)
    paths = {k: v for k, v in _trajectory_paths(request, subject).items() if k != "White-box EoT-1"}
    land = loss_landscape(subject, paths, "DW-box", "White-box EoT-10", grid, request.eval_draws)
    mean = land.loss.mean(axis=0)
    rows = []
    for name, coords in land.paths.items():
        end = coords[-1].mean(axis=0)
        rows.append({"path": name, "end": end.tolist(), "max_residual": float(land.residuals[name][-1].max())})
    table = "\n".join(["| trajectory | mean endpoint on the plane (d1, d2) | endpoint distance from the plane |",
                       "|---|---|---|"] + [f"| {r['path']} | ({r['end'][0]:.3f}, {r['end'][1]:.3f}) | {r['max_residual']:.2e} |"
                                          for r in rows])
    svg = heatmap(mean.tolist(), land.alphas.tolist(), land.betas.tolist(),
                  title=f"Loss landscape (mean over {len(subject.ids)} images): {defense} on {request.dataset}",
                  x_label="d1: DW-box PGD20 direction", y_label="d2: White-box EoT10, orthogonal part",
                  paths=[Series(name, [tuple(p) for p in coords.mean(axis=1).tolist()]) for name, coords in land.paths.items()])
    return [], {"defense": defense, "alphas": land.alphas.tolist(), "betas": land.betas.tolist(),
                "mean_loss": mean.tolist(), "rows": rows}, table, svg


@STUDIES.register("addt-settings")
def addt_settings_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    defense = request.defense or "dp_ddpm"
    twin = f"{defense}_addt"
    values = [int(v) for v in (request.values or ["5", "10", "20"])]
    run_ids, rows = [], []
    for name in (defense, twin):
        for setting in ("white", "dw_both"):
            for nfe in values:
                run_id, metrics = _run(engine, request, defense=name, setting=setting, defense_options={"nfe": nfe})
                run_ids.append(run_id)
                rows.append({"defense": name, "setting": setting, "nfe": nfe, "run_id": run_id,
                             "robust": _acc(metrics, "robust")})
    table = "\n".join(["| defense | setting | NFE | robust [95% CI] | run |", "|---|---|---|---|---|"]
                      + [f"| {r['defense']} | {r['setting']} | {r['nfe']} | {_fmt(r['robust'])} | {r['run_id']} |"
                         for r in rows])
    series = [Series(f"{name} {setting}", [(r["nfe"], r["robust"]["acc"]) for r in rows
                                           if r["defense"] == name and r["setting"] == setting],
                     [(r["robust"]["ci_low"], r["robust"]["ci_high"]) for r in rows
                      if r["defense"] == name and r["setting"] == setting], dashed=setting == "dw_both")
              for name in (defense, twin) for setting in ("white", "dw_both")]
    svg = line_chart(series, title=f"ADDT vs vanilla across NFE and settings: {defense}", x_label="NFE",
                     y_label="robust accuracy (expected)", log_x=True, y_range=(0.0, 1.0))
    return run_ids, {"defense": defense, "rows": rows}, table, svg


@STUDIES.register("generation")
def generation_study(engine: Engine, request: StudyRequest) -> tuple[list[str], dict[str, Any], str, str]:
    """ADDT Table 7: the generation quality of each entry's diffusion model (``values``: DDPM-family
    entries, e.g. ``dp_ddpm_addt[fine_tune=linf]``), ``n_samples`` images each by full ancestral
    sampling, as the Fréchet distance to the training images (:mod:`bench.harness.generation`)."""
    from bench.core.config import build_config, split_entry
    from bench.core.defense import DEFENSES
    from bench.harness.generation import feature_extractor, features, frechet_distance, generate
    from bench.publish.svg import bar_chart
    from bench.zoo.datasets import load_test_split, load_train_split

    entries = request.values or ["dp_ddpm", "dp_ddpm_addt[fine_tune=clean]", "dp_ddpm_addt", "dp_ddpm_addt[fine_tune=linf]"]
    network, label = feature_extractor(request.dataset)
    train = load_train_split(request.dataset)
    reference = features(network, train.images)
    shape = tuple(train.images.shape[1:])
    rows = []
    held_out = features(network, load_test_split(request.dataset).images)
    floor = frechet_distance(held_out, reference, seed=request.seed)
    rows.append({"entry": "real (test split)", "fd": [floor.distance, floor.ci_low, floor.ci_high], "n": floor.n_generated})
    for entry in entries:
        name, options = split_entry(entry)
        cls = DEFENSES.get(name)
        defense = cls.pretrained(request.dataset, build_config(cls.config_cls, {**request.defense_options, **options}))
        if not hasattr(defense, "unet"):
            raise ConfigError(f"generation: {entry!r} has no DDPM network to sample from (DDPM-family entries only)")
        images = generate(defense.unet, dict(defense.scheduler.config), request.n_samples, shape, request.seed)
        result = frechet_distance(features(network, images), reference, seed=request.seed)
        rows.append({"entry": entry, "fd": [result.distance, result.ci_low, result.ci_high], "n": result.n_generated})
    table = "\n".join([f"| model | {label} [95% bootstrap CI] | generated images |", "|---|---|---|"]
                      + [f"| {r['entry']} | {r['fd'][0]:.3f} [{r['fd'][1]:.3f}, {r['fd'][2]:.3f}] | {r['n']} |" for r in rows])
    top = max(r["fd"][2] for r in rows) or 1.0
    svg = bar_chart([(r["entry"], r["fd"][0] / top, r["fd"][1] / top, r["fd"][2] / top) for r in rows],
                    title=f"Generation quality: {label}, {request.dataset}",
                    x_label=f"distance to the training images, as a fraction of {top:.3g} (95% CI; lower is better)")
    return [], {"metric": label, "reference_images": len(train.images), "rows": rows}, table, svg
