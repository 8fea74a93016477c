"""NCSN++ in its DDPM++ configuration (Song et al. 2021, Score SDE), as used by DiffPure.

Written for this project from the published architecture (yang-song/score_sde_pytorch,
models/ncsnpp.py + layerspp.py, config vp/cifar10_ddpmpp_deep_continuous), restricted to the
options that checkpoint uses: BigGAN residual blocks with naive 2x resampling, no FIR, no
progressive growing, positional time embedding, skip rescaling by 1/sqrt(2), DDPM-style
single-head attention with NIN projections, GroupNorm(min(C/4, 32), eps 1e-6), SiLU.

Module and parameter names and their registration order reproduce the original's
``all_modules`` list, so its state_dict loads by name and its EMA ``shadow_params`` (a list in
``parameters()`` order) load by position. The original's ``sigmas`` buffer is unused with
``scale_by_sigma=False`` and is not kept. Proven by ``tests/test_golden.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class NCSNppConfig:
    """Defaults are DiffPure's CIFAR-10 checkpoint (106,632,579 parameters)."""

    image_size: int = 32
    channels: int = 3
    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 8
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_positions: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): sin half, then cos half, frequencies
    exp(-k ln(max_positions) / (dim/2 - 1))."""
    half = dim // 2
    dtype = timesteps.dtype if timesteps.is_floating_point() else torch.float32
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device) * -(math.log(max_positions) / (half - 1)))
    args = timesteps.to(dtype)[:, None] * freqs.to(dtype)[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class NIN(nn.Module):
    """A 1x1 projection stored as ``W`` (in, out) and ``b`` (out,): y = x W + b per pixel.

    Initialised as score_sde's ``default_init(init_scale)``: uniform variance scaling over the
    fan average, with a scale of 1e-10 instead of 0 for "zero" layers (the attention output), so
    a fresh network passes gradients to every layer. Checkpoints overwrite it."""

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1) -> None:
        super().__init__()
        scale = 1e-10 if init_scale == 0 else init_scale
        bound = math.sqrt(3 * scale / ((in_dim + out_dim) / 2))
        self.W = nn.Parameter(torch.empty(in_dim, out_dim).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None]


class AttnBlockpp(nn.Module):
    """Single-head self-attention over pixels, residual sum scaled by 1/sqrt(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.GroupNorm_0(x)
        q, k, v = (m(normed).reshape(b, c, h * w) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c**-0.5, dim=-1)
        out = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, h, w)
        return (x + self.NIN_3(out)) / SQRT2


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block with optional naive 2x up/down sampling of both paths."""

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int = 512, up: bool = False,
                 down: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = _group_norm(in_ch)
        self.Conv_0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.Dense_0 = nn.Linear(temb_dim, out_ch)
        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.needs_skip_conv = in_ch != out_ch or up or down
        if self.needs_skip_conv:
            self.Conv_2 = nn.Conv2d(in_ch, out_ch, 1)
        self.up, self.down = up, down

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.needs_skip_conv:
            x = self.Conv_2(x)
        return (x + h) / SQRT2


class NCSNpp(nn.Module):
    """``net(x, labels)``: x (B, C, H, W) in [-1, 1], labels (B,) = 999 t for the continuous VP
    SDE; returns the raw output (B, C, H, W) (the score is ``-output / std(t)``)."""

    def __init__(self, config: NCSNppConfig = NCSNppConfig()) -> None:
        super().__init__()
        self.config = config
        nf, levels = config.nf, len(config.ch_mult)
        resolutions = [config.image_size // 2**i for i in range(levels)]
        temb_dim = 4 * nf

        def block(in_ch: int, out_ch: int | None = None, **kw: bool) -> ResnetBlockBigGANpp:
            return ResnetBlockBigGANpp(in_ch, out_ch, temb_dim, dropout=config.dropout, **kw)

        modules: list[nn.Module] = [nn.Linear(nf, temb_dim), nn.Linear(temb_dim, temb_dim), nn.Conv2d(config.channels, nf, 3, padding=1)]
        skip_channels = [nf]
        in_ch = nf
        for level in range(levels):
            for _ in range(config.num_res_blocks):
                out_ch = nf * config.ch_mult[level]
                modules.append(block(in_ch, out_ch))
                in_ch = out_ch
                if resolutions[level] in config.attn_resolutions:
                    modules.append(AttnBlockpp(in_ch))
                skip_channels.append(in_ch)
            if level != levels - 1:
                modules.append(block(in_ch, down=True))
                skip_channels.append(in_ch)
        modules += [block(in_ch), AttnBlockpp(in_ch), block(in_ch)]
        for level in reversed(range(levels)):
            for _ in range(config.num_res_blocks + 1):
                out_ch = nf * config.ch_mult[level]
                modules.append(block(in_ch + skip_channels.pop(), out_ch))
                in_ch = out_ch
            if resolutions[level] in config.attn_resolutions:
                modules.append(AttnBlockpp(in_ch))
            if level != 0:
                modules.append(block(in_ch, up=True))
        modules += [_group_norm(in_ch), nn.Conv2d(in_ch, config.channels, 3, padding=1)]
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg, mods = self.config, iter(self.all_modules)
        temb = next(mods)(timestep_embedding(labels, cfg.nf))
        temb = next(mods)(F.silu(temb))
        hs = [next(mods)(x)]
        levels = len(cfg.ch_mult)
        for level in range(levels):
            for _ in range(cfg.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if h.shape[-1] in cfg.attn_resolutions:
                    h = next(mods)(h)
                hs.append(h)
            if level != levels - 1:
                hs.append(next(mods)(hs[-1], temb))
        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in cfg.attn_resolutions:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h, temb)
        h = F.silu(next(mods)(h))
        return next(mods)(h)


def load_score_sde_checkpoint(model: NCSNpp, checkpoint: dict) -> NCSNpp:
    """Load a score_sde ``checkpoint_*.pth`` dict ({optimizer, model, ema, step}) into
    ``model``: the EMA ``shadow_params`` (the weights DiffPure actually uses), copied by
    position into ``model.parameters()``, with shapes checked."""
    shadow: Sequence[torch.Tensor] = checkpoint["ema"]["shadow_params"]
    params = list(model.parameters())
    if len(shadow) != len(params):
        raise ValueError(f"checkpoint has {len(shadow)} EMA tensors, the NCSN++ model has {len(params)} parameters")
    with torch.no_grad():
        for i, (param, value) in enumerate(zip(params, shadow)):
            if param.shape != value.shape:
                raise ValueError(f"EMA tensor {i} has shape {tuple(value.shape)}, parameter expects {tuple(param.shape)}")
            param.copy_(value)
    return model.eval()
