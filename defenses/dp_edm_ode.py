"""DP_EDM_ODE: EDM purification with S_churn = 0 (ADDT paper Appendix F, "EDM-ODE"): only the
forward noise is random; the Heun sampler is otherwise ``dp_edm``'s."""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.defense import register_defense
from defenses.dp_edm import DPEDMConfig, EDMPurifier


@dataclass(frozen=True)
class DPEDMODEConfig(DPEDMConfig):
    s_churn: float = 0.0


@register_defense("dp_edm_ode")
class DPEDMODE(EDMPurifier):
    description = "EDM purification with S_churn 0 (EDM-ODE): only the forward noise is random"
    config_cls = DPEDMODEConfig
    fast_options = {"num_steps": "6"}
    toy_options = {"num_steps": 10}  # the toy protocol: 19 network calls instead of 99

    @classmethod
    def default_test_config(cls) -> DPEDMConfig:
        return DPEDMODEConfig(num_steps=4)
