"""``dp_edm_addt``: ``dp_edm`` with ADDT fine-tuned weights (ADDT paper Sec. 5, Tables 1-2).

Same purification, config and noise streams as ``dp_edm``; only the denoiser differs: it was
fine-tuned with RBGM + CGPO by ``bench addt train --backbone edm`` (see ``bench/addt.py``).
"""

from __future__ import annotations

from typing import Any

from bench.addt_weights import addt_network
from bench.defense import register_defense
from defenses.dp_edm import DPEDM


@register_defense("dp_edm_addt")
class DPEDMADDT(DPEDM):
    description = "dp_edm with ADDT fine-tuned EDM weights"
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 5 (RBGM + CGPO fine-tuning)"
    weights = "cifar10: ADDT fine-tune of edm-cifar10-32x32-uncond-vp (local, `bench addt train`); toy: bench/toy_assets/toy_edm_addt"
    license = "as the base model's weights"
    addt = True

    @classmethod
    def pretrained(cls, dataset: str, config: Any) -> DPEDMADDT:
        return cls(config, addt_network("edm", cls.name, dataset))
