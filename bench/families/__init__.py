"""The diffusion families (DDPM/DDIM, VP-SDE, EDM): each family's maths, written once.

Schedules, marginals x_t = a·x0 + s·n, one-step x0 prediction, the reverse-step maths and the
clean training loss live here and are used by the defenses (purification), the toy training and
ADDT fine-tuning alike. :data:`FAMILIES` maps a family name to its :class:`Family`.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.families.base import Family
from bench.families.ddpm import DDPMFamily
from bench.families.edm import EDMFamily
from bench.families.vp import VPFamily

FAMILIES: dict[str, Callable[[], Family]] = {"ddpm": DDPMFamily, "vp": VPFamily, "edm": EDMFamily}

__all__ = ["FAMILIES", "Family", "DDPMFamily", "VPFamily", "EDMFamily"]
