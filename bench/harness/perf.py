"""``bench perf``: the cost of exact-gradient attacks, measured as ratios within one run.

(a) PGD-EoT step time / compute floor, where the floor is ``network_calls x`` (UNet
    forward+backward) ``+`` classifier forward+backward, each timed on the same stacked
    batch in the same process; without recomputation and with per-step checkpointing, beside
    the recompute bound 1 + (recomputed calls x UNet forward) / floor that checkpointing cannot beat.
(b) Peak memory of one checkpointed gradient at 100 vs 10 reverse steps: the peak of
    bytes alive in storages allocated during it (:class:`bench.core.memtrack.PeakMemory`).
(c) EoT as one stacked batch vs EoT as a loop of single draws (same noise, same math).
(f) Partial checkpointing under memory budgets: the planner's plan against a measured sweep.
"""

from __future__ import annotations

import os

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.allocator import malloc_tuned
from bench.core.defense import DefendedClassifier
from bench.core.errors import ConfigError
from bench.core.memory import MemoryPlan
from bench.core.noise import NoiseSource
from bench.core.settings import parse_setting
from bench.core.target import StochasticTarget

TIMING_NFE = 10  # reverse steps for the timing ratios (the ratio does not depend on it)
DEFAULT_BATCH = {"toy": 16, "cifar10-ddpm": 1, "cifar10-ncsnpp": 1, "cifar10-edm": 1}
MODELS = tuple(DEFAULT_BATCH)


@dataclass
class PerfModel:
    """One denoiser family at one size: the network, how its defense calls it once (for the
    compute floor), the defense built on it at a given number of reverse steps, and the classifier."""

    name: str
    net: nn.Module
    classifier: nn.Module
    shape: tuple[int, ...]
    call: Callable[[torch.Tensor], torch.Tensor]  # one denoiser evaluation on a stacked batch in [-1, 1]
    make_defense: Callable[[int], Any]  # reverse steps -> Defense
    calls_per_step: int = 1  # denoiser evaluations per reverse step (EDM's Heun: 2, the last 1)

    def network_calls(self, steps: int) -> int:
        return self.make_defense(steps).network_calls


def _wrn() -> nn.Module:
    from bench.zoo.compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return WideResNet(28, 10).eval().requires_grad_(False)


def _perf_model(name: str) -> PerfModel:
    """``toy`` (committed toy DDPM UNet and classifier), ``cifar10-ddpm`` (google/ddpm-cifar10-32 UNet),
    ``cifar10-ncsnpp`` (DiffPure's NCSN++ DDPM++ deep) or ``cifar10-edm`` (EDM's SongUNet), the last
    three with random weights and a RobustBench WRN-28-10."""
    from bench.core.config import build_config
    from bench.core.defense import DEFENSES

    def cls_of(defense: str) -> Any:
        return DEFENSES.get(defense)

    if name in ("toy", "cifar10-ddpm"):
        if name == "toy":
            from bench.zoo.toy import load_toy_classifier, load_toy_unet

            unet, classifier, shape = load_toy_unet(), load_toy_classifier(), (1, 8, 8)
        else:
            from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

            torch.manual_seed(0)
            unet, classifier, shape = ddpm_cifar10_unet().eval().requires_grad_(False), _wrn(), (3, 32, 32)
        dp = cls_of("dp_ddpm")
        return PerfModel(name, unet, classifier, shape,
                         lambda x: unet(x, torch.full((x.shape[0],), 50, dtype=torch.long)).sample,
                         lambda steps: dp(build_config(dp.config_cls, {"nfe": steps}), unet))
    if name == "cifar10-ncsnpp":
        from bench.zoo.nets.ncsnpp import NCSNpp, NCSNppConfig

        torch.manual_seed(0)
        net = NCSNpp(NCSNppConfig(dropout=0.0)).eval().requires_grad_(False)
        dp = cls_of("diffpure")
        return PerfModel(name, net, _wrn(), (3, 32, 32), lambda x: net(x, torch.full((x.shape[0],), 50.0)),
                         lambda steps: dp(build_config(dp.config_cls, {"dt": 0.1 / steps}), net))
    if name == "cifar10-edm":
        from bench.zoo.nets.songunet import EDMPrecond

        torch.manual_seed(0)
        net = EDMPrecond().eval().requires_grad_(False)
        dp = cls_of("dp_edm")
        return PerfModel(name, net, _wrn(), (3, 32, 32), lambda x: net(x, torch.full((x.shape[0],), 0.3)),
                         lambda steps: dp(build_config(dp.config_cls, {"num_steps": max(steps // 2 + 1, 2)}), net),
                         calls_per_step=2)
    raise ConfigError(f"unknown perf model {name!r}; valid: {', '.join(MODELS)}")


def _models(name: str) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    """(denoiser, classifier, sample shape) of a perf model (see :func:`_perf_model`)."""
    model = _perf_model(name)
    return model.net, model.classifier, model.shape


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after a warm-up: the least disturbed by other load,
    applied alike to the floor's parts and to the measured step."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


_current: dict[str, PerfModel] = {}


def _cached_model(name: str) -> PerfModel:
    """The perf model ``name``, built once per process (a full-size one takes seconds to build)."""
    if name not in _current:
        _current[name] = _perf_model(name)
    return _current[name]


def _target(unet: nn.Module, classifier: nn.Module, nfe: int, batch: int, checkpoint: float | bool) -> StochasticTarget:
    """A White-box target of the perf model whose network is ``unet`` at ``nfe`` reverse steps."""
    model = next((m for m in _current.values() if m.net is unet), None)
    if model is None:  # a network not made by _perf_model: the DDPM purifier around it
        from bench.core.config import build_config
        from bench.core.defense import DEFENSES

        dp = DEFENSES.get("dp_ddpm")
        defense = dp(build_config(dp.config_cls, {"nfe": nfe}), unet)
    else:
        defense = model.make_defense(nfe)
    defended = DefendedClassifier(defense, classifier).eval()
    plan = MemoryPlan(checkpoint, 1 << 30, 1)
    return StochasticTarget(defended, parse_setting("white"), NoiseSource(0), list(range(batch)), plan, plan)


def _floor_parts(model: PerfModel, stacked: int) -> dict[str, Callable[[], Any]]:
    """The compute floor's timed parts on ``stacked`` images: one denoiser forward (no grad), one
    denoiser forward+backward with respect to its input, and the classifier's forward+backward."""
    x_stacked = torch.rand(stacked, *model.shape) * 2 - 1

    def unet_fwd() -> None:
        with torch.no_grad():
            model.call(x_stacked)

    def unet_fwd_bwd() -> None:
        inp = x_stacked.clone().requires_grad_(True)
        torch.autograd.grad(model.call(inp), inp, torch.ones_like(inp))

    def classifier_fwd_bwd() -> None:
        inp = torch.rand(stacked, *model.shape, requires_grad=True)
        logits = model.classifier(inp)
        torch.autograd.grad(F.cross_entropy(logits, torch.zeros(stacked, dtype=torch.long), reduction="sum"), inp)

    return {"unet_fwd_s": unet_fwd, "unet_fwd_bwd_s": unet_fwd_bwd, "classifier_fwd_bwd_s": classifier_fwd_bwd}


def measure_step_ratio(name: str, batch: int, eot: int, repeats: int) -> dict[str, float]:
    model = _cached_model(name)
    unet, classifier, shape = model.net, model.classifier, model.shape
    x = torch.rand(batch, *shape)
    y = torch.zeros(batch, dtype=torch.long)

    targets = {checkpoint: _target(unet, classifier, TIMING_NFE, batch, checkpoint) for checkpoint in (False, True)}
    parts: dict[str, Callable[[], Any]] = {
        **_floor_parts(model, batch * eot),
        "step_plain_s": lambda: targets[False].eot_gradient(x, y, 0, eot),
        "step_checkpoint_s": lambda: targets[True].eot_gradient(x, y, 0, eot),
    }
    # Interleaved rounds, fastest of each: a burst of outside load hits the floor's parts and
    # the step alike instead of skewing one side of the ratio.
    result = {name: float("inf") for name in parts}
    calls_in: dict[str, int] = {}
    for part, fn in parts.items():
        # the warm-up also counts the network calls each part starts. A pre-hook, not a forward
        # hook: checkpoint recomputation stops as soon as the step's saved tensors exist again
        # (torch's early stop), often inside the network's forward, whose end hook then never fires
        calls = [0]
        hook = unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        try:
            fn()
        finally:
            hook.remove()
        calls_in[part] = calls[0]
    for _ in range(repeats):
        for name, fn in parts.items():
            started = time.perf_counter()
            fn()
            result[name] = min(result[name], time.perf_counter() - started)
    calls = targets[False].model.defense.network_calls
    result["floor_s"] = calls * result["unet_fwd_bwd_s"] + result["classifier_fwd_bwd_s"]
    result["ratio_plain"] = result["step_plain_s"] / result["floor_s"]
    result["ratio_checkpoint"] = result["step_checkpoint_s"] / result["floor_s"]
    # recomputation adds one forward per recomputed network call and nothing else can be saved:
    # the checkpointed step's lower bound is the floor plus those forwards
    result["recomputed_calls"] = calls_in["step_checkpoint_s"] - calls_in["step_plain_s"]
    result["bound_checkpoint"] = 1 + result["recomputed_calls"] * result["unet_fwd_s"] / result["floor_s"]

    # (c) EoT stacked into the batch vs a loop over single draws with the same noise
    target = targets[False]
    spec = target.model.defense.noise_spec(shape)
    keys = [target.setting.attack_keys(spec, 0, d) for d in range(eot)]
    noise_all = target.noise.batch(spec, list(range(batch)) * eot, [k for k in keys for _ in range(batch)])
    singles = [target.noise.batch(spec, list(range(batch)), [k] * batch) for k in keys]
    result["eot_batch_s"] = _best_time(lambda: target.gradient_with_noise(x, y, noise_all, eot), repeats)
    result["eot_loop_s"] = _best_time(lambda: [target.gradient_with_noise(x, y, n, 1) for n in singles], repeats)
    result["eot_batch_over_loop"] = result["eot_batch_s"] / result["eot_loop_s"]
    return result


def measure_budget_ratios(name: str, batch: int, eot: int, repeats: int,
                          shares: tuple[float, ...] = (1.0, 0.5, 0.25), sweep: bool = True) -> list[dict[str, float]]:
    """(f) Partial checkpointing under memory budgets of ``shares`` × the plain-autograd peak:
    the fraction f the planner checkpoints, step time / floor, the bound 1 + f·fwd/(fwd+bwd)
    (measured UNet forward and forward+backward), the measured peak against the budget, and the
    best plan of a sweep over chunk size × fraction that stays within the budget (measured).

    Every plan (the sweep's and the planner's) is measured once — its peak, then its time — and
    shared by all budgets: the budgets only decide which measured plans are admissible, so at
    full size the sweep costs one pass over its grid instead of one per budget."""
    from bench.core.memory import plan_gradient
    from bench.core.memtrack import PeakMemory

    model = _cached_model(name)
    unet, classifier, shape = model.net, model.classifier, model.shape
    stacked = batch * eot
    x, y = torch.rand(batch, *shape), torch.zeros(batch, dtype=torch.long)
    times = {part: _best_time(fn, repeats) for part, fn in _floor_parts(model, stacked).items()}
    fwd, fwd_bwd = times["unet_fwd_s"], times["unet_fwd_bwd_s"]
    calls = model.make_defense(TIMING_NFE).network_calls
    floor = calls * fwd_bwd + times["classifier_fwd_bwd_s"]
    share_fwd = fwd / fwd_bwd
    base = _target(unet, classifier, TIMING_NFE, batch, False)

    measured: dict[tuple[int, float], tuple[int, float]] = {}  # (chunk, fraction) -> (peak bytes, seconds)

    def measure(chunk: int, fraction: float) -> tuple[int, float]:
        key = (chunk, round(fraction, 6))
        if key not in measured:
            plan = MemoryPlan(fraction, chunk, 1)
            target = StochasticTarget(base.model, base.setting, base.noise, list(range(batch)), plan, plan)
            with PeakMemory() as tracker:  # the peak pass doubles as the timing's warm-up
                target.eot_gradient(x, y, 0, eot)
            seconds = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                target.eot_gradient(x, y, 0, eot)
                seconds = min(seconds, time.perf_counter() - started)
            measured[key] = (tracker.peak, seconds)
        return measured[key]

    plain_peak, _ = measure(stacked, 0.0)
    chunks = sorted({stacked, max(stacked // 2, 1), max(stacked // 4, 1)}, reverse=True) if sweep else []
    grid = [(chunk, fraction) for chunk in chunks for fraction in (0.0, 0.25, 0.5, 0.75, 1.0)]
    rows = []
    for share in shares:
        budget = int(plain_peak * share)
        plan = plan_gradient(base.model, shape, torch.device("cpu"), torch.float32, "auto", budget, stacked)
        chosen = (plan.chunk_size, float(plan.checkpoint))
        peak, step = measure(*chosen)
        # the planner's own plan competes in the sweep: "best" is the fastest measured plan in budget
        plans = [(measure(*c)[1], *c) for c in [*grid, chosen] if sweep and measure(*c)[0] <= budget]
        best = min(plans) if plans else (float("nan"), 0, 0.0)
        rows.append({"share": share, "budget_mib": budget / 2**20, "fraction": chosen[1],
                     "chunk": chosen[0], "ratio": step / floor,
                     "bound": 1 + chosen[1] * share_fwd, "peak_mib": peak / 2**20,
                     "best_ratio": best[0] / floor, "best_chunk": best[1], "best_fraction": best[2],
                     "planner_over_best": step / best[0] if plans else float("nan")})
    return rows


def peak_gradient_memory(name: str, nfe: int, batch: int) -> int:
    """Peak bytes alive during one checkpointed purify+classify gradient (any device)."""
    from bench.core.memtrack import PeakMemory

    model = _cached_model(name)
    unet, classifier, shape = model.net, model.classifier, model.shape
    target = _target(unet, classifier, nfe, batch, True)
    x = torch.rand(batch, *shape)
    y = torch.zeros(batch, dtype=torch.long)
    spec = target.model.defense.noise_spec(shape)
    noise = target.noise.batch(spec, list(range(batch)), [target.setting.attack_keys(spec, 0, 0)] * batch)
    with PeakMemory() as tracker:
        target.gradient_with_noise(x, y, noise, 1)
    return tracker.peak


def perf_sections(models: list[str] | None = None, batch: int | None = None, eot: int = 4, repeats: int = 3,
                  budgets: bool = True, sweep: bool = True) -> Iterator[str]:
    """(a), (b), (c) and (f) per model as Markdown, one block per model as soon as it is measured
    (a full-size model takes many minutes on a CPU: a run cut short keeps what it finished)."""
    yield (f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}, "
           f"threads {torch.get_num_threads()}, malloc {'tuned' if malloc_tuned() else 'glibc defaults'}, "
           f"EoT {eot}, timing: {TIMING_NFE} reverse steps, best of {repeats}")
    for name in models or ["toy", "cifar10-ddpm"]:
        size = batch or DEFAULT_BATCH[name]
        started = time.perf_counter()
        timing = measure_step_ratio(name, size, eot, repeats)
        mem10 = peak_gradient_memory(name, 10, size)
        mem100 = peak_gradient_memory(name, 100, size)
        lines = [
            f"### {name}, batch {size} x EoT {eot}", "",
            "| model | batch x EoT | (a) step / floor, plain | (a) step / floor, checkpointed | (a) recompute bound | "
            "(b) peak mem 100 / 10 steps (checkpointed) | (c) EoT batch / loop time |",
            "|---|---|---|---|---|---|---|",
            f"| {name} | {size} x {eot} | {timing['ratio_plain']:.3f} | {timing['ratio_checkpoint']:.3f} | "
            f"{timing['bound_checkpoint']:.3f} | "
            f"{mem100 / max(mem10, 1):.3f} ({mem100 / 2**20:.1f} / {mem10 / 2**20:.1f} MiB) | "
            f"{timing['eot_batch_over_loop']:.3f} |", "",
            f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in timing.items()),
        ]
        if budgets:
            lines += ["", "(f) partial checkpointing at budgets of 100 / 50 / 25% of the plain-autograd peak "
                          f"(TIMING_NFE {TIMING_NFE}): planner's fraction f and chunk, step / floor vs the bound "
                          "1 + f·fwd/(fwd+bwd), measured peak, and the best in-budget plan of a chunk x fraction "
                          "sweep that includes the planner's plan" + ("" if sweep else " (sweep skipped)"), "",
                      "| model | budget | f | chunk | step / floor | bound | peak / budget | sweep best (chunk, f) | planner / best |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for r in measure_budget_ratios(name, size, eot, repeats, sweep=sweep):
                lines.append(
                    f"| {name} | {100 * r['share']:.0f}% ({r['budget_mib']:.1f} MiB) | {r['fraction']:.2f} | {r['chunk']} | "
                    f"{r['ratio']:.3f} | {r['bound']:.3f} | {r['peak_mib'] / max(r['budget_mib'], 1e-9):.2f} | "
                    f"{r['best_ratio']:.3f} ({r['best_chunk']}, {r['best_fraction']:.2f}) | {r['planner_over_best']:.3f} |")
        lines += ["", f"({name} measured in {time.perf_counter() - started:.0f} s)"]
        yield "\n".join(lines)


def measure_attack_cost(
    defense: str = "dp_ddpm", n_samples: int = 16, defense_options: dict[str, Any] | None = None,
    aa_options: dict[str, Any] | None = None, db: str = "sqlite://", seed: int = 0,
) -> str:
    """(d) aa_rand_fixed and aa_rand vs pgd_eot (PGD20-EoT10) on the same toy defense, images
    and seed: attack time ratio next to each robust accuracy (runs stored in ``db``)."""
    import dataclasses

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bench.core.attack import ATTACKS
    from bench.harness.runner import RunRequest, execute_run, start_run
    from bench.harness.store import SampleResult, get_run, open_store

    engine = open_store(db)
    rows = []
    # options only the fixed selection has (eval_draws, judge, early_stop) do not apply to aa_rand
    shared = {f.name for f in dataclasses.fields(ATTACKS.get("aa_rand").config_cls)}
    original_options = {k: v for k, v in (aa_options or {}).items() if k in shared}
    for attack, options in (("pgd_eot", {}), ("aa_rand_fixed", aa_options or {}), ("aa_rand", original_options)):
        request = RunRequest(defense=defense, attack=attack, n_samples=n_samples, batch_size=n_samples, seed=seed,
                             defense_options=dict(defense_options or {}), attack_options=dict(options))
        run_id, parts = start_run(engine, request)
        execute_run(engine, run_id, parts=parts)
        with Session(engine) as session:
            run = get_run(session, run_id)
            infos = [s.attack_info or {} for s in session.scalars(
                select(SampleResult).where(SampleResult.run_id == run.id))]
            rows.append((attack, run.id, run.attack_seconds, run.metrics, run.attack_config, infos))
    base = rows[0][2]
    lines = [
        f"(d) attack cost on toy {defense} {defense_options or ''}, {n_samples} images, seed {seed}",
        "",
        "| attack | run | attack time (s) | time / pgd_eot | robust expected [95% CI] | attack's own verdict |",
        "|---|---|---|---|---|---|",
    ]
    for attack, run_id, seconds, metrics, _config, _infos in rows:
        robust = metrics["robust"]["expected"]
        own = metrics.get("attack_reported")
        own_text = f"{own['acc']:.3f} [{own['ci_low']:.3f}, {own['ci_high']:.3f}]" if own else "-"
        lines.append(f"| {attack} | {run_id} | {seconds:.1f} | {seconds / base:.2f} | "
                     f"{robust['acc']:.3f} [{robust['ci_low']:.3f}, {robust['ci_high']:.3f}] | {own_text} |")
    aa_config = rows[1][4]
    bound = (aa_config["n_iter"] + 1) * aa_config["eot"] * len(aa_config["attacks"]) / (rows[0][4]["steps"] * rows[0][4]["eot"])
    pgd_draws = rows[0][4]["steps"] * rows[0][4]["eot"] * n_samples
    lines += ["", f"gradient evaluations per sample, AutoAttack / PGD: at most {bound:.1f} "
                  "(APGD (n_iter+1) x EoT per attack; fewer when points reach zero expected accuracy early)"]
    for attack, _run_id, _seconds, _metrics, config, infos in rows[1:]:
        spent = [info.get("gradient_draws") for info in infos]
        if any(d is None for d in spent):
            continue
        line = (f"{attack} (early_stop={config.get('early_stop', False)}): defense gradient draws / PGD's "
                f"{sum(spent) / pgd_draws:.2f}")
        if "eval_draws" in config:  # the fixed selection: reported_correct is an M-draw expected accuracy
            robust = sum(d for d, info in zip(spent, infos) if info.get("reported_correct", 0) > 0)
            line += (f", of which {robust / pgd_draws:.2f} on points it left above zero expected accuracy "
                     "(no rule that stops only verified-broken points can save those)")
        lines.append(line)
    return "\n".join(lines)


def write_synthetic_records(root: Path, count: int, seed: int = 0) -> None:
    """``count`` valid records with made-up outcomes (for timing the site build and testing it): 20
    records per entry (attacks x settings x threat models), spread over the registered defenses.
    Their configs are the paper protocol's, so they rank; their labels are the dataset's where the
    split is on this machine (the toy suite)."""
    import random

    import numpy as np

    from bench.core.defense import DEFENSES
    from bench.harness.runner import RunRequest, normalized_request
    from bench.publish.derive import Outcomes, derive
    from bench.publish.records import SCHEMA_VERSION, dumps_record, encode_preds, entry_key, pred_width, record_path
    from bench.zoo.labels import NUM_CLASSES, test_labels

    rng = random.Random(seed)
    names = DEFENSES.names()
    combos = [(attack, setting, dataset, norm, eps)
              for attack, setting in (("pgd_eot", "white"), ("aa_rand_fixed", "white"), ("diffhammer", "white"),
                                      ("aa_rand", "white"), ("pgd_eot", "dw_fwd"), ("pgd_eot", "dw_both"))
              for dataset, norm, eps in (("cifar10", "linf", 8 / 255), ("cifar10", "l2", 0.5), ("toy", "linf", 0.25),
                                         ("cifar100", "linf", 8 / 255))]
    n, k = 64, 10
    configs: dict[tuple[str, str, str, str, float], dict[str, Any]] = {}

    def preds(labels: np.ndarray, counts: list[int], classes: int) -> list[list[int]]:
        """Per-draw classes with ``counts[i]`` correct draws (the others one class off)."""
        return [[int(y) if d < c else (int(y) + 1) % classes for d in range(k)] for y, c in zip(labels, counts)]

    for i in range(count):
        defense = names[(i // len(combos)) % len(names)]
        attack, setting, dataset, norm, eps = combos[i % len(combos)]
        key = (defense, attack, dataset, norm, eps)
        if key not in configs:
            configs[key] = normalized_request(RunRequest(defense=defense, attack=attack, norm=norm, eps=eps, classifier="-",
                                                         dataset=dataset, protocol="paper"))
        wanted = configs[key]
        truth = test_labels(dataset)
        classes = NUM_CLASSES[dataset]
        labels = truth[:n] if truth is not None else np.asarray([rng.randrange(classes) for _ in range(n)])
        clean_counts = [rng.randint(6, 10) for _ in range(n)]
        adv_counts = [rng.randint(0, c) for c in clean_counts]
        select_counts = [min(k, max(0, c + rng.randint(-2, 2))) for c in adv_counts]
        draws = {"clean_preds": preds(labels, clean_counts, classes), "adv_preds": preds(labels, adv_counts, classes),
                 "select_preds": preds(labels, select_counts, classes)}
        width = pred_width(dataset)
        samples = {"label": [int(y) for y in labels], **{k: encode_preds(v, width) for k, v in draws.items()}}
        derived = derive(Outcomes.from_predictions(samples["label"], draws["clean_preds"], draws["adv_preds"],
                                                   draws["select_preds"]))
        record = {
            "schema_version": SCHEMA_VERSION, "run_id": f"synthetic{i:06d}",
            "entry": entry_key(defense, wanted.defense_config, f"synthetic-{i // len(combos)}", dataset),
            "defense": {"name": defense, "config": wanted.defense_config, "nfe": 100,
                        "paper": DEFENSES.get(defense).paper, "diffusion_model": "synthetic", "addt": False},
            "attack": {"name": attack, "config": wanted.attack_config, "unreliable": attack == "aa_rand"},
            "setting": setting, "classifier": f"synthetic-{i // len(combos)}",
            "dataset": {"name": dataset, "n_samples": n, "sample_indices": list(range(n))},
            "threat_model": {"norm": norm, "eps": eps}, "eval_draws": k,
            "clean": derived["clean"], "robust": derived["robust"], "attack_reported": None,
            "rob_m": derived["rob_m"],
            "cost": {"wall_seconds": 100.0, "attack_seconds": 90.0, "device": "synthetic"}, "seed": 0,
            "protocol": None, "git_commit": None, "package_versions": {}, "created_at": "2026-11-22T00:00:00",
            "finished_at": "2026-11-22T00:00:00",
            "samples": {**samples, **derived["samples"]},
        }
        record["_attack_label"] = attack
        path = record_path(root, record)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_record(record) + "\n", encoding="utf-8")


def measure_leaderboard_build(count: int = 10_000) -> str:
    """(e) Time ``bench leaderboard build`` on ``count`` synthetic records (generation excluded):
    the default two-process build, and the same build in one process for the ratio. Beside the
    wall time, the CPU seconds of the build's processes together (this process and the children it
    forked and waited for): the work done, which compares across machines better than the wall time
    of two processes that slow each other."""
    import tempfile

    from bench.publish.leaderboard import build_site

    def cpu_seconds() -> float:
        try:
            import resource
        except ImportError:  # Windows: no getrusage
            return float("nan")
        return sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        write_synthetic_records(root, count)
        before = cpu_seconds()
        summary = build_site(root, Path(tmp) / "site")
        cpu = cpu_seconds() - before
        alone = build_site(root, Path(tmp) / "site-one-process", processes=1)
    return (f"(e) leaderboard build: {summary['records']} records, {summary['entries']} entries, "
            f"{summary['tables']} tables in {summary['seconds']:.2f} s (target <= 5 s; {cpu:.2f} CPU seconds in "
            f"all processes; one process {alone['seconds']:.2f} s, ratio {summary['seconds'] / alone['seconds']:.2f}); phases: "
            + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in summary["phases"].items()))


def report_markdown(blocks: list[str], command: str) -> str:
    """A generated performance report: what ran, where, when, at which commit, and its figures."""
    import platform
    from datetime import datetime, timezone

    import torch

    from bench.core.provenance import device_description, git_commit

    header = ["# Performance report (generated)", "",
              f"- command: `{command}`",
              f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {device_description(torch.device('cpu'))}, "
              f"torch {torch.__version__}, Python {platform.python_version()}",
              f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
              f"- commit: `{git_commit()}`", "",
              "Ratios are measured within this one run; [the method](performance.md) says what each one is.", ""]
    return "\n".join(header) + "\n".join(f"```\n{block}\n```\n" for block in blocks)
