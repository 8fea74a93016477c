"""EDM's DDPM++ network (``SongUNet``) and its EDM preconditioning (``EDMPrecond``).

Written for this project from the published architecture (NVlabs/edm training/networks.py,
options of train.py for ``--cond=0 --arch=ddpmpp --precond=edm`` on CIFAR-10), restricted to
what that checkpoint uses: positional embedding (endpoint, sin/cos halves swapped), standard
encoder and decoder, resample filter [1, 1] (2x2 average down, nearest up), single-head
attention, skip scale sqrt(1/2), GroupNorm(min(32, C/4), eps 1e-6), no adaptive scale.

Module, parameter and buffer names match the original (``model.enc.32x32_block0.conv0...``,
including the constant ``resample_filter`` buffers), so the ``ema`` network's tensors load by
name. Proven by ``tests/test_golden.py``. EDM is licensed CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SongUNetConfig:
    """Defaults are edm-cifar10-32x32-uncond-vp (55,733,891 parameters)."""

    img_resolution: int = 32
    channels: int = 3
    augment_dim: int = 9
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.13
    sigma_data: float = 0.5


class GroupNorm(nn.GroupNorm):
    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_groups=min(32, channels // 4), num_channels=channels, eps=eps)


class Conv2d(nn.Module):
    """Convolution (``kernel`` 0 = none) preceded by optional 2x resampling with filter [1, 1].

    Initialised as EDM does (``training/networks.py``): Xavier-uniform weights (fans include the
    kernel area) times ``init_weight`` — 1 by default, 1e-5 for the residual/attention/output
    projections ("init_zero": small but not zero, so gradients reach every earlier layer),
    sqrt(0.2) for attention qkv — and zero biases. Checkpoints overwrite all of it."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
                 init_weight: float = 1.0) -> None:
        super().__init__()
        self.up, self.down, self.in_ch = up, down, in_ch
        if kernel:
            weight = torch.empty(out_ch, in_ch, kernel, kernel)
            nn.init.xavier_uniform_(weight)
            self.weight = nn.Parameter(weight * init_weight)
            self.bias = nn.Parameter(torch.zeros(out_ch))
        else:
            self.weight, self.bias = None, None
        if up or down:
            taps = torch.tensor([1.0, 1.0])
            self.register_buffer("resample_filter", (torch.outer(taps, taps) / taps.sum() ** 2)[None, None])
        else:
            self.resample_filter = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up or self.down:
            f = self.resample_filter.to(x.dtype).tile([self.in_ch, 1, 1, 1])
            if self.up:
                x = F.conv_transpose2d(x, f * 4, groups=self.in_ch, stride=2)
            else:
                x = F.conv2d(x, f, groups=self.in_ch, stride=2)
        if self.weight is not None:
            x = F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)
        return x


class UNetBlock(nn.Module):
    """Residual block (+ optional single-head attention), outputs scaled by sqrt(1/2)."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.dropout = in_ch, out_ch, dropout
        self.norm0 = GroupNorm(in_ch)
        self.conv0 = Conv2d(in_ch, out_ch, 3, up=up, down=down)
        self.affine = nn.Linear(emb_ch, out_ch)
        self.norm1 = GroupNorm(out_ch)
        self.conv1 = Conv2d(out_ch, out_ch, 3, init_weight=1e-5)
        self.skip = Conv2d(in_ch, out_ch, 1, up=up, down=down) if (out_ch != in_ch or up or down) else None
        self.attention = attention
        if attention:
            self.norm2 = GroupNorm(out_ch)
            self.qkv = Conv2d(out_ch, out_ch * 3, 1, init_weight=math.sqrt(0.2))
            self.proj = Conv2d(out_ch, out_ch, 1, init_weight=1e-5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(0.5)
        h = self.conv0(F.silu(self.norm0(x)))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = (h + (self.skip(x) if self.skip is not None else x)) * scale
        if self.attention:
            b, c, height, width = h.shape
            # qkv channels are interleaved (c, 3): q = channel 3c, k = 3c+1, v = 3c+2
            q, k, v = self.qkv(self.norm2(h)).reshape(b, c, 3, height * width).unbind(2)
            weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k / math.sqrt(c)), dim=2)
            attended = torch.einsum("nqk,nck->ncq", weights, v).reshape(b, c, height, width)
            h = (self.proj(attended) + h) * scale
        return h


class SongUNet(nn.Module):
    """F(x, c_noise): x (B, C, H, W), c_noise (B,) -> (B, C, H, W)."""

    def __init__(self, cfg: SongUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        noise_ch, emb_ch = cfg.model_channels, cfg.model_channels * cfg.channel_mult_emb

        def block(cin: int, cout: int, **kw: bool) -> UNetBlock:
            return UNetBlock(cin, cout, emb_ch, dropout=cfg.dropout, **kw)

        self.map_augment = nn.Linear(cfg.augment_dim, noise_ch, bias=False) if cfg.augment_dim else None
        self.map_layer0 = nn.Linear(noise_ch, emb_ch)
        self.map_layer1 = nn.Linear(emb_ch, emb_ch)
        self.enc = nn.ModuleDict()
        cout = cfg.channels
        for level, mult in enumerate(cfg.channel_mult):
            res = cfg.img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, cfg.model_channels, 3)
                cout = cfg.model_channels
            else:
                self.enc[f"{res}x{res}_down"] = block(cout, cout, down=True)
            for idx in range(cfg.num_blocks):
                cin, cout = cout, cfg.model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = block(cin, cout, attention=res in cfg.attn_resolutions)
        skips = [cfg.model_channels] + [b.out_channels for name, b in self.enc.items() if isinstance(b, UNetBlock)]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = cfg.img_resolution >> level
            if level == len(cfg.channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(cout, cout, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(cout, cout)
            else:
                self.dec[f"{res}x{res}_up"] = block(cout, cout, up=True)
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), cfg.model_channels * mult
                attention = idx == cfg.num_blocks and res in cfg.attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = block(cin, cout, attention=attention)
            if level == 0:
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, cfg.channels, 3, init_weight=1e-5)

    def embed_noise(self, c_noise: torch.Tensor) -> torch.Tensor:
        """Positional embedding with endpoint: freqs 10000^(-k/(n/2-1)); [sin, cos] halves."""
        half = self.cfg.model_channels // 2
        freqs = (1 / 10000) ** (torch.arange(half, dtype=torch.float32, device=c_noise.device) / (half - 1))
        args = torch.outer(c_noise, freqs.to(c_noise.dtype))
        return torch.cat([args.sin(), args.cos()], dim=1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.map_layer0(self.embed_noise(c_noise)))  # augment labels are never given
        emb = F.silu(self.map_layer1(emb))
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        out = None
        for name, block in self.dec.items():
            if name.endswith("aux_norm"):
                out = block(x)
            elif name.endswith("aux_conv"):
                out = block(F.silu(out))
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return out


class EDMPrecond(nn.Module):
    """EDM denoiser D(x, σ) = c_skip x + c_out F(c_in x, ln(σ)/4) (Karras et al. 2022, Table 1),
    σ_data = 0.5. x (B, C, H, W) in [-1, 1] plus noise of std σ; σ (B,) or scalar."""

    def __init__(self, cfg: SongUNetConfig = SongUNetConfig()) -> None:
        super().__init__()
        self.sigma_data = cfg.sigma_data
        self.model = SongUNet(cfg)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma**2).sqrt()
        c_noise = sigma.log().flatten() / 4
        return c_skip * x + c_out * self.model(c_in * x, c_noise.expand(x.shape[0]))
