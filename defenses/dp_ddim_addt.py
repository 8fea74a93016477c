"""``dp_ddim_addt``: ``dp_ddim`` with ADDT fine-tuned weights (``bench addt train --backbone ddpm``)."""

from bench.core.defense import addt_variant, register_defense
from defenses.dp_ddim import DPDDIM

DPDDIMADDT = register_defense("dp_ddim_addt")(addt_variant(DPDDIM, "ddpm", __name__))
