"""Building what a run needs (defended model, attack, setting, data, memory budget) and checking,
before the store is touched, that it can work: :func:`prepare_run` is where every refusal happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.core.attack import ATTACKS, Attack
from bench.core.config import build_config
from bench.core.defense import DEFENSES, DefendedClassifier, Defense
from bench.core.determinism import configure as configure_determinism
from bench.core.memory import check_draw_counts, default_budget, parse_bytes, plan_gradient, plan_inference
from bench.core.settings import Setting, parse_setting
from bench.harness.request import (
    NormalizedRequest,
    RunRequest,
    Runtime,
    check_indices,
    device_of,
    validate_request,
)
from bench.zoo.datasets import Split, load_test_split, select_indices


@dataclass
class Components:
    """The live objects a run needs, rebuilt identically from a stored run row (or, for a
    defense given as an object, kept from :func:`prepare_run`)."""

    model: DefendedClassifier
    attack: Attack
    setting: Setting
    split: Split
    device: torch.device
    dtype: torch.dtype
    checkpoint: str
    budget: int


def build_components(
    *, defense: str, defense_config: dict[str, Any], attack: str, attack_config: dict[str, Any],
    setting: str, dataset: str, runtime: Runtime | dict[str, Any], classifier: str = "",
    defense_object: Defense | None = None,
) -> Components:
    """The components of a run; ``defense_object`` replaces building ``defense`` from the registry."""
    from bench.zoo.classifiers import load_classifier

    runtime = runtime if isinstance(runtime, Runtime) else Runtime.from_dict(runtime)
    attack_cls = ATTACKS.get(attack)
    parsed_setting = parse_setting(setting)
    device, dtype = device_of(runtime.device), runtime.dtype.torch
    configure_determinism(device, runtime.deterministic)
    attack_obj = attack_cls(build_config(attack_cls.config_cls, attack_config))
    # Models first: a missing checkpoint should fail before a dataset download starts.
    if defense_object is None:
        defense_cls = DEFENSES.get(defense)
        defense_object = defense_cls.build(dataset, build_config(defense_cls.config_cls, defense_config))
    classifier_obj = load_classifier(dataset, classifier or None, attack_config.get("norm", "linf"))
    model = DefendedClassifier(defense_object, classifier_obj).to(device=device, dtype=dtype).eval()
    split = load_test_split(dataset)
    budget = parse_bytes(runtime.memory_budget) if runtime.memory_budget else default_budget(device)
    return Components(model, attack_obj, parsed_setting, split, device, dtype, str(runtime.checkpoint), budget)


@dataclass
class PreparedRun:
    """A request checked and built, ready to be stored as a run (nothing stored yet)."""

    request: RunRequest
    wanted: NormalizedRequest
    runtime: Runtime
    parts: Components
    indices: list[int]
    defense_name: str  # the registry name, or "instance:NAME" / "foreign:LABEL" for objects


def prepare_run(request: RunRequest, defense_object: Defense | None = None,
                defense_name: str | None = None) -> PreparedRun:
    """Validate ``request``, build its components and check that its draws and memory budget can
    work, all before the store is touched: every refusal happens here. ``defense_object`` (with
    its ``defense_name``) evaluates an object instead of a registered defense."""
    from dataclasses import asdict, is_dataclass

    config = None
    if defense_object is not None:
        config = asdict(defense_object.config) if is_dataclass(defense_object.config) else {}
    wanted = validate_request(request, config)
    setting = parse_setting(request.setting)
    runtime = Runtime(device=request.device, dtype=request.dtype, checkpoint=request.checkpoint,
                      memory_budget=request.memory_budget, deterministic=request.deterministic,
                      protocol=wanted.protocol, norm_defaults=wanted.norm_defaults)
    parts = build_components(
        defense=request.defense, defense_config=wanted.defense_config, attack=request.attack,
        attack_config=wanted.attack_config, setting=setting.name, dataset=request.dataset, runtime=runtime,
        classifier=wanted.classifier, defense_object=defense_object,
    )
    sample_shape = tuple(parts.split.images.shape[1:])
    parts.model.defense.check_setting(parts.setting)
    parts.attack.check_target(parts.model.defense, parts.setting, sample_shape)
    if request.sample_indices is not None:
        indices = [int(i) for i in request.sample_indices]
        check_indices(indices, len(parts.split), request.dataset)
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
    return PreparedRun(request, wanted, runtime, parts, indices, defense_name or request.defense)
