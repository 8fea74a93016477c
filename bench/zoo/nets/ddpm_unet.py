"""Ho et al. DDPM CIFAR-10 UNet as a diffusers ``UNet2DModel``, and the converter from the
pesser/pytorch_diffusion state_dict (``ema_cifar10``, converted from the TF DDPM release).

The architecture is the google/ddpm-cifar10-32 one (ch 128, ch_mult (1,2,2,2), 2 res blocks,
single-head attention at 16x16, GroupNorm eps 1e-6, positional embedding with
``flip_sin_to_cos=False, freq_shift=1``). diffusers has no converter for pesser's names, so
the key mapping is written here; ``tests/test_golden.py`` proves it on the golden vectors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

DDPM_CIFAR10_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    time_embedding_type="positional",
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_num_groups=32,
    norm_eps=1e-6,
    act_fn="silu",
    downsample_padding=0,
    center_input_sample=False,
    attention_head_dim=None,  # one head spanning all channels
    dropout=0.1,  # inactive in eval mode
)
NUM_LEVELS = 4

_RESNET = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2",
           "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def ddpm_cifar10_unet() -> torch.nn.Module:
    """An uninitialised google/ddpm-cifar10-32 ``UNet2DModel`` (35,746,307 parameters)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**DDPM_CIFAR10_UNET_CONFIG)


def _rename(name: str) -> str:
    fixed = {"temb.dense.0": "time_embedding.linear_1", "temb.dense.1": "time_embedding.linear_2",
             "conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
    module, _, param = name.rpartition(".")
    if module in fixed:
        return f"{fixed[module]}.{param}"
    patterns = [
        (r"down\.(\d)\.block\.(\d)\.(\w+)", lambda m: f"down_blocks.{m[1]}.resnets.{m[2]}.{_RESNET[m[3]]}"),
        (r"down\.(\d)\.attn\.(\d)\.(\w+)", lambda m: f"down_blocks.{m[1]}.attentions.{m[2]}.{_ATTENTION[m[3]]}"),
        (r"down\.(\d)\.downsample\.conv", lambda m: f"down_blocks.{m[1]}.downsamplers.0.conv"),
        (r"mid\.block_(\d)\.(\w+)", lambda m: f"mid_block.resnets.{int(m[1]) - 1}.{_RESNET[m[2]]}"),
        (r"mid\.attn_1\.(\w+)", lambda m: f"mid_block.attentions.0.{_ATTENTION[m[1]]}"),
        # pesser's up[i] is resolution level i; diffusers' up_blocks run from the lowest resolution
        (r"up\.(\d)\.block\.(\d)\.(\w+)", lambda m: f"up_blocks.{NUM_LEVELS - 1 - int(m[1])}.resnets.{m[2]}.{_RESNET[m[3]]}"),
        (r"up\.(\d)\.attn\.(\d)\.(\w+)", lambda m: f"up_blocks.{NUM_LEVELS - 1 - int(m[1])}.attentions.{m[2]}.{_ATTENTION[m[3]]}"),
        (r"up\.(\d)\.upsample\.conv", lambda m: f"up_blocks.{NUM_LEVELS - 1 - int(m[1])}.upsamplers.0.conv"),
    ]
    for pattern, target in patterns:
        match = re.fullmatch(pattern, module)
        if match:
            return f"{target(match)}.{param}"
    raise KeyError(f"unexpected key {name!r} in a pytorch_diffusion DDPM state_dict")


def convert_pesser_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorch_diffusion ``Model`` state_dict -> diffusers ``UNet2DModel`` state_dict.

    Attention q/k/v/proj_out are 1x1 convolutions there and linear layers here, so their
    (C, C, 1, 1) weights are squeezed to (C, C).
    """
    converted = {}
    for name, tensor in state.items():
        new = _rename(name)
        if ".attentions." in new and tensor.dim() == 4 and new.endswith("weight"):
            tensor = tensor[:, :, 0, 0]
        converted[new] = tensor
    return converted


def load_pesser_checkpoint(state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """A ``UNet2DModel`` holding the weights of a pytorch_diffusion state_dict (strict)."""
    model = ddpm_cifar10_unet()
    missing, unexpected = model.load_state_dict(convert_pesser_state_dict(state), strict=False)
    if missing or unexpected:
        raise ValueError(f"pesser DDPM checkpoint does not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
