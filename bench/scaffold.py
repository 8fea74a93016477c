"""``bench new defense NAME --family ddpm|vp|edm``: a one-file defense plug-in to start from.

The generated file subclasses the family's purifier (its network, model files, noise streams,
checkpointing and test instance come with it) and copies the one reverse step a new sampler
changes, with the family's own arithmetic, so it passes the contract tests as generated. Its toy
budgets (``toy_options``) are on the class: nothing outside the file needs an edit.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from bench.core.errors import ConfigError

FAMILIES = ("ddpm", "vp", "edm")

TEMPLATES = Path(__file__).resolve().parent / "scaffolds"  # {family}.py.tmpl, str.format templates
_HOOKS = {"ddpm": ("reverse_step", "DDPM ancestral step with fixed_large variance (Ho et al. 2020)"),
          "vp": ("_step", "reverse VP-SDE Euler–Maruyama step (Song et al. 2021, Eq. 6)"),
          "edm": ("_heun_step", "stochastic Heun step (Karras et al. 2022, Algorithm 2)")}


def defense_source(name: str, family: str) -> str:
    """The plug-in file for defense ``name`` on ``family``'s network."""
    if family not in FAMILIES:
        raise ConfigError(f"--family {family!r} is not one of {', '.join(FAMILIES)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name) or keyword.iskeyword(name):
        raise ConfigError(f"defense name {name!r} must be lower-case letters, digits and underscores, starting "
                          "with a letter (it is a module name and a registry key)")
    cls = "".join(part.capitalize() for part in name.split("_"))
    hook, step_doc = _HOOKS[family]
    template = (TEMPLATES / f"{family}.py.tmpl").read_text(encoding="utf-8")
    return template.format(name=name, family=family, cls=cls, hook=hook, step_doc=step_doc)


def write_defense(name: str, family: str, out: Path | None = None) -> Path:
    """Write ``defenses/NAME.py`` (or ``out``), never over an existing file."""
    from bench.core.defense import DEFENSES

    if name in DEFENSES:
        raise ConfigError(f"a defense named {name!r} is already registered; choose another name")
    source = defense_source(name, family)
    path = out or Path("defenses") / f"{name}.py"
    if path.exists():
        raise ConfigError(f"{path} exists; it was left untouched (choose another name or --out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path
