"""``dp_ddpm_addt``: ``dp_ddpm`` with ADDT fine-tuned weights (``bench addt train --backbone ddpm``)."""

from bench.core.defense import addt_variant, register_defense
from defenses.dp_ddpm import DPDDPM

DPDDPMADDT = register_defense("dp_ddpm_addt")(addt_variant(DPDDPM, "ddpm", __name__))
