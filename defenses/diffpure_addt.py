"""``diffpure_addt``: ``diffpure`` with ADDT fine-tuned weights (``bench addt train --backbone vp``)."""

from bench.core.defense import addt_variant, register_defense
from defenses.diffpure import DiffPure

DiffPureADDT = register_defense("diffpure_addt")(addt_variant(DiffPure, "vp", __name__))
