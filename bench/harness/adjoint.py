"""DiffPure's gradient as it ships it — torchsde's stochastic adjoint — against ours, in one process.

The anchor is NVlabs/DiffPure ``runners/diffpure_sde.py``: the reverse VP-SDE in flipped time
s = 1 − τ from 1 − t* to 1 − 1e-5, drift ½β(τ)x + β(τ)·s_θ(x, τ), diffusion sqrt(β(τ)), Itô,
diagonal noise, ``torchsde.sdeint_adjoint(..., method="euler", dt=1e-3)`` with the score network's
parameters not frozen (its default: parameter adjoints are integrated too). Both computations
use the same network, input, forward noise and Brownian path: the increments of one
``torchsde.BrownianInterval`` over our solver's grid are our defense's ``reverse`` noise
(z_k = ΔW_k / sqrt(Δ_k)), and the adjoint replays that interval backwards. Reported: time and
peak memory of one input gradient each (:class:`bench.core.memtrack.PeakMemory`), the forward
outputs' difference, and the adjoint gradient's cosine and sign agreement with ours (ours is the
exact gradient of the discretised solver, verified against plain autograd / finite differences
in the test suite).

torchsde is an optional dependency (``pip install -e '.[perf]'``).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import MissingAssetError
from bench.core.noise import NoiseBatch


def _torchsde() -> Any:
    try:
        import torchsde
    except ImportError:
        raise MissingAssetError("the adjoint comparison needs torchsde: pip install -e '.[perf]'") from None
    return torchsde


class GridBrownian:
    """A Brownian path given by its increments on a time grid: W(t_k) = Σ_{j<k} ΔW_j, linear
    between grid points. It lets torchsde's solvers (and their adjoint) run on *our* noise: with
    ΔW_k = sqrt(Δt_k)·z_k from a draw's reverse stream, Euler–Maruyama on this path is our
    reverse chain step for step. Written by hand because torchsde's Brownian classes generate their
    own randomness and cannot be built from given increments. ``increments``: (steps, B, D)."""

    def __init__(self, times: list[float], increments: torch.Tensor) -> None:
        self._times = torch.tensor(times, dtype=torch.float64)
        zero = torch.zeros_like(increments[:1])
        self._w = torch.cat([zero, increments.cumsum(dim=0)])  # (steps + 1, B, D)
        self._ascending = times[-1] > times[0]

    def _at(self, t: Any) -> torch.Tensor:
        t = float(t)
        times = self._times if self._ascending else self._times.flip(0)
        w = self._w if self._ascending else self._w.flip(0)
        k = int(torch.searchsorted(times, torch.tensor(t, dtype=torch.float64)).clamp(0, len(times) - 1))
        if abs(float(times[k]) - t) < 1e-9 or k == 0:
            return w[k]
        if abs(float(times[k - 1]) - t) < 1e-9:
            return w[k - 1]
        share = (t - float(times[k - 1])) / (float(times[k]) - float(times[k - 1]))
        return w[k - 1] + share * (w[k] - w[k - 1])

    def __call__(self, ta: Any, tb: Any = None, return_U: bool = False, return_A: bool = False) -> torch.Tensor:
        if return_U or return_A:
            raise NotImplementedError("GridBrownian has no Lévy area (levy_area_approximation='none')")
        return self._at(ta) if tb is None else self._at(tb) - self._at(ta)

    def __repr__(self) -> str:
        return f"GridBrownian(steps={len(self._times) - 1}, shape={tuple(self._w.shape[1:])})"

    @property
    def dtype(self) -> torch.dtype:
        return self._w.dtype

    @property
    def device(self) -> torch.device:
        return self._w.device

    @property
    def shape(self) -> torch.Size:
        return self._w.shape[1:]

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def size(self) -> torch.Size:
        return self.shape


def _register_brownian() -> None:
    """torchsde checks ``isinstance(bm, BaseBrownian)``: register GridBrownian as a virtual subclass."""
    from torchsde._brownian.brownian_base import BaseBrownian

    BaseBrownian.register(GridBrownian)


class ReverseVPSDE(nn.Module):
    """DiffPure's ``RevVPSDE`` in flipped time for torchsde: states are flattened (B, C·H·W)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, defense: Any, score_net: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.defense, self.score_net, self.shape = defense, score_net, shape

    def f(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = 1.0 - float(s)
        vp = self.defense.config.schedule
        x = y.view(-1, *self.shape)
        beta = vp.beta(tau)
        return (0.5 * beta * x + beta * vp.score(self.score_net, x, tau)).flatten(1)

    def g(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.full_like(y, math.sqrt(self.defense.config.schedule.beta(1.0 - float(s))))


def shared_noise(defense: Any, batch: int, shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> tuple[NoiseBatch, Any, list[float]]:
    """Forward noise, a BrownianInterval on [1 − t*, 1 − eps_end] and our defense's reverse noise
    taken from that interval's increments over its grid (flipped time)."""
    torchsde = _torchsde()
    cfg = defense.config
    grid = cfg.grid()  # τ: t*, t* − dt, ..., eps_end
    s_grid = [1.0 - tau for tau in grid]
    bm = torchsde.BrownianInterval(t0=s_grid[0], t1=s_grid[-1], size=(batch, math.prod(shape)), dtype=dtype,
                                   entropy=seed, levy_area_approximation="none")
    z = torch.stack([bm(s_grid[k], s_grid[k + 1]).view(batch, *shape) / math.sqrt(s_grid[k + 1] - s_grid[k])
                     for k in range(len(grid) - 1)])
    generator = torch.Generator().manual_seed(seed)
    forward = torch.randn((1, batch, *shape), generator=generator, dtype=dtype)
    return NoiseBatch({"forward": forward, "reverse": z}), bm, s_grid


def fraction_within(peak_at: Any, budget: float, steps: int) -> float:
    """The smallest checkpointed fraction f (a multiple of 1/``steps``) whose measured peak
    ``peak_at(f)`` fits ``budget`` bytes; 1.0 when even that does not. The peak grows linearly with
    the unchecked steps, so two probes (f = 1 and one step fewer) give the slope; the candidate is
    then confirmed by measurement, stepping back towards 1 while it does not fit."""
    top = peak_at(1.0)
    if top > budget or steps < 2:
        return 1.0
    one_less = 1.0 - 1.0 / steps
    per_step = max(peak_at(one_less) - top, 1.0)
    unchecked = min(int((budget - top) // per_step), steps)
    fraction = 1.0 - unchecked / steps
    while fraction < 1.0 and peak_at(fraction) > budget:
        fraction = min(1.0, fraction + max(1, steps // 20) / steps)
    return fraction


def compare_gradients(defense: Any, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                      checkpoint: float | bool | None = None, envelope: float = 3.0) -> dict[str, float]:
    """Time, peak memory and agreement of ours vs the torchsde adjoint for one input gradient.

    Ours checkpoints the fraction ``checkpoint`` of its steps; by default (None) the smallest
    fraction whose measured peak stays within ``envelope`` x the adjoint's peak (the issue's
    memory allowance), found by :func:`fraction_within` and reported as ``ours_fraction``, beside
    the peak with every step checkpointed (``ours_all_checkpointed_peak_bytes``)."""
    from bench.core.memtrack import PeakMemory

    torchsde = _torchsde()
    shape = tuple(x.shape[1:])
    noise, bm, s_grid = shared_noise(defense, x.shape[0], shape, seed, x.dtype)
    a_bar = defense.config.schedule.discrete_alpha_bar(defense.config.t_star)

    def ours(fraction: float | bool) -> tuple[torch.Tensor, torch.Tensor]:
        inp = x.clone().requires_grad_(True)
        out = defense.purify(inp, noise, checkpoint=fraction)
        loss = F.cross_entropy(classifier(out), y, reduction="sum")
        return torch.autograd.grad(loss, inp)[0], out.detach()

    trainable = copy.deepcopy(defense.score_net).requires_grad_(True)  # DiffPure does not freeze its network
    sde = ReverseVPSDE(defense, trainable, shape)

    def adjoint() -> tuple[torch.Tensor, torch.Tensor]:
        inp = x.clone().requires_grad_(True)
        x_t = math.sqrt(a_bar) * (2 * inp - 1) + math.sqrt(1 - a_bar) * noise["forward"][0]
        # times in float64 whatever the state's dtype: torchsde steps t ← t + dt on the ts tensor, and
        # in float32 that sum drifts off our grid by ~1e-7 per step over 100 steps, which moves the
        # Brownian increments it queries away from the ones our reverse noise was built from
        times = torch.tensor([s_grid[0], s_grid[-1]], dtype=torch.float64)
        ys = torchsde.sdeint_adjoint(sde, x_t.flatten(1), times, method="euler", dt=defense.config.dt, bm=bm)
        out = (ys[-1].view(-1, *shape) + 1) / 2  # no clamp, as DiffPure
        loss = F.cross_entropy(classifier(out), y, reduction="sum")
        return torch.autograd.grad(loss, inp)[0], out.detach()

    def peak_of(fn: Any) -> tuple[int, torch.Tensor]:
        with PeakMemory() as tracker:
            _, out = fn()
        return tracker.peak, out

    result: dict[str, float] = {"steps": len(s_grid) - 1}
    adjoint()  # warm-up
    started = time.perf_counter()
    grad_adjoint, _ = adjoint()
    result["adjoint_seconds"] = time.perf_counter() - started
    result["adjoint_peak_bytes"], out_adjoint = peak_of(adjoint)

    peaks: dict[float, int] = {}

    def ours_peak(fraction: float) -> int:
        if fraction not in peaks:
            peaks[fraction] = peak_of(lambda: ours(fraction))[0]
        return peaks[fraction]

    if checkpoint is None:
        fraction = fraction_within(ours_peak, envelope * result["adjoint_peak_bytes"], result["steps"])
    else:
        fraction = float(checkpoint)
    result["ours_fraction"] = fraction
    result["ours_all_checkpointed_peak_bytes"] = ours_peak(1.0)
    ours(fraction)  # warm-up
    started = time.perf_counter()
    grad_ours, _ = ours(fraction)
    result["ours_seconds"] = time.perf_counter() - started
    result["ours_peak_bytes"], out_ours = peak_of(lambda: ours(fraction))

    a, b = grad_adjoint.flatten(), grad_ours.flatten()
    result["cosine"] = float(F.cosine_similarity(a, b, dim=0))
    result["sign_agreement"] = float((a.sign() == b.sign()).double().mean())
    result["output_max_abs_diff"] = float((out_adjoint - out_ours).abs().max())
    result["time_ratio"] = result["ours_seconds"] / result["adjoint_seconds"]
    result["memory_ratio"] = result["ours_peak_bytes"] / max(result["adjoint_peak_bytes"], 1)
    return result


def anchor_models(name: str, dt: float) -> tuple[Any, nn.Module, tuple[int, ...]]:
    """(DiffPure defense at t* = 0.1 and ``dt``, classifier, sample shape): ``toy`` (committed toy
    NCSN++ and classifier) or ``cifar10`` (DiffPure's NCSN++ DDPM++ deep and a WRN-28-10, random weights)."""
    from bench.core.defense import DEFENSES

    diffpure = DEFENSES.get("diffpure")
    config = diffpure.config_cls(dt=dt)
    if name == "toy":
        from bench.zoo.toy import load_toy_classifier, load_toy_denoiser

        return diffpure(config, load_toy_denoiser("vp")), load_toy_classifier(), (1, 8, 8)
    from bench.zoo.compat import import_robustbench
    from bench.zoo.nets.ncsnpp import NCSNpp, NCSNppConfig

    torch.manual_seed(0)
    net = NCSNpp(NCSNppConfig(dropout=0.0)).eval().requires_grad_(False)
    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return diffpure(config, net), WideResNet(28, 10).eval().requires_grad_(False), (3, 32, 32)


# issue 19's allowance: ours may use up to this multiple of the adjoint's peak memory
ENVELOPE = 3.0


def run_adjoint_comparison(models: list[str], batch: int, dts: float | list[float]) -> str:
    """One row per model x solver step ``dt``: several ``dt`` show whether the continuous adjoint's
    gradient approaches the exact one of the discretised solver as dt -> 0."""
    dts = [dts] if isinstance(dts, (int, float)) else list(dts)
    lines = [f"(g) ours (exact; the fewest checkpointed steps whose peak stays within {ENVELOPE:g}x the adjoint's) vs "
             "DiffPure's torchsde adjoint (sdeint_adjoint, euler, t* 0.1, parameter adjoints on as shipped; DiffPure's "
             "dt is 1e-3), same network, input, forward noise and Brownian path", "",
             "| model | batch | dt | steps | time ours / adjoint | peak memory ours / adjoint | ours checkpointed | "
             "ours all checkpointed, peak | cosine (adjoint, ours) | sign agreement | forward max abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in models:
        for dt in dts:
            defense, classifier, shape = anchor_models(name, dt)
            torch.manual_seed(1)
            x = torch.rand(batch, *shape)
            y = torch.arange(batch) % 10
            r = compare_gradients(defense.eval(), classifier, x, y, envelope=ENVELOPE)
            lines.append(f"| {name} | {batch} | {dt:g} | {r['steps']} | {r['time_ratio']:.3f} ({r['ours_seconds']:.2f} / "
                         f"{r['adjoint_seconds']:.2f} s) | {r['memory_ratio']:.3f} ({r['ours_peak_bytes'] / 2**20:.1f} / "
                         f"{r['adjoint_peak_bytes'] / 2**20:.1f} MiB) | {r['ours_fraction']:.2f} | "
                         f"{r['ours_all_checkpointed_peak_bytes'] / 2**20:.1f} MiB | {r['cosine']:.4f} | {r['sign_agreement']:.3f} | "
                         f"{r['output_max_abs_diff']:.2e} |")
    return "\n".join(lines)
