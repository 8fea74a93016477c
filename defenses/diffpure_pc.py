"""DiffPure with a predictor-corrector sampler (ADDT paper Appendix H): one Langevin corrector
step (Song et al. 2021, Algorithm 5, snr 0.16) before each Euler–Maruyama predictor step, with its
own ``corrector`` noise stream. The corrector's step size uses per-sample norms (score_sde
averages them over the batch, which would make a sample's purification depend on its batch).
"""

from __future__ import annotations

from bench.core.defense import register_defense
from defenses.diffpure import DiffPure


@register_defense("diffpure_pc")
class DiffPurePC(DiffPure):
    description = "DiffPure + a Langevin corrector per step (ADDT App. H, snr 0.16), 200 NFE"
    corrector = True
