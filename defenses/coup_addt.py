"""``coup_addt``: ``coup`` with ADDT fine-tuned VP weights (``bench addt train --backbone vp``)."""

from bench.core.defense import addt_variant, register_defense
from defenses.coup import COUP

COUPADDT = register_defense("coup_addt")(addt_variant(COUP, "vp", __name__))
