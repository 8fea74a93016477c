"""The defense plug-in interface and the defended classifier (purifier + classifier)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from bench.core.errors import NonFiniteOutputError
from bench.core.noise import NoiseBatch, StreamSpec
from bench.core.registry import Registry


@dataclass(frozen=True)
class DefenseConfig:
    """Options every defense has (defense configs subclass this).

    ``votes``: deploy the defense as a majority vote over ``votes`` independent purifications
    (DiffBreak's deployment; :class:`bench.core.vote.MajorityVote`), entry ``NAME[votes=N]``;
    1 = one purification. (GDMP's own ``vote`` option is how its paths are combined.)
    """

    votes: int = 1


class Defense(nn.Module, ABC):
    """A purification defense: ``purify(x, noise) -> x_pur`` with all randomness in ``noise``.

    Subclasses set ``name``, ``description``, ``config_cls`` (a frozen dataclass),
    ``model_files``, ``fast_options`` and ``toy_options``, and implement :meth:`noise_spec`, :meth:`purify`,
    :meth:`pretrained` and :meth:`for_testing`. A defense must never draw random numbers itself.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    license: ClassVar[str] = ""
    addt: ClassVar[bool] = False  # weights fine-tuned with ADDT
    config_cls: ClassVar[type[Any]]
    # {dataset: model-file name in bench.zoo.hub.MODEL_FILES}: the network `pretrained` loads,
    # shown by the card and recorded with every run
    model_files: ClassVar[dict[str, str]] = {}
    # ``--defense-opt`` values for quick toy-suite checks (the contract matrix in the tests and
    # `.ci/pr-check`): cheaper than the defaults but the same code paths
    fast_options: ClassVar[dict[str, str]] = {}
    # the options the toy protocol runs it with (``bench/protocols/toy.toml`` reads them; its
    # [defenses] table only overrides): a new defense needs no edit outside its own file
    toy_options: ClassVar[dict[str, Any]] = {}
    # {norm: options}: defaults that depend on the threat model in the defense's paper (e.g.
    # DiffPure's t* = 0.075 for ℓ2); applied unless the option is given, recorded with the run
    norm_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # whether purification reads the classifier it protects (COUP's confidence guidance): then
    # :class:`DefendedClassifier` hands it over through :meth:`bind_classifier`
    uses_classifier: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def card(cls, sample_shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, Any]:
        """What `bench show` prints: paper, checkpoint, license, defaults, NFE and noise streams
        (from a tiny instance with the default config: stream sizes depend on the config only)."""
        import dataclasses

        config = cls.config_cls()
        instance = cls.card_instance(config)
        return {
            "name": cls.name,
            "description": cls.description,
            "paper": cls.paper,
            "model_files": dict(cls.model_files),
            "license": cls.license,
            "addt": cls.addt,
            "defaults": dataclasses.asdict(config),
            "nfe": instance.nfe,
            "network_calls": instance.network_calls,
            "streams": {k: {"tensors": v.steps, "shape": list(v.shape)} for k, v in instance.noise_spec(sample_shape).items()},
        }

    @classmethod
    def card_instance(cls, config: Any) -> Defense:
        """An instance whose config-derived properties (``nfe``, ``network_calls``,
        ``noise_spec``) the card reads; its networks are never run. Default: :meth:`for_testing`."""
        return cls.for_testing(config)

    @abstractmethod
    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        """Named streams this defense consumes for one sample of shape (C, H, W)."""

    @abstractmethod
    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        """Purify ``x`` (B, C, H, W) in [0, 1] using ``noise``; returns (B, C, H, W) in [0, 1].

        With ``checkpoint`` (True, or a fraction of the steps, see :func:`checkpointed_steps`) and
        grad enabled, those reverse steps run under non-reentrant ``torch.utils.checkpoint`` (a
        step's noise is an input, so recomputation is exact and the gradient bitwise unchanged).
        """

    @property
    def paths(self) -> int:
        """Purification paths per input: ``purify`` returns (B, C, H, W) for 1, else (B, paths, C, H, W)."""
        return 1

    @property
    def clamps_output(self) -> bool:
        """Whether ``purify`` returns images inside [0, 1] (DiffPure, like its reference, does not)."""
        return True

    @property
    def network_calls(self) -> int:
        """Denoiser evaluations per purification (0 for no purification)."""
        return 0

    @property
    def nfe(self) -> int:
        """NFE in the paper's convention (number of reverse steps)."""
        return 0

    @property
    def forward_scale(self) -> float:
        """d(output)/d(input) of the forward diffusion alone (the reverse taken as the identity):
        sqrt(ᾱ_{t*}) for DDPM/VP purification, 1 where the input is kept unscaled (EDM)."""
        return 1.0

    def surrogate(self, steps: int) -> Defense:
        """The same purifier with ``steps`` reverse steps and the same network (the surrogate of
        ``gradient=surrogate:K``); families that have one override this."""
        from bench.core.errors import ConfigError

        raise ConfigError(f"defense {self.name!r} has no surrogate with fewer steps; use another gradient mode")

    def bind_classifier(self, classifier: nn.Module) -> None:
        """Receive the classifier this defense protects (only defenses with ``uses_classifier`` keep it)."""

    def check_setting(self, setting: Any) -> None:
        """Refuse an attacker-knowledge setting this defense cannot honour (raise
        :class:`bench.core.errors.ConfigError`); every named-stream defense supports all of them."""

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """Combine per-path logits (B, paths, classes) of a multi-path defense into (B, classes)."""
        raise NotImplementedError(f"defense {self.name!r} returned several paths but defines no combine()")

    @classmethod
    def build(cls, dataset: str, config: Any) -> Defense:
        """The defense as deployed: :meth:`pretrained`, wrapped in a majority vote when the
        config asks for ``votes > 1``."""
        from bench.core.vote import with_vote

        return with_vote(cls.pretrained(dataset, config))

    @classmethod
    @abstractmethod
    def pretrained(cls, dataset: str, config: Any) -> Defense:
        """The defense with its released weights for ``dataset``; missing weights raise
        :class:`bench.core.errors.MissingAssetError` saying how to obtain them."""

    @classmethod
    @abstractmethod
    def for_testing(cls, config: Any | None = None, channels: int = 1, size: int = 8) -> Defense:
        """A tiny random-weight instance for tests."""


Checkpoint = bool | float  # none (False, 0.0), all (True, 1.0), or the fraction f of reverse steps to checkpoint


def checkpointed_steps(checkpoint: Checkpoint, total: int, keep_last: bool = True) -> list[bool]:
    """Which of ``total`` reverse steps run under checkpointing for a fraction ``f`` (True = 1,
    False = 0): evenly spread, step i of the n eligible ones iff ⌊(i+1)·f⌋ > ⌊i·f⌋, so exactly
    ⌊n·f⌋ of them. With ``keep_last`` the last step is never eligible: backward reaches it right
    after the classifier, so storing its activations costs no more peak memory than recomputing."""
    f = float(checkpoint)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"checkpoint fraction {f} is not in [0, 1]")
    eligible = total - 1 if keep_last else total
    marks = [int((i + 1) * f + 1e-9) > int(i * f + 1e-9) for i in range(max(eligible, 0))]
    return marks + [False] * (total - len(marks))


_step_counters: list[list[int]] = []


@contextlib.contextmanager
def counting_steps() -> Iterator[list[int]]:
    """Count the reverse steps ``purify`` runs inside the block: ``[steps, marked for checkpointing]``
    (the memory planner's probe; counting works with grad disabled too)."""
    counts = [0, 0]
    _step_counters.append(counts)
    try:
        yield counts
    finally:
        _step_counters.pop()


_step_captures: list[list[Any]] = []


@contextlib.contextmanager
def capturing_steps() -> Iterator[list[Any]]:
    """Collect every reverse step's output (the chain's intermediate samples, in order, with their
    autograd history) that ``purify`` produces inside the block (DiffAttack's deviated-reconstruction
    loss reads them)."""
    outputs: list[Any] = []
    _step_captures.append(outputs)
    try:
        yield outputs
    finally:
        _step_captures.pop()


def run_step(fn: Any, *args: Any, checkpoint: bool = False) -> Any:
    """``fn(*args)``, under non-reentrant ``torch.utils.checkpoint`` when ``checkpoint`` is set
    and grad is enabled. A step's noise must be among ``args`` so recomputation replays it;
    the determinism check is skipped because no step draws random numbers."""
    if _step_counters:
        _step_counters[-1][0] += 1
        _step_counters[-1][1] += bool(checkpoint)
    if checkpoint and torch.is_grad_enabled():
        out = torch_checkpoint(fn, *args, use_reentrant=False, determinism_check="none", preserve_rng_state=False)
    else:
        out = fn(*args)
    if _step_captures and isinstance(out, torch.Tensor):
        _step_captures[-1].append(out)
    return out


DEFENSES: Registry[type[Defense]] = Registry("defense", builtin="defenses", group="dbp_bench.defenses")


def register_defense(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: register a :class:`Defense` subclass under ``name``."""

    def decorator(cls: type[Defense]) -> type[Defense]:
        cls.name = name
        return DEFENSES.register(name)(cls)

    return decorator


class DefendedClassifier(nn.Module):
    """``classifier(defense.purify(x, noise))`` with a NaN/Inf guard on the purified image."""

    def __init__(self, defense: Defense, classifier: nn.Module) -> None:
        super().__init__()
        self.defense = defense
        self.classifier = classifier
        defense.bind_classifier(classifier)

    def forward(
        self,
        x: torch.Tensor,
        noise: NoiseBatch,
        sample_ids: list[int] | None = None,
        checkpoint: bool = False,
    ) -> torch.Tensor:
        """Logits (B, num_classes) for ``x`` (B, C, H, W) in [0, 1]. A multi-path defense
        returns (B, paths, C, H, W); each path is classified and ``defense.combine`` votes."""
        return self.classify(self.purify(x, noise, sample_ids, checkpoint))

    def purify(
        self, x: torch.Tensor, noise: NoiseBatch, sample_ids: list[int] | None = None, checkpoint: bool = False
    ) -> torch.Tensor:
        """``defense.purify`` with the NaN/Inf guard: raises :class:`NonFiniteOutputError`
        naming the samples whose purified image is not finite."""
        purified = self.defense.purify(x, noise, checkpoint=checkpoint)
        finite = torch.isfinite(purified.detach()).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            where = [sample_ids[i] for i in bad] if sample_ids is not None else bad
            raise NonFiniteOutputError(
                f"defense {self.defense.name!r} produced NaN/Inf purified images for sample "
                f"index(es) {sorted(set(where))}; no result was stored for them"
            )
        return purified

    def classify(self, purified: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of purified images: (B, C, H, W), or (B, paths, C, H, W)
        for a multi-path defense (each path classified, then ``defense.combine``)."""
        if purified.dim() == 5:
            logits = self.classifier(purified.flatten(0, 1)).view(purified.shape[0], purified.shape[1], -1)
            return self.defense.combine(logits)
        return self.classifier(purified)


_FINE_TUNE_CONFIGS: dict[type[Any], type[Any]] = {}


def fine_tune_config_cls(base: type[Any]) -> type[Any]:
    """``base`` (a frozen defense config) plus ``fine_tune``: which of the ADDT paper's fine-tunes
    the entry loads (:data:`bench.training.fine_tunes.FINE_TUNES`; default ``rbgm``, ADDT itself;
    ``clean`` / ``mse`` are Table 5's ablations, ``linf`` Table 12's, ``lambda0.02`` / ``lambda0.04``
    Table 15's)."""
    import dataclasses
    import sys

    from bench.training.fine_tunes import DEFAULT_FINE_TUNE, FINE_TUNES

    if base in _FINE_TUNE_CONFIGS:  # one class per base config (dp_ddpm_addt and dp_ddim_addt share one)
        return _FINE_TUNE_CONFIGS[base]

    def check(self: Any) -> None:
        base.__post_init__(self) if hasattr(base, "__post_init__") else None
        if self.fine_tune not in FINE_TUNES:
            from bench.core.errors import ConfigError

            raise ConfigError(f"fine_tune={self.fine_tune!r} is not one of {', '.join(FINE_TUNES)}")

    config_cls = dataclasses.make_dataclass(
        f"{base.__name__}FineTune", [("fine_tune", str, DEFAULT_FINE_TUNE)], bases=(base,), frozen=True,
        namespace={"__post_init__": check, "__doc__": base.__doc__, "__module__": base.__module__})
    # published beside its base config so that pickling (executors) finds it by name
    setattr(sys.modules[base.__module__], config_cls.__name__, config_cls)
    return _FINE_TUNE_CONFIGS.setdefault(base, config_cls)


def addt_variant(base: type[Defense], family: str, module: str) -> type[Defense]:
    """``base`` with ADDT fine-tuned weights (ADDT paper Sec. 5, Tables 1-2): the same purification,
    config and noise streams; only the denoiser differs, fine-tuned with RBGM + CGPO by
    ``bench addt train --backbone FAMILY``. Its model files are ``toy-FAMILY-addt`` (committed)
    and ``addt-FAMILY-cifar10`` (local, made by that command). ``module``: the plug-in file's
    ``__name__`` (so `.ci/pr-check` maps the file to its defense)."""
    return type(f"{base.__name__}ADDT", (base,), {
        "__doc__": f"{base.name} with ADDT fine-tuned {family} weights.",
        "config_cls": fine_tune_config_cls(base.config_cls),
        "__module__": module,
        "description": f"{base.name} with ADDT fine-tuned {family.upper()} weights",
        "paper": "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 5 (RBGM + CGPO fine-tuning)",
        "license": "as the base model's weights",
        "addt": True,
        "model_files": {"toy": f"toy-{family}-addt", "cifar10": f"addt-{family}-cifar10",
                        **({"tinyimagenet": f"addt-{family}-tinyimagenet"} if family in ("ddpm", "edm") else {})},
    })
