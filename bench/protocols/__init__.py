"""Evaluation protocols kept in the repository as data (``bench/protocols/*.toml``).

A protocol fixes the budgets of every defense and attack on one dataset, so that all entries of
a leaderboard track are evaluated alike and a visitor who re-runs an entry gets its record's
numbers. ``toy.toml`` is the toy suite's (applied by ``bench run --dataset toy`` unless
``--protocol paper``); ``paper`` is no file: each plug-in's own defaults, the papers' budgets.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError, UnknownNameError

PROTOCOL_DIR = Path(__file__).resolve().parent
_parsed_files: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at ``path``, parsed once per version of the file (keyed by path, size and
    modification time) and returned as a fresh copy: a site build looks protocols and reproductions
    up hundreds of times, and parsing them each time took most of a second."""
    import copy

    return copy.deepcopy(_parsed_toml(path))


def is_reproduction(path: Path) -> bool:
    """Whether the TOML file at ``path`` is a paper reproduction (``cells`` or ``subjects``) rather
    than an evaluation protocol (read from the cached parse: no copy)."""
    data = _parsed_toml(path)
    return "cells" in data or "subjects" in data


def _parsed_toml(path: Path) -> dict[str, Any]:
    """The cached parse itself (callers must not change it)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _parsed_files:
        with path.open("rb") as handle:
            _parsed_files[key] = tomllib.load(handle)
    return _parsed_files[key]


PAPER = "paper"
DEFAULT_FOR_DATASET = {"toy": "toy"}  # datasets without an entry use the paper's budgets


@dataclass(frozen=True)
class Protocol:
    """Budgets of one track: per-defense and per-attack option overrides plus the ranked records'
    size, seed, evaluation draws and ranking attacks."""

    key: str
    name: str
    dataset: str | None
    description: str
    defenses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    attacks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    n_samples: int | None = None
    seed: int = 0
    eval_draws: int = 10
    ranking_attacks: tuple[str, ...] = ()
    # a defense class attribute holding each plug-in's own budgets for this protocol (the toy
    # protocol: ``toy_options``); the file's [defenses] table only overrides them
    defense_budgets_from: str | None = None
    # ms of CPU per denoiser call (forward+backward) per image, one thread: what `bench reproduce
    # --dataset toy --dry-run` prices a toy re-run with
    cpu_ms_per_call: float | None = None

    def defense_options(self, defense: str) -> dict[str, Any]:
        """The protocol's options for ``defense``: the plug-in's own budgets for this protocol
        (``defense_budgets_from``, e.g. ``toy_options``), with the file's [defenses] line over them.
        A defense without either runs at its defaults (a new plug-in needs no edit here)."""
        if self.key == PAPER:
            return {}
        own: dict[str, Any] = {}
        if self.defense_budgets_from:
            from bench.core.defense import DEFENSES

            own = dict(getattr(DEFENSES.get(defense), self.defense_budgets_from, {}) or {})
        return {**own, **dict(self.defenses.get(defense, {}))}

    def attack_options(self, attack: str) -> dict[str, Any]:
        if self.key == PAPER:
            return {}
        if attack not in self.attacks:
            raise ConfigError(
                f"protocol {self.name!r} has no budgets for attack {attack!r}: add a line for it under [attacks] "
                f"in {PROTOCOL_DIR / (self.key + '.toml')} (listed: {', '.join(sorted(self.attacks))}), or run "
                f"with --protocol paper")
        return dict(self.attacks[attack])


PAPER_PROTOCOL = Protocol(PAPER, PAPER, None, "each plug-in's defaults: the budgets of its paper")


def available() -> list[str]:
    return [PAPER] + sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml") if _kind(p) == "evaluation")


def _kind(path: Path) -> str:
    return "reproduction" if is_reproduction(path) else "evaluation"


def load_protocol(key: str) -> Protocol:
    """The protocol named ``key`` (``paper`` or a file stem in ``bench/protocols``)."""
    if key == PAPER:
        return PAPER_PROTOCOL
    path = PROTOCOL_DIR / f"{key}.toml"
    if not path.is_file() or _kind(path) != "evaluation":
        raise UnknownNameError(f"Unknown protocol {key!r}. Valid protocols: {', '.join(available())}.")
    data = read_toml(path)
    try:
        return Protocol(
            key=key, name=str(data["name"]), dataset=data.get("dataset"), description=str(data["description"]),
            defenses={k: dict(v) for k, v in data.get("defenses", {}).items()},
            attacks={k: dict(v) for k, v in data.get("attacks", {}).items()},
            n_samples=data.get("n_samples"), seed=int(data.get("seed", 0)), eval_draws=int(data.get("eval_draws", 10)),
            ranking_attacks=tuple(data.get("ranking_attacks", ())),
            defense_budgets_from=data.get("defense_budgets_from"),
            cpu_ms_per_call=data.get("cpu_ms_per_call"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"protocol file {path} is malformed: {err!r}") from None


def protocol_for(dataset: str, requested: str | None) -> Protocol:
    """``requested`` (a name) or, when None, the dataset's default protocol; a protocol written for
    another dataset is refused."""
    protocol = load_protocol(requested or DEFAULT_FOR_DATASET.get(dataset, PAPER))
    if protocol.dataset not in (None, dataset):
        raise ConfigError(f"protocol {protocol.name!r} is for dataset {protocol.dataset!r}, not {dataset!r}; "
                          f"valid for {dataset!r}: {PAPER}"
                          + "".join(f", {k}" for k in available() if k != PAPER and load_protocol(k).dataset == dataset))
    return protocol
