"""``dp_ddim_addt``: ``dp_ddim`` with ADDT fine-tuned weights (ADDT paper Sec. 5, Tables 1-2).

Same purification, config and noise streams as ``dp_ddim``; only the denoiser differs: it was
fine-tuned with RBGM + CGPO by ``bench addt train --backbone ddpm`` (see ``bench/addt.py``).
"""

from __future__ import annotations

from typing import Any

from bench.addt_weights import addt_network
from bench.defense import register_defense
from defenses.dp_ddim import DPDDIM


@register_defense("dp_ddim_addt")
class DPDDIMADDT(DPDDIM):
    description = "dp_ddim with ADDT fine-tuned DDPM weights"
    paper = "ADDT paper (Understanding and Enhancing the Robustness of DBP), Sec. 5 (RBGM + CGPO fine-tuning)"
    weights = "cifar10: ADDT fine-tune of google/ddpm-cifar10-32 (local, `bench addt train`); toy: bench/toy_assets/toy_unet_addt"
    license = "as the base model's weights"
    addt = True

    @classmethod
    def pretrained(cls, dataset: str, config: Any) -> DPDDIMADDT:
        return cls(config, addt_network("ddpm", cls.name, dataset))
