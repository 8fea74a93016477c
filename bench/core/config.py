"""Frozen-dataclass configs for plug-ins, built from defaults plus ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from bench.core.errors import ConfigError

C = TypeVar("C")


def _coerce(owner: str, name: str, annotation: Any, value: Any) -> Any:
    """Convert a CLI string to the field's annotated type (int, float, bool, str, Literal, or a
    tuple of str given comma-separated); stored JSON lists become tuples again."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value)
    if not isinstance(value, str):
        return value
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{owner}.{name}={value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            return annotation(value)
    except ValueError:
        raise ConfigError(f"{owner}.{name}={value!r} is not a valid {annotation.__name__}") from None
    return value


@functools.lru_cache(maxsize=None)
def _fields(config_cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """Type hints and field names of a config dataclass (resolved once: ``get_type_hints`` was
    most of a 10,000-record site build's time spent labelling attacks)."""
    return typing.get_type_hints(config_cls), frozenset(f.name for f in dataclasses.fields(config_cls))


def build_config(config_cls: type[C], overrides: Mapping[str, Any] | None = None) -> C:
    """``config_cls(**overrides)`` with string values coerced and unknown keys rejected."""
    overrides = dict(overrides or {})
    hints, fields = _fields(config_cls)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"{config_cls.__name__} has no option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(fields))}"
        )
    values = {k: _coerce(config_cls.__name__, k, hints[k], v) for k, v in overrides.items()}
    try:
        return config_cls(**values)
    except TypeError as err:  # pragma: no cover - defensive
        raise ConfigError(f"{config_cls.__name__}: {err}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def canonical_config(config: Mapping[str, Any], config_cls: type[Any]) -> str:
    """``config`` as canonical JSON with the fields its class gained since it was stored filled at
    their defaults (a run stored before an option existed ran at that option's default); a field
    the class no longer has keeps the stored form (it then equals nothing built today)."""
    import json

    try:
        value: Any = config_to_dict(build_config(config_cls, dict(config)))
    except (ConfigError, TypeError, ValueError):
        value = dict(config)
    return json.dumps(value, sort_keys=True, default=list)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Parse ``["nfe=10", "t_star=100"]`` into a dict; malformed items raise ConfigError."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"option {item!r} must look like key=value")
        result[key.strip()] = value.strip()
    return result


def split_entry(text: str) -> tuple[str, dict[str, str]]:
    """``"dp_ddpm[votes=10,nfe=10]"`` -> ``("dp_ddpm", {"votes": "10", "nfe": "10"})``: a plug-in
    name with options in the leaderboard's entry syntax (a bare name has none)."""
    name, bracket, rest = text.partition("[")
    if not bracket:
        return text, {}
    if not rest.endswith("]") or not name:
        raise ConfigError(f"{text!r} must look like NAME or NAME[key=value,...]")
    return name, parse_overrides([item for item in rest[:-1].split(",") if item.strip()])
