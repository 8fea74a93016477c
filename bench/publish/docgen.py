"""The documentation's defense and attack pages, generated from the registries (cards, configs and
module docstrings), so they list exactly what is registered. Run by the MkDocs hook
(``docs/hooks.py``) before every docs build."""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from pathlib import Path
from typing import Any


def _doc(obj: Any) -> str:
    module = sys.modules.get(obj.__module__)
    text = inspect.getdoc(module) if module is not None else ""
    return (text or inspect.getdoc(obj) or "").strip()


def _defaults(config_cls: Any) -> str:
    if not dataclasses.is_dataclass(config_cls):
        return ""
    return ", ".join(f"`{f.name}={getattr(config_cls(), f.name)!r}`" for f in dataclasses.fields(config_cls))


def defenses_page() -> str:
    from bench.core.defense import DEFENSES

    lines = ["# Defenses", "",
             "Generated from the registry (`bench ls defenses`, `bench show NAME`). Noise streams are per sample "
             "at the defaults on a 3×32×32 input; toy budgets are the class's `toy_options`.", "",
             "| name | what | NFE | noise streams (tensors) | toy budgets | model files |", "|---|---|---|---|---|---|"]
    for name, cls in DEFENSES.items():
        card = cls.card()
        streams = ", ".join(f"`{k}` ({v['tensors']})" for k, v in card["streams"].items()) or "none"
        files = ", ".join(f"{d}: `{f}`" for d, f in card["model_files"].items()) or "none"
        toy = ", ".join(f"{k}={v}" for k, v in cls.toy_options.items()) or "defaults"
        lines.append(f"| `{name}` | {card['description']} | {card['nfe']} | {streams} | {toy} | {files} |")
    for name, cls in DEFENSES.items():
        lines += ["", f"## `{name}`", "", f"*Paper*: {cls.paper or 'not stated'}. *Options*: {_defaults(cls.config_cls)}.",
                  "", _doc(cls)]
    return "\n".join(lines) + "\n"


def attacks_page() -> str:
    from bench.core.attack import ATTACKS

    lines = ["# Attacks", "", "Generated from the registry (`bench ls attacks`). Every attack honours every "
             "attacker-knowledge setting: it reaches the defense only through the target.", "",
             "| name | what | ranks | flags |", "|---|---|---|---|"]
    for name, cls in ATTACKS.items():
        flags = ", ".join(f for f in ("unreliable", "needs_deterministic_target") if getattr(cls, f, False)) or "–"
        lines.append(f"| `{name}` | {cls.description} | {'yes' if cls.ranks else 'no'} | {flags} |")
    for name, cls in ATTACKS.items():
        lines += ["", f"## `{name}`", "", f"*Options*: {_defaults(cls.config_cls)}.", "", _doc(cls)]
    return "\n".join(lines) + "\n"


def write_reference(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("defenses.md", defenses_page()), ("attacks.md", attacks_page())):
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            partial = path.with_name(f".{name}.{os.getpid()}.tmp")  # atomic: a concurrent reader sees old or new
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
