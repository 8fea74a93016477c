"""DiffPure (Nie et al., ICML 2022): VP-SDE purification with the Score-SDE DDPM++ model.

Forward: x_t = sqrt(ᾱ) x_d + sqrt(1 − ᾱ) ε with DiffPure's discrete ᾱ at index 1000·t* − 1
(β linear 0.1/1000 .. 20/1000). Reverse: the reverse VP-SDE (Song et al. 2021, Eq. 6; paper
Eq. 12) from τ = t* to 1e-5, solved by Euler–Maruyama with dt = 1e-3 (100 steps, as torchsde's
``sdeint(method='euler')`` on DiffPure's grid), drift ½β(τ)x + β(τ)·s(x, τ), diffusion sqrt(β(τ)),
score s = −net(x, 999τ)/std(τ). Brownian increments are the ``reverse`` stream (ΔW = sqrt(Δ)·z).
Gradients are exact backpropagation through the discretised solver (not the adjoint SDE).

With ``corrector = True`` (``diffpure_pc``, its own file) one Langevin corrector step runs before
each predictor step, with its own ``corrector`` stream.

Output: (x̂_d + 1)/2, unclamped by default as in DiffPure (``clamp_output=true`` to clamp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.core.defense import Checkpoint, Defense, DefenseConfig, checkpointed_steps, register_defense, run_step
from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch, StreamSpec
from bench.families.vp import VPSchedule


@dataclass(frozen=True)
class DiffPureConfig(DefenseConfig):
    """t_star 0.1 for ℓ∞ and 0.075 for ℓ2 in the paper (``norm_defaults``: ``--norm l2`` picks 0.075
    unless ``--defense-opt t_star=…`` is given)."""

    t_star: float = 0.1
    dt: float = 1e-3
    eps_end: float = 1e-5
    beta_min: float = 0.1
    beta_max: float = 20.0
    clamp_output: bool = False
    corrector_snr: float = 0.16

    def __post_init__(self) -> None:
        if not 0 < self.t_star <= 1:
            raise ConfigError(f"t_star={self.t_star} must be in (0, 1]")
        if not 0 < self.dt <= self.t_star:
            raise ConfigError(f"dt={self.dt} must be in (0, t_star]")
        if not 0 < self.eps_end < self.t_star:
            raise ConfigError(f"eps_end={self.eps_end} must be in (0, t_star)")

    def grid(self) -> list[float]:
        """τ_0 = t* > τ_1 > ... > τ_N = eps_end, steps of dt (the last one shorter)."""
        n = math.ceil((self.t_star - self.eps_end) / self.dt - 1e-9)
        return [self.t_star - k * self.dt for k in range(n)] + [self.eps_end]

    @property
    def schedule(self) -> VPSchedule:
        return VPSchedule(self.beta_min, self.beta_max)


class DiffPure(Defense):
    description = "DiffPure: VP-SDE t*=0.1, Euler-Maruyama dt 1e-3 (100 steps), exact gradients"
    norm_defaults = {"l2": {"t_star": 0.075}}  # Nie et al. 2022, Sec. 5: t* = 0.075 against ℓ2 attacks
    paper = "Nie et al., Diffusion Models for Adversarial Purification, ICML 2022, arXiv:2205.07460"
    model_files = {"toy": "toy-vp", "cifar10": "scoresde-vp-cifar10-ddpmpp-deep-continuous"}
    fast_options = {"dt": "0.025"}
    toy_options = {"dt": 0.005}  # the toy protocol: t* = 0.1 in 20 Euler-Maruyama steps instead of 100
    license = "DiffPure code: NVIDIA Source Code License (non-commercial); Score-SDE weights: Apache-2.0"
    config_cls = DiffPureConfig
    corrector = False

    def __init__(self, config: DiffPureConfig, score_net: nn.Module) -> None:
        super().__init__(config)
        self.score_net = score_net.eval().requires_grad_(False)  # net(x, 999τ) = −std(τ)·score
        self.schedule = config.schedule

    @property
    def clamps_output(self) -> bool:
        return self.config.clamp_output

    @property
    def forward_scale(self) -> float:
        """sqrt(ᾱ(t*)): the forward diffusion's Jacobian (x_t = sqrt(ᾱ)(2x − 1) + …, output (x̂ + 1)/2)."""
        return self.schedule.discrete_alpha_bar(self.config.t_star) ** 0.5

    def surrogate(self, steps: int) -> DiffPure:
        """The same reverse SDE solved with ``steps`` Euler–Maruyama steps (dt = t*/steps), same network."""
        import dataclasses

        if steps == len(self.config.grid()) - 1:
            return self
        return type(self)(dataclasses.replace(self.config, dt=self.config.t_star / steps), self.score_net)

    def adjoint_purify(self, x: torch.Tensor, noise: NoiseBatch) -> torch.Tensor:
        """The purification as DiffPure ships its gradient: the reverse SDE solved by torchsde's
        ``sdeint_adjoint`` (Euler, this config's dt; the network's parameters not frozen, as
        DiffPure), so that backpropagation solves the continuous adjoint SDE instead of
        differentiating the solver. The Brownian path is the draw's own reverse noise
        (:class:`bench.harness.adjoint.GridBrownian`), so the forward pass is :meth:`purify`'s
        chain exactly and only the gradient differs; per sample, batch-independent."""
        import copy

        from bench.harness.adjoint import GridBrownian, ReverseVPSDE, _register_brownian, _torchsde

        if self.corrector:
            raise ConfigError("DiffPure's adjoint has no corrector steps; gradient=adjoint is for diffpure only")
        torchsde = _torchsde()
        _register_brownian()
        cfg = self.config
        a_bar = self.schedule.discrete_alpha_bar(cfg.t_star)
        s_grid = [1.0 - tau for tau in cfg.grid()]
        shape = tuple(x.shape[1:])
        steps = noise["reverse"].flatten(2)  # (steps, B, D): z_k, one per Euler step
        scale = torch.tensor([math.sqrt(b - a) for a, b in zip(s_grid, s_grid[1:])], dtype=x.dtype, device=x.device)
        bm = GridBrownian(s_grid, steps * scale.view(-1, 1, 1))
        net = self.__dict__.setdefault("_adjoint_net", copy.deepcopy(self.score_net).requires_grad_(True))
        x_t = math.sqrt(a_bar) * (2 * x - 1) + math.sqrt(1 - a_bar) * noise.step("forward", 0)
        # float64 times: torchsde steps t <- t + dt on this tensor; in float32 it drifts off the grid
        times = torch.tensor([s_grid[0], s_grid[-1]], dtype=torch.float64)
        ys = torchsde.sdeint_adjoint(ReverseVPSDE(self, net, shape), x_t.flatten(1), times, method="euler",
                                     dt=cfg.dt, bm=bm)
        out = (ys[-1].view(-1, *shape) + 1) / 2
        return out.clamp(0, 1) if cfg.clamp_output else out

    @property
    def network_calls(self) -> int:
        return (len(self.config.grid()) - 1) * (2 if self.corrector else 1)

    @property
    def nfe(self) -> int:
        return self.network_calls

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        steps = len(self.config.grid()) - 1
        spec = {"forward": StreamSpec(1, tuple(sample_shape)), "reverse": StreamSpec(steps, tuple(sample_shape))}
        if self.corrector:
            spec["corrector"] = StreamSpec(steps, tuple(sample_shape))
        return spec

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        cfg = self.config
        a_bar = self.schedule.discrete_alpha_bar(cfg.t_star)
        sample = math.sqrt(a_bar) * (2 * x - 1) + math.sqrt(1 - a_bar) * noise.step("forward", 0)
        grid = cfg.grid()
        marks = checkpointed_steps(checkpoint, len(grid) - 1)
        for k in range(len(grid) - 1):
            corrector_noise = noise.step("corrector", k) if self.corrector else None
            sample = run_step(self._step, sample, noise.step("reverse", k), corrector_noise, grid[k], grid[k + 1],
                              checkpoint=marks[k])
        out = (sample + 1) / 2
        return out.clamp(0, 1) if cfg.clamp_output else out

    def _step(self, x: torch.Tensor, z: torch.Tensor, z_corrector: torch.Tensor | None, tau: float, tau_next: float) -> torch.Tensor:
        """(Optional Langevin corrector, then) one reverse-SDE Euler–Maruyama step τ → τ_next."""
        vp = self.schedule
        if z_corrector is not None:
            x = vp.langevin_step(x, vp.score(self.score_net, x, tau), z_corrector, tau, self.config.corrector_snr)
        return vp.reverse_sde_step(x, vp.score(self.score_net, x, tau), z, tau, tau_next)

    @classmethod
    def pretrained(cls, dataset: str, config: DiffPureConfig) -> DiffPure:
        from bench.zoo.hub import load_network

        return cls(config, load_network(cls, dataset, config))

    @classmethod
    def for_testing(cls, config: DiffPureConfig | None = None, channels: int = 1, size: int = 8) -> DiffPure:
        from bench.zoo.nets.ncsnpp import NCSNpp, NCSNppConfig

        torch.manual_seed(0)
        net = NCSNpp(NCSNppConfig(image_size=size, channels=channels, nf=8, ch_mult=(1, 2), num_res_blocks=1,
                                  attn_resolutions=(size // 2,), dropout=0.0))
        for p in net.parameters():
            nn.init.normal_(p, std=0.05)
        return cls(config or DiffPureConfig(t_star=0.01, dt=0.004), net)


register_defense("diffpure")(DiffPure)
