"""Whether a record was made under its track's protocol, decided from the protocol, not the record.

A ranked record must have been run exactly as its track's protocol says: the attack's full config
(every option, as the runner resolves it from the protocol and the threat model), the evaluation
draws, the seed, the image indices, the defense's budget options and per-draw outcomes to rank
with. Nothing the submitter writes (a device string, a flag) can exempt a record; a record that
differs is listed as "off-protocol: <the differences>" and never ranked. Options of the defense
that the protocol does not set (``votes``, a classifier) define a variant, which is its own entry.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from bench.core.attack import ATTACKS
from bench.core.errors import BenchError
from bench.protocols import Protocol
from bench.publish.records import plain


@functools.lru_cache(maxsize=1024)
def _expected_attack_config(protocol_key: str, dataset: str, attack: str, norm: str, eps: float) -> Mapping[str, Any]:
    """The attack config the runner resolves for this track, as JSON gives it back (tuples as lists),
    read-only and cached: a 10,000-record board asks for the same few combinations again and again.
    It does not depend on the defense."""
    from bench.harness.runner import RunRequest, normalized_request

    request = RunRequest(defense="none", attack=attack, norm=norm, eps=eps, dataset=dataset, protocol=protocol_key,
                         classifier="-")  # the attack config depends on neither
    return MappingProxyType(json.loads(json.dumps(normalized_request(request).attack_config, sort_keys=True, default=list)))


@functools.lru_cache(maxsize=64)
def _attack_defaults(attack: str) -> Mapping[str, Any]:
    """The attack's default config as JSON gives it back, read-only and cached."""
    import dataclasses

    return MappingProxyType(json.loads(json.dumps(dataclasses.asdict(ATTACKS.get(attack).config_cls()), default=list)))


def protocol_differences(record: Any, protocol: Protocol) -> list[str]:
    """What in ``record`` (a :class:`bench.publish.records.Record`) differs from ``protocol``;
    empty when the record may rank."""
    differences = []
    if record.schema_version < 2:
        differences.append("no per-draw outcomes (schema 1): re-run it")
    if record.seed != protocol.seed:
        differences.append(f"seed {record.seed}, not {protocol.seed}")
    if record.eval_draws != protocol.eval_draws:
        differences.append(f"{record.eval_draws} evaluation draws, not {protocol.eval_draws}")
    indices = record.dataset.sample_indices
    if protocol.n_samples is not None and indices != list(range(protocol.n_samples)):
        differences.append(f"{len(indices)} images from index {indices[0] if indices else '-'}, "
                           f"not indices 0–{protocol.n_samples - 1}")
    try:
        budgets = protocol.defense_options(record.defense.name)
    except BenchError:
        budgets = None
        differences.append(f"the protocol sets no budgets for defense {record.defense.name}")
    for key, value in (budgets or {}).items():
        stated = record.defense.config.get(key)
        if plain(stated) != plain(value):
            differences.append(f"defense {key}={stated}, not {value}")
    try:
        expected = _expected_attack_config(protocol.key, record.dataset.name, record.attack.name,
                                           record.threat_model.norm, record.threat_model.eps)
    except BenchError as err:
        return differences + [f"attack config not checkable: {err}"]
    retired = set(ATTACKS.get(record.attack.name).retired_options)
    stated = {k: v for k, v in record.attack.config.items() if k not in retired}
    if stated == expected:  # the usual case; equal values are _same (and NaN, never equal, goes the long way)
        return differences
    defaults = _attack_defaults(record.attack.name)
    for key in sorted(set(expected) | set(stated)):
        if key not in stated:
            if key in defaults and _same(expected[key], defaults[key]):
                continue  # an option added after the record was made, at its default: the same attack
            differences.append(f"attack {key} missing (protocol: {expected[key]})")
        elif key not in expected:
            differences.append(f"attack option {key}={stated[key]} is not one of {record.attack.name}'s")
        elif not _same(stated[key], expected[key]):
            differences.append(f"attack {key}={_show(stated[key])}, not {_show(expected[key])}")
    return differences


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return plain(a) == plain(b)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" if isinstance(value, float) else str(value)
