"""Running, storing and resuming one evaluation (defense x attack x setting)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bench.core.attack import ATTACKS, Attack
from bench.core.config import build_config, config_to_dict
from bench.core.defense import DEFENSES, DefendedClassifier
from bench.core.determinism import configure as configure_determinism
from bench.core.determinism import self_check
from bench.core.errors import ConfigError, StoreError, UnknownNameError
from bench.core.memory import default_budget, parse_bytes, plan_gradient, plan_inference
from bench.core.metrics import resubmission_curve, summarize, wilson_interval
from bench.core.noise import NoiseSource
from bench.core.provenance import collect_provenance, git_commit
from bench.core.settings import Setting, parse_setting
from bench.core.target import StochasticTarget
from bench.protocols import protocol_for
from bench.harness.store import Run, SampleResult, get_run, utcnow, write_with_retry
from bench.zoo.datasets import DATASETS, Split, load_test_split, select_indices

log = logging.getLogger(__name__)

# Default threat models per dataset: (eps, step size). CIFAR follows the ADDT paper; the
# toy suite's 8x8 digits (grey levels in steps of 1/16) use ε = 0.25 = 4/16 for ℓ∞ and
# 1.5 for ℓ2 (8x8x1 = 64 dims), with steps of ε/4 and ε/5 as in the paper: the smallest
# round budgets at which PGD-20 takes the undefended toy classifier to ≤ 2% (measured on
# 200 test images: ℓ∞ 0.1875 -> 2.0%, 0.25 -> 0%; ℓ2 1.0 -> 1.5%, 1.5 -> 0%).
THREAT_DEFAULTS: dict[str, dict[str, tuple[float, float]]] = {
    "cifar10": {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)},
    "cifar100": {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)},
    "toy": {"linf": (0.25, 0.0625), "l2": (1.5, 0.3)},
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@dataclass
class RunRequest:
    """Everything ``bench run`` needs; ``None`` means the dataset's / plug-in's default."""

    defense: str
    attack: str
    setting: str = "white"
    norm: str = "linf"
    eps: float | None = None
    step_size: float | None = None
    dataset: str = "toy"
    classifier: str | None = None  # spec, see bench.zoo.classifiers; None = the dataset's default
    n_samples: int | None = 64
    start_index: int = 0
    seed: int = 0
    eval_draws: int = 10
    batch_size: int = 64
    defense_options: dict[str, Any] = field(default_factory=dict)
    attack_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    checkpoint: str = "auto"
    memory_budget: str | None = None
    deterministic: bool = True
    sample_indices: list[int] | None = None  # explicit test indices (then n_samples/start_index are ignored)
    protocol: str | None = None  # budgets (bench/protocols); None = the dataset's default (toy: "toy")


@dataclass
class Components:
    """The live objects a run needs, rebuilt identically from a stored run row."""

    model: DefendedClassifier
    attack: Attack
    setting: Setting
    split: Split
    device: torch.device
    dtype: torch.dtype
    checkpoint: str
    budget: int


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a valid torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} requested but CUDA is not available here; use --device cpu")
    return device


def build_components(
    *, defense: str, defense_config: dict[str, Any], attack: str, attack_config: dict[str, Any],
    setting: str, dataset: str, runtime: dict[str, Any], classifier: str = "",
) -> Components:
    from bench.zoo.classifiers import load_classifier

    defense_cls = DEFENSES.get(defense)
    attack_cls = ATTACKS.get(attack)
    parsed_setting = parse_setting(setting)
    if dataset not in DATASETS:
        raise UnknownNameError(f"Unknown dataset {dataset!r}. Valid datasets: {', '.join(DATASETS)}.")
    if runtime["dtype"] not in DTYPES:
        raise ConfigError(f"--dtype {runtime['dtype']!r} is not one of {', '.join(DTYPES)}")
    device, dtype = _device(runtime["device"]), DTYPES[runtime["dtype"]]
    configure_determinism(device, runtime.get("deterministic", True))
    attack_obj = attack_cls(build_config(attack_cls.config_cls, attack_config))
    # Models first: a missing checkpoint should fail before a dataset download starts.
    defense_obj = defense_cls.build(dataset, build_config(defense_cls.config_cls, defense_config))
    classifier_obj = load_classifier(dataset, classifier or None, attack_config.get("norm", "linf"))
    model = DefendedClassifier(defense_obj, classifier_obj).to(device=device, dtype=dtype).eval()
    split = load_test_split(dataset)
    budget = parse_bytes(runtime["memory_budget"]) if runtime.get("memory_budget") else default_budget(device)
    return Components(model, attack_obj, parsed_setting, split, device, dtype, runtime["checkpoint"], budget)


def create_run(engine: Engine, request: RunRequest) -> str:
    """Validate ``request``, store a new run row (status ``running``) and return its id."""
    return start_run(engine, request)[0]


def normalized_request(request: RunRequest) -> dict[str, Any]:
    """The fields a stored run records for ``request`` (defaults and ε/step resolved), used to
    recognise an equivalent run already in the store."""
    if request.dataset not in THREAT_DEFAULTS:
        raise UnknownNameError(f"Unknown dataset {request.dataset!r}. Valid datasets: {', '.join(DATASETS)}.")
    if request.norm not in THREAT_DEFAULTS[request.dataset]:
        raise ConfigError(f"--norm {request.norm!r} is not one of {', '.join(THREAT_DEFAULTS[request.dataset])}")
    from bench.zoo.classifiers import default_classifier

    default_eps, default_step = THREAT_DEFAULTS[request.dataset][request.norm]
    eps = default_eps if request.eps is None else request.eps
    step = request.step_size if request.step_size is not None else (
        default_step if request.eps is None else eps * default_step / default_eps
    )
    attack_cls, defense_cls = ATTACKS.get(request.attack), DEFENSES.get(request.defense)
    protocol = protocol_for(request.dataset, request.protocol)
    # the protocol's budgets first, the request's explicit options over them
    # the defense's paper defaults for this norm (e.g. DiffPure's ℓ2 t*), unless given explicitly
    norm_defaults = {k: v for k, v in defense_cls.norm_defaults.get(request.norm, {}).items()
                     if k not in request.defense_options}
    defense_options = {**protocol.defense_options(request.defense), **norm_defaults, **request.defense_options}
    attack_options = {"norm": request.norm, "eps": eps, **protocol.attack_options(request.attack),
                      **request.attack_options}
    if attack_cls.accepts("step_size"):
        attack_options.setdefault("step_size", step)
    elif request.step_size is not None or "step_size" in request.attack_options:
        raise ConfigError(f"attack {request.attack!r} takes no step size (it sets its own); drop --step-size")
    return {
        "defense": request.defense, "attack": request.attack, "setting": parse_setting(request.setting).name,
        "norm": request.norm, "eps": float(eps), "dataset": request.dataset, "seed": request.seed,
        "eval_draws": request.eval_draws, "batch_size": request.batch_size,
        "classifier": request.classifier or default_classifier(request.dataset),
        "protocol": protocol.key, "norm_defaults": norm_defaults,
        "defense_config": config_to_dict(build_config(defense_cls.config_cls, defense_options)),
        "attack_config": config_to_dict(build_config(attack_cls.config_cls, attack_options)),
    }


def validate_request(request: RunRequest) -> dict[str, Any]:
    """Every check that needs neither the store nor a model: names, options, setting, dtype,
    device, checkpoint policy, memory budget, draws, batch size and sample indices. Returns the
    normalized request (:func:`normalized_request`). ``bench grid`` runs it on every cell before the
    first one starts, so a typo in the last cell stores nothing."""
    from bench.core.memory import CHECKPOINT_POLICIES
    from bench.zoo.labels import SPLIT_SIZES

    if request.eval_draws < 1:
        raise ConfigError(f"--draws {request.eval_draws} must be at least 1")
    if request.batch_size < 1:
        raise ConfigError(f"--batch-size {request.batch_size} must be at least 1")
    if request.checkpoint not in CHECKPOINT_POLICIES:
        raise ConfigError(f"--checkpoint {request.checkpoint!r} is not one of {', '.join(CHECKPOINT_POLICIES)}")
    if request.dtype not in DTYPES:
        raise ConfigError(f"--dtype {request.dtype!r} is not one of {', '.join(DTYPES)}")
    _device(request.device)
    if request.memory_budget:
        parse_bytes(request.memory_budget)
    parse_setting(request.setting)
    wanted = normalized_request(request)
    size = SPLIT_SIZES.get(request.dataset)
    if size is not None:
        if request.sample_indices is not None:
            _check_indices([int(i) for i in request.sample_indices], size, request.dataset)
        else:
            _check_range(request.n_samples, request.start_index, size, request.dataset)
    return wanted


def _check_range(n_samples: int | None, start: int, size: int, dataset: str) -> None:
    if not 0 <= start < size:
        raise ConfigError(f"--start-index {start} is outside the {dataset} test split (valid: 0..{size - 1})")
    if n_samples is not None and not 1 <= n_samples <= size - start:
        raise ConfigError(f"--n-samples {n_samples} from index {start}: the {dataset} test split holds {size} images, "
                          f"so from index {start} the valid range is 1..{size - start}")


def _check_indices(indices: list[int], size: int, dataset: str) -> None:
    bad = sorted({i for i in indices if not 0 <= i < size})
    if bad or not indices or len(set(indices)) != len(indices):
        raise ConfigError(f"sample indices {bad or indices} must be distinct and in 0..{size - 1} ({dataset})")


@dataclass
class PreparedRun:
    """A request checked and built, ready to be stored as a run (nothing stored yet)."""

    request: RunRequest
    wanted: dict[str, Any]
    runtime: dict[str, Any]
    parts: Components
    indices: list[int]


def prepare_run(request: RunRequest) -> PreparedRun:
    """Validate ``request``, build its components and check that its draws and memory budget can
    work, all before the store is touched: every refusal happens here."""
    from bench.core.memory import check_draw_counts, plan_gradient, plan_inference

    wanted = validate_request(request)
    setting = parse_setting(request.setting)
    runtime = {
        "device": request.device, "dtype": request.dtype, "checkpoint": request.checkpoint,
        "memory_budget": request.memory_budget, "deterministic": request.deterministic,
        "protocol": wanted["protocol"], "norm_defaults": wanted["norm_defaults"],
    }
    parts = build_components(
        defense=request.defense, defense_config=wanted["defense_config"], attack=request.attack,
        attack_config=wanted["attack_config"], setting=setting.name, dataset=request.dataset, runtime=runtime,
        classifier=wanted["classifier"],
    )
    sample_shape = tuple(parts.split.images.shape[1:])
    parts.attack.check_target(parts.model.defense, parts.setting, sample_shape)
    if request.sample_indices is not None:
        indices = [int(i) for i in request.sample_indices]
        _check_indices(indices, len(parts.split), request.dataset)
    else:
        indices = select_indices(parts.split, request.n_samples, request.start_index)
    attack_draws = parts.setting.attack_draws(parts.attack.eot)
    check_draw_counts(parts.model, sample_shape, parts.budget, min(request.batch_size, len(indices)),
                      {("--setting " + setting.name if setting.kind == "dw_semi" else "the attack's EoT"): attack_draws,
                       "--draws": request.eval_draws})
    # the smallest plans must fit the budget (a budget that cannot work is refused, not exceeded)
    plan_gradient(parts.model, sample_shape, parts.device, parts.dtype, parts.checkpoint, parts.budget,
                  max(attack_draws, 1), measure=False)
    plan_inference(parts.model, sample_shape, parts.device, parts.dtype, parts.budget, 1)
    return PreparedRun(request, wanted, runtime, parts, indices)


def store_run(engine: Engine, prepared: PreparedRun) -> str:
    """Store ``prepared`` as a new run row (status ``running``); returns its id."""
    request, wanted, parts = prepared.request, prepared.wanted, prepared.parts
    provenance = collect_provenance(parts.device)
    run_id = uuid.uuid4().hex[:12]
    run = Run(
        id=run_id, status="running", defense=request.defense, defense_config=wanted["defense_config"],
        attack=request.attack, attack_config=wanted["attack_config"], setting=wanted["setting"], norm=request.norm,
        eps=float(wanted["eps"]), dataset=request.dataset, classifier=wanted["classifier"],
        sample_indices=prepared.indices, n_samples=len(prepared.indices), seed=request.seed,
        eval_draws=request.eval_draws, batch_size=request.batch_size, nfe=parts.model.defense.nfe,
        runtime=prepared.runtime, git_commit=provenance["git_commit"], package_versions=provenance["packages"],
        device=provenance["device"], wall_seconds=0.0, attack_seconds=0.0,
    )
    write_with_retry(engine, lambda session: session.add(run))
    return run_id


def start_run(engine: Engine, request: RunRequest) -> tuple[str, Components]:
    """Like :func:`create_run`, also returning the built components so that
    :func:`execute_run` does not load the models a second time."""
    prepared = prepare_run(request)
    return store_run(engine, prepared), prepared.parts


ProgressCallback = Callable[[float, int], None]  # (images done, possibly fractional; total)


def execute_run(
    engine: Engine, run_id: str, progress: ProgressCallback | None = None, parts: Components | None = None
) -> dict[str, Any]:
    """Evaluate every sample of run ``run_id`` not yet stored, then store its summary.

    Batches are the fixed partition of the run's samples by ``batch_size``; each batch's
    rows are committed in one transaction, so resuming after a crash recomputes exactly the
    missing batches and yields per-sample results identical to an uninterrupted run.
    """
    with Session(engine) as session:
        run = get_run(session, run_id)
        run_id = run.id
        if run.status == "complete":
            return run.metrics or {}
        spec = dict(
            defense=run.defense, defense_config=run.defense_config, attack=run.attack,
            attack_config=run.attack_config, setting=run.setting, dataset=run.dataset, runtime=run.runtime,
            classifier=run.classifier,
        )
        indices, batch_size, seed, draws = list(run.sample_indices), run.batch_size, run.seed, run.eval_draws
        done = set(session.scalars(select(SampleResult.sample_index).where(SampleResult.run_id == run_id)))
        stored_commit = run.git_commit
    current_commit = git_commit()
    if stored_commit and current_commit and stored_commit != current_commit:
        log.warning("run %s was started at commit %s; resuming at %s", run_id, stored_commit, current_commit)
    _set_status(engine, run_id, "running", None)
    parts = parts or build_components(**spec)
    noise = NoiseSource(seed)
    sample_shape = tuple(parts.split.images.shape[1:])
    try:
        _run_batches(engine, run_id, parts, noise, indices, batch_size, draws, done, sample_shape, progress)
    except KeyboardInterrupt:
        _set_status(engine, run_id, "interrupted", "interrupted by the user")
        raise
    except Exception as err:
        _set_status(engine, run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    return finalize_run(engine, run_id)


def pending_batches(engine: Engine, run_id: str) -> list[int]:
    """Start positions of the run's batches (fixed partition) that are not fully stored."""
    with Session(engine) as session:
        run = get_run(session, run_id)
        indices, batch_size = list(run.sample_indices), run.batch_size
        done = set(session.scalars(select(SampleResult.sample_index).where(SampleResult.run_id == run.id)))
    return [s for s in range(0, len(indices), batch_size) if not all(i in done for i in indices[s : s + batch_size])]


def _stored(engine: Engine, run_id: str, sample_ids: list[int]) -> bool:
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(SampleResult).where(
            SampleResult.run_id == run_id, SampleResult.sample_index.in_(sample_ids)))
    return bool(count)


def execute_shard(engine: Engine, run_id: str, batch_starts: list[int]) -> int:
    """Evaluate only the batches starting at ``batch_starts`` of run ``run_id`` (skipping any
    already stored) without finalizing it: the unit of work of a distributed executor.
    Returns the number of samples this call stored."""
    with Session(engine) as session:
        run = get_run(session, run_id)
        spec = dict(
            defense=run.defense, defense_config=run.defense_config, attack=run.attack,
            attack_config=run.attack_config, setting=run.setting, dataset=run.dataset, runtime=run.runtime,
            classifier=run.classifier,
        )
        indices, batch_size, seed, draws = list(run.sample_indices), run.batch_size, run.seed, run.eval_draws
        done = set(session.scalars(select(SampleResult.sample_index).where(SampleResult.run_id == run.id)))
    parts = build_components(**spec)
    before = len(done)
    _run_batches(engine, run_id, parts, NoiseSource(seed), indices, batch_size, draws, done,
                 tuple(parts.split.images.shape[1:]), None, only_batches=set(batch_starts))
    with Session(engine) as session:
        after = session.scalar(select(func.count()).select_from(SampleResult).where(SampleResult.run_id == run_id))
    return int(after or 0) - before


def _run_batches(
    engine: Engine, run_id: str, parts: Components, noise: NoiseSource, indices: list[int],
    batch_size: int, draws: int, done: set[int], sample_shape: tuple[int, ...],
    progress: ProgressCallback | None, only_batches: set[int] | None = None,
) -> None:
    model, device, dtype = parts.model, parts.device, parts.dtype
    # the largest batch this run attacks: a run with fewer samples than --batch-size never stacks more
    stacked = min(batch_size, max(len(indices), 1)) * max(parts.setting.attack_draws(parts.attack.eot), 1)
    grad_plan = plan_gradient(model, sample_shape, device, dtype, parts.checkpoint, parts.budget, stacked)
    eval_plan = plan_inference(model, sample_shape, device, dtype, parts.budget, batch_size * draws)
    log.info("memory plan: gradient %s, inference %s", grad_plan, eval_plan)
    total = len(indices)
    finished = sum(1 for i in indices if i in done)
    pending = [i for i in indices if i not in done]
    if pending and only_batches is None:  # one recomputed gradient per run, before a batch is stored
        first = pending[:1]
        probe = StochasticTarget(model, parts.setting, noise, first, grad_plan, eval_plan)
        self_check(probe, parts.split.images[first].to(device=device, dtype=dtype), parts.split.labels[first].to(device))
    if progress:
        progress(finished, total)
    for start in range(0, total, batch_size):
        batch_ids = indices[start : start + batch_size]
        if (only_batches is not None and start not in only_batches) or all(i in done for i in batch_ids):
            continue
        if only_batches is not None and _stored(engine, run_id, batch_ids):
            continue  # another shard (or an earlier attempt of this one) already stored it
        began = time.perf_counter()
        x = parts.split.images[batch_ids].to(device=device, dtype=dtype)
        y = parts.split.labels[batch_ids].to(device)
        target = StochasticTarget(model, parts.setting, noise, batch_ids, grad_plan, eval_plan)
        planned = parts.attack.planned_draws()
        if progress and planned is not None:
            target.on_work = _within_batch_progress(progress, finished, len(batch_ids), total, planned, draws)
        clean_preds = target.eval_predictions(x, draws)
        attack_began = time.perf_counter()
        target.reset_cost()
        result = parts.attack.perturb(target, x, y)
        attack_elapsed = time.perf_counter() - attack_began
        x_adv = result.x_adv
        # every attack's cost per sample, counted by the target (chains differentiated / run forward)
        infos = [{**(info or {}), **target.cost(sid)}
                 for info, sid in zip(result.info or [None] * len(batch_ids), batch_ids)]
        adv_preds = target.eval_predictions(x_adv, draws)
        # the attacker's own queries of its final point: they choose each image's strongest attack
        # on the leaderboard, while the evaluation draws above score it
        select_preds = target.selection_predictions(x_adv, draws)
        delta = (x_adv - x).flatten(1).float()
        rows = [
            SampleResult(
                run_id=run_id, sample_index=sid, position=start + j, label=int(y[j]),
                clean_preds=clean_preds[j].tolist(), adv_preds=adv_preds[j].tolist(),
                select_preds=select_preds[j].tolist(),
                linf_norm=float(delta[j].abs().max()), l2_norm=float(delta[j].norm()), attack_info=infos[j],
            )
            for j, sid in enumerate(batch_ids)
        ]
        elapsed = time.perf_counter() - began

        def store_batch(session: Session) -> None:
            session.add_all(rows)
            run = session.get(Run, run_id)
            assert run is not None
            run.wall_seconds = (run.wall_seconds or 0.0) + elapsed
            run.attack_seconds = (run.attack_seconds or 0.0) + attack_elapsed
            run.updated_at = utcnow()

        try:
            write_with_retry(engine, store_batch)
        except IntegrityError:
            # a concurrent shard stored this batch first; its rows are identical (same seeds)
            log.warning("run %s: batch at %d was already stored by another worker", run_id, start)
        finished += len(batch_ids)
        if progress:
            progress(finished, total)


GRADIENT_COST = 3.0  # a gradient draw ≈ one forward and one backward pass ≈ 3 forward passes


def _within_batch_progress(progress: ProgressCallback, finished: int, batch: int, total: int,
                           planned: tuple[int, int], eval_draws: int) -> Callable[[str, int], None]:
    """Fractional progress inside a batch from the passes the target counts, against the attack's
    nominal plan (+ the clean and adversarial evaluation draws), so a one-batch run shows an ETA
    long before its batch ends. Attacks that stop early finish sooner: the ETA is an upper bound."""
    gradient, forward = planned
    budget = batch * (GRADIENT_COST * gradient + forward + 2 * eval_draws)
    spent = 0.0

    def on_work(kind: str, rows: int) -> None:
        nonlocal spent
        spent += rows * (GRADIENT_COST if kind == "gradient" else 1.0)
        progress(finished + batch * min(spent / budget, 0.99), total)

    return on_work


def finalize_run(engine: Engine, run_id: str) -> dict[str, Any]:
    """Compute the summary from the stored sample rows and mark the run complete."""
    with Session(engine) as session, session.begin():
        run = get_run(session, run_id)
        rows = list(run.samples)
        if len(rows) != run.n_samples:
            raise StoreError(f"run {run_id} has {len(rows)} of {run.n_samples} samples stored; resume it first")
        labels = torch.tensor([r.label for r in rows])
        clean = summarize(labels, torch.tensor([r.clean_preds for r in rows]))
        robust = summarize(labels, torch.tensor([r.adv_preds for r in rows]))
        metrics = {"clean": clean, "robust": robust, "n": len(rows), "draws": run.eval_draws}
        metrics["rob_m"] = {part: resubmission_curve(
            [sum(int(p == r.label) for p in getattr(r, f"{part}_preds")) for r in rows], run.eval_draws)
            for part in ("clean", "adv")}
        spent = [r.attack_info for r in rows if r.attack_info and "gradient_draws" in r.attack_info]
        if len(spent) == len(rows):
            metrics["cost_per_sample"] = {key: sum(info.get(key, 0) for info in spent) / len(rows)
                                          for key in ("gradient_draws", "forward_draws")}
        reported = [r.attack_info["reported_correct"] for r in rows if r.attack_info and "reported_correct" in r.attack_info]
        if len(reported) == len(rows):
            # what the attack itself concluded (e.g. aa_rand's one-draw verdict), beside our evaluation
            value = sum(reported) / len(rows)
            low, high = wilson_interval(value, len(rows))
            metrics["attack_reported"] = {"acc": value, "ci_low": low, "ci_high": high, "n": len(rows)}
        run.metrics = metrics
        run.clean_acc, run.clean_ci_low, run.clean_ci_high = (clean["expected"][k] for k in ("acc", "ci_low", "ci_high"))
        run.robust_acc, run.robust_ci_low, run.robust_ci_high = (robust["expected"][k] for k in ("acc", "ci_low", "ci_high"))
        run.status, run.error = "complete", None
        run.finished_at = run.updated_at = utcnow()
    return metrics


def _set_status(engine: Engine, run_id: str, status: str, error: str | None) -> None:
    with Session(engine) as session, session.begin():
        run = session.get(Run, run_id)
        if run is not None:
            run.status, run.error, run.updated_at = status, error, utcnow()

