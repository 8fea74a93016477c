"""What a run asks for: the request, its typed options and its normalization.

:class:`RunRequest` is what ``bench run``, ``bench grid`` and :func:`bench.evaluate` build; strings
for the norm, dataset, dtype and checkpoint policy become :class:`enum.StrEnum` members at this
boundary (a bad value is refused with the valid ones). :func:`normalized_request` resolves every
default (threat model, protocol budgets, the defense's norm defaults) into a frozen
:class:`NormalizedRequest`; :func:`validate_request` adds every check that needs neither a model
nor the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from bench.core.attack import ATTACKS
from bench.core.config import build_config, config_to_dict
from bench.core.defense import DEFENSES
from bench.core.errors import ConfigError, UnknownNameError
from bench.core.memory import CHECKPOINT_POLICIES, parse_bytes
from bench.core.settings import parse_setting
from bench.protocols import protocol_for


class Norm(StrEnum):
    LINF = "linf"
    L2 = "l2"


class DatasetName(StrEnum):
    TOY = "toy"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    TINYIMAGENET = "tinyimagenet"


class DType(StrEnum):
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BFLOAT16 = "bfloat16"

    @property
    def torch(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[self.value]


class CheckpointPolicy(StrEnum):
    NEVER = "never"
    ALWAYS = "always"
    AUTO = "auto"


assert tuple(CheckpointPolicy) == CHECKPOINT_POLICIES  # noqa: S101 - one list of policies

# Default threat models per dataset: (eps, step size). CIFAR follows the ADDT paper; the
# toy suite's 8x8 digits (grey levels in steps of 1/16) use ε = 0.25 = 4/16 for ℓ∞ and
# 1.5 for ℓ2 (8x8x1 = 64 dims), with steps of ε/4 and ε/5 as in the paper: the smallest
# round budgets at which PGD-20 takes the undefended toy classifier to ≤ 2% (measured on
# 200 test images: ℓ∞ 0.1875 -> 2.0%, 0.25 -> 0%; ℓ2 1.0 -> 1.5%, 1.5 -> 0%).
THREAT_DEFAULTS: dict[str, dict[str, tuple[float, float]]] = {
    "cifar10": {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)},
    "cifar100": {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)},
    "tinyimagenet": {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)},  # ADDT: "settings following CIFAR-10"
    "toy": {"linf": (0.25, 0.0625), "l2": (1.5, 0.3)},
}
DTYPES = {d.value: d.torch for d in DType}


def to_enum(cls: type[StrEnum], value: Any, option: str) -> Any:
    """``value`` as a member of ``cls``; anything else is refused naming the valid values."""
    try:
        return cls(value)
    except ValueError:
        valid = ", ".join(m.value for m in cls)
        if cls is DatasetName:
            raise UnknownNameError(f"Unknown dataset {value!r}. Valid datasets: {valid}.") from None
        raise ConfigError(f"{option} {value!r} is not one of {valid}") from None


@dataclass
class RunRequest:
    """Everything a run needs; ``None`` means the dataset's / plug-in's default."""

    defense: str
    attack: str
    setting: str = "white"
    norm: Norm = Norm.LINF
    eps: float | None = None
    step_size: float | None = None
    dataset: DatasetName = DatasetName.TOY
    classifier: str | None = None  # spec, see bench.zoo.classifiers; None = the dataset's default
    n_samples: int | None = 64
    start_index: int = 0
    seed: int = 0
    eval_draws: int = 10
    batch_size: int = 64
    defense_options: dict[str, Any] = field(default_factory=dict)
    attack_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: DType = DType.FLOAT32
    checkpoint: CheckpointPolicy = CheckpointPolicy.AUTO
    memory_budget: str | None = None
    deterministic: bool = True
    sample_indices: list[int] | None = None  # explicit test indices (then n_samples/start_index are ignored)
    protocol: str | None = None  # budgets (bench/protocols); None = the dataset's default (toy: "toy")

    def __post_init__(self) -> None:
        self.norm = to_enum(Norm, self.norm, "--norm")
        self.dataset = to_enum(DatasetName, self.dataset, "--dataset")
        self.dtype = to_enum(DType, self.dtype, "--dtype")
        self.checkpoint = to_enum(CheckpointPolicy, self.checkpoint, "--checkpoint")


@dataclass(frozen=True)
class Runtime:
    """How a run executes (stored with it as JSON): device, dtype, checkpoint policy, memory
    budget, determinism, and the protocol and norm defaults that filled its options."""

    device: str
    dtype: DType
    checkpoint: CheckpointPolicy
    memory_budget: str | None
    deterministic: bool
    protocol: str
    norm_defaults: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": str(self.dtype), "checkpoint": str(self.checkpoint),
                "memory_budget": self.memory_budget, "deterministic": self.deterministic,
                "protocol": self.protocol, "norm_defaults": dict(self.norm_defaults)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Runtime:
        return cls(device=data["device"], dtype=to_enum(DType, data["dtype"], "dtype"),
                   checkpoint=to_enum(CheckpointPolicy, data["checkpoint"], "checkpoint"),
                   memory_budget=data.get("memory_budget"), deterministic=data.get("deterministic", True),
                   protocol=data.get("protocol") or "paper", norm_defaults=dict(data.get("norm_defaults") or {}))


@dataclass(frozen=True)
class NormalizedRequest:
    """A request with every default resolved: what a stored run records, and what
    ``bench grid`` compares to recognise an equivalent run."""

    defense: str
    attack: str
    setting: str
    norm: Norm
    eps: float
    dataset: DatasetName
    seed: int
    eval_draws: int
    batch_size: int
    classifier: str
    protocol: str
    norm_defaults: dict[str, Any]
    defense_config: dict[str, Any]
    attack_config: dict[str, Any]


def normalized_request(request: RunRequest, defense_config: dict[str, Any] | None = None) -> NormalizedRequest:
    """Resolve ``request``'s defaults: the threat model's ε and step, the protocol's budgets, the
    defense's paper defaults for this norm, then the request's explicit options over them.
    ``defense_config``: the config of a defense given as an object (:func:`bench.evaluate`), taken
    as it is instead of being built from the registry."""
    from bench.zoo.classifiers import default_classifier

    if request.norm not in THREAT_DEFAULTS[request.dataset]:
        raise ConfigError(f"--norm {request.norm!r} is not one of {', '.join(THREAT_DEFAULTS[request.dataset])}")
    default_eps, default_step = THREAT_DEFAULTS[request.dataset][request.norm]
    eps = default_eps if request.eps is None else request.eps
    step = request.step_size if request.step_size is not None else (
        default_step if request.eps is None else eps * default_step / default_eps
    )
    attack_cls = ATTACKS.get(request.attack)
    protocol = protocol_for(request.dataset, request.protocol)
    norm_defaults: dict[str, Any] = {}
    if defense_config is None:
        defense_cls = DEFENSES.get(request.defense)
        # the protocol's budgets first, the defense's paper defaults for this norm (e.g. DiffPure's
        # ℓ2 t*) unless given explicitly, then the request's explicit options over them
        norm_defaults = {k: v for k, v in defense_cls.norm_defaults.get(request.norm, {}).items()
                         if k not in request.defense_options}
        options = {**protocol.defense_options(request.defense), **norm_defaults, **request.defense_options}
        defense_config = config_to_dict(build_config(defense_cls.config_cls, options))
    attack_options = {"norm": str(request.norm), "eps": eps, **protocol.attack_options(request.attack),
                      **request.attack_options}
    if attack_cls.accepts("step_size"):
        attack_options.setdefault("step_size", step)
    elif request.step_size is not None or "step_size" in request.attack_options:
        raise ConfigError(f"attack {request.attack!r} takes no step size (it sets its own); drop --step-size")
    return NormalizedRequest(
        defense=request.defense, attack=request.attack, setting=parse_setting(request.setting).name,
        norm=request.norm, eps=float(eps), dataset=request.dataset, seed=request.seed,
        eval_draws=request.eval_draws, batch_size=request.batch_size,
        classifier=request.classifier or default_classifier(request.dataset), protocol=protocol.key,
        norm_defaults=norm_defaults, defense_config=defense_config,
        attack_config=config_to_dict(build_config(attack_cls.config_cls, attack_options)),
    )


def device_of(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a valid torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} requested but CUDA is not available here; use --device cpu")
    return device


def validate_request(request: RunRequest, defense_config: dict[str, Any] | None = None) -> NormalizedRequest:
    """Every check that needs neither the store nor a model: names, options, setting, device,
    memory budget, draws, batch size and sample indices (the enums were checked on construction).
    ``bench grid`` runs it on every cell before the first one starts, so a typo in the last cell
    stores nothing."""
    from bench.zoo.labels import SPLIT_SIZES

    if request.eval_draws < 1:
        raise ConfigError(f"--draws {request.eval_draws} must be at least 1")
    if request.batch_size < 1:
        raise ConfigError(f"--batch-size {request.batch_size} must be at least 1")
    device_of(request.device)
    if request.memory_budget:
        parse_bytes(request.memory_budget)
    parse_setting(request.setting)
    wanted = normalized_request(request, defense_config)
    size = SPLIT_SIZES[request.dataset]
    if request.sample_indices is not None:
        check_indices([int(i) for i in request.sample_indices], size, request.dataset)
    else:
        check_range(request.n_samples, request.start_index, size, request.dataset)
    return wanted


def check_range(n_samples: int | None, start: int, size: int, dataset: str) -> None:
    if not 0 <= start < size:
        raise ConfigError(f"--start-index {start} is outside the {dataset} test split (valid: 0..{size - 1})")
    if n_samples is not None and not 1 <= n_samples <= size - start:
        raise ConfigError(f"--n-samples {n_samples} from index {start}: the {dataset} test split holds {size} images, "
                          f"so from index {start} the valid range is 1..{size - start}")


def check_indices(indices: list[int], size: int, dataset: str) -> None:
    bad = sorted({i for i in indices if not 0 <= i < size})
    if bad or not indices or len(set(indices)) != len(indices):
        raise ConfigError(f"sample indices {bad or indices} must be distinct and in 0..{size - 1} ({dataset})")
