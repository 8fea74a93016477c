"""``diffpure_addt``: ``diffpure`` with ADDT fine-tuned weights (ADDT paper Sec. 5, Tables 1-2).

Same purification, config and noise streams as ``diffpure``; only the denoiser differs: it was
fine-tuned with RBGM + CGPO by ``bench addt train --backbone vp`` (see ``bench/addt.py``).
"""

from __future__ import annotations

from typing import Any

from bench.addt_weights import addt_network
from bench.defense import register_defense
from defenses.diffpure import DiffPure


@register_defense("diffpure_addt")
class DiffPureADDT(DiffPure):
    description = "diffpure with ADDT fine-tuned VP-SDE DDPM++ weights"
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 5 (RBGM + CGPO fine-tuning)"
    weights = "cifar10: ADDT fine-tune of Score-SDE checkpoint_8.pth (local, `bench addt train`); toy: bench/toy_assets/toy_ncsnpp_addt"
    license = "as the base model's weights"
    addt = True

    @classmethod
    def pretrained(cls, dataset: str, config: Any) -> DiffPureADDT:
        return cls(config, addt_network("vp", cls.name, dataset))
