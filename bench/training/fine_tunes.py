"""The fine-tunes the ADDT paper compares (Tables 1-5, 7, 12, 15), by name, without torch.

``rbgm`` is ADDT itself (RBGM + CGPO); the others are its ablations. ``bench addt train
--fine-tune NAME`` trains one; a defense's ``fine_tune`` option (``dp_ddpm_addt[fine_tune=clean]``)
loads the matching model file (``toy-ddpm-addt-clean``, ``addt-ddpm-cifar10-clean``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FineTune:
    """A named fine-tune: its :class:`bench.training.addt.ADDTConfig` overrides at the paper's
    (CIFAR-10) scale and the tables that report it."""

    name: str
    description: str
    tables: str
    overrides: dict[str, Any] = field(default_factory=dict)


FINE_TUNES: dict[str, FineTune] = {f.name: f for f in (
    FineTune("rbgm", "ADDT (RBGM + CGPO, lambda_unit 0.03)", "Tables 1-4, 6, 9-14"),
    FineTune("linf", "ADDT_linf (5-step l_inf PGD perturbations, App. I)", "Tables 7, 12",
             {"variant": "linf", "lambda_unit": 1.0, "lambda_max": 10.0}),
    FineTune("clean", "vanilla fine-tune on clean data (no perturbation)", "Tables 5, 7", {"variant": "clean"}),
    FineTune("mse", "ADDT guided by the MSE distance instead of the classifier", "Table 5", {"variant": "mse"}),
    FineTune("lambda0.02", "ADDT with lambda_unit 0.02", "Table 15", {"lambda_unit": 0.02}),
    FineTune("lambda0.04", "ADDT with lambda_unit 0.04", "Table 15", {"lambda_unit": 0.04}),
)}
DEFAULT_FINE_TUNE = "rbgm"


def model_file_name(base: str, fine_tune: str) -> str:
    """The model file of ``fine_tune`` given the ADDT file ``base`` (``toy-ddpm-addt``): ADDT's own
    is ``base``, an ablation ``base-NAME``."""
    return base if fine_tune == DEFAULT_FINE_TUNE else f"{base}-{fine_tune}"
