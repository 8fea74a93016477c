"""``dp_edm_addt``: ``dp_edm`` with ADDT fine-tuned weights (``bench addt train --backbone edm``)."""

from bench.core.defense import addt_variant, register_defense
from defenses.dp_edm import DPEDM

DPEDMADDT = register_defense("dp_edm_addt")(addt_variant(DPEDM, "edm", __name__))
