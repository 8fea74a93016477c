"""Attack sanity reports: ``bench sanity binarization`` results as JSON files under
``results/sanity/<dataset>/<threat>/<defense>__<attack>.json``, read by the site to flag an attack
that is too weak for a defense.

A report says, for one defense and one attack (with its options), on which images the binarized
defense had an adversarial example by construction and whether the attack found it. The pass rate
is over those images, with its Wilson interval; an attack whose pass rate is below
:data:`TOO_WEAK_BELOW` is flagged "too weak for this defense".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.core.metrics import wilson_interval

TOO_WEAK_BELOW = 0.9
SANITY_DIR = "sanity"


class ImageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0)
    constructed: bool
    passed: bool
    boundary_rate: float = Field(ge=0, le=1)
    attack_rate: float = Field(ge=0, le=1)


class SanityReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test: str = Field(pattern=r"^binarization$")
    defense: str
    defense_config: dict[str, Any]
    attack: str
    attack_config: dict[str, Any]
    dataset: str
    threat: str
    setting: str
    eval_draws: int = Field(ge=1)
    seed: int
    git_commit: str | None
    images: list[ImageResult]
    # the head's construction (bench.harness.binarization.Construction); older reports used 24 and 1.0
    inner_points: int = Field(default=24, ge=1)
    inner_radius: float = Field(default=1.0, gt=0.0, le=1.0)

    @property
    def construction(self) -> str:
        """``24 inner points in the full ε-ball`` / ``999 inner points within 0.95 ε``."""
        where = "the full ε-ball" if self.inner_radius == 1.0 else f"{self.inner_radius:g} ε"
        return f"{self.inner_points} inner points within {where}"

    @property
    def pass_rate(self) -> tuple[float, float, float, int]:
        usable = [i for i in self.images if i.constructed]
        rate = sum(i.passed for i in usable) / len(usable) if usable else 0.0
        return (rate, *wilson_interval(rate, len(usable)), len(usable))

    @property
    def inconclusive(self) -> bool:
        """No image had an adversarial example by construction: the test says nothing about the attack."""
        return self.pass_rate[3] == 0

    @property
    def too_weak(self) -> bool:
        return not self.inconclusive and self.pass_rate[0] < TOO_WEAK_BELOW


def load_reports(records_dir: Path) -> list[SanityReport]:
    folder = records_dir / SANITY_DIR
    return [SanityReport.model_validate_json(p.read_text(encoding="utf-8")) for p in sorted(folder.rglob("*.json"))] \
        if folder.is_dir() else []


def write_report(report: SanityReport, root: Path) -> Path:
    import re

    slug = lambda text: re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", text).strip("-")  # noqa: E731
    default = report.inner_points == 24 and report.inner_radius == 1.0
    suffix = "" if default else f"__inner={report.inner_points},radius={report.inner_radius:g}"
    path = root / SANITY_DIR / report.dataset / report.threat / f"{slug(report.defense)}__{slug(report.attack)}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
