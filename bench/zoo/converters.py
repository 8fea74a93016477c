"""Converters from the original checkpoint files to our torch modules (one per model file).

Each takes the path of a file in its original format (see ``bench.zoo.hub.MODEL_FILES``) and
returns the network in eval mode with frozen weights. Nothing is unpickled unsafely:
``torch.load(weights_only=True)``, safetensors, or the restricted EDM unpickler.
A file whose tensors do not match the architecture raises :class:`MissingAssetError`
naming the first missing/unexpected/mis-shaped tensors.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bench.core.errors import MissingAssetError


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise MissingAssetError(
            f"{path} could not be read as a tensor-only torch file ({str(err).splitlines()[0]}); it is "
            "corrupted or not the expected checkpoint"
        ) from None


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path,
                exempt_missing: tuple[str, ...] = ()) -> nn.Module:
    """``model.load_state_dict(state)`` with every name and shape checked, as one clear error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(exempt_missing)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise MissingAssetError(
            f"{path} does not match {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatches {shapes[:3]} ({len(missing)}/{len(unexpected)}/{len(shapes)} in total)"
        )
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
    return model.eval().requires_grad_(False)


def load_google_ddpm(path: Path) -> nn.Module:
    """google/ddpm-cifar10-32 ``diffusion_pytorch_model.safetensors`` -> ``UNet2DModel``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise MissingAssetError(f"{path} is not a readable safetensors file ({err})") from None
    return load_strict(ddpm_cifar10_unet(), state, path)


def load_pesser_ddpm(path: Path) -> nn.Module:
    """pesser/pytorch_diffusion ``ema_cifar10`` state_dict -> ``UNet2DModel`` (GDMP's DDPM)."""
    from bench.zoo.nets.ddpm_unet import convert_pesser_state_dict, ddpm_cifar10_unet

    state = _torch_load(path)
    if not isinstance(state, Mapping):
        raise MissingAssetError(f"{path} holds a {type(state).__name__}, not a pytorch_diffusion state_dict")
    try:
        converted = convert_pesser_state_dict(state)
    except KeyError as err:
        raise MissingAssetError(f"{path} is not a pytorch_diffusion DDPM state_dict: {err}") from None
    return load_strict(ddpm_cifar10_unet(), converted, path)


def load_score_sde(path: Path) -> nn.Module:
    """score_sde ``checkpoint_8.pth`` -> :class:`NCSNpp` with the EMA weights (DiffPure)."""
    from bench.zoo.nets.ncsnpp import NCSNpp, load_score_sde_checkpoint

    checkpoint = _torch_load(path)
    if not (isinstance(checkpoint, Mapping) and "shadow_params" in checkpoint.get("ema", {})):
        raise MissingAssetError(f"{path} is not a score_sde checkpoint (no ema.shadow_params)")
    try:
        model = load_score_sde_checkpoint(NCSNpp(), checkpoint)
    except ValueError as err:
        raise MissingAssetError(f"{path} does not match NCSN++ DDPM++ deep continuous: {err}") from None
    return model.requires_grad_(False)


def load_edm(path: Path) -> nn.Module:
    """EDM ``edm-cifar10-32x32-uncond-vp.pkl`` -> :class:`EDMPrecond`, from the pickle's ``ema``
    network, read by the restricted unpickler (the pickle's embedded code is never run)."""
    from bench.zoo.nets.safe_pickle import load_edm_network_tensors
    from bench.zoo.nets.songunet import EDMPrecond

    tensors = load_edm_network_tensors(path)
    return load_strict(EDMPrecond(), tensors, path, exempt_missing=("resample_filter",))


def _load_our_safetensors(path: Path, model: nn.Module, exempt: tuple[str, ...] = ()) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise MissingAssetError(f"{path} is not a readable safetensors file ({err})") from None
    return load_strict(model, state, path, exempt_missing=exempt)


def load_addt_ddpm(path: Path) -> nn.Module:
    """ADDT fine-tuned google/ddpm-cifar10-32 (``bench addt train`` output) -> ``UNet2DModel``."""
    from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

    return _load_our_safetensors(path, ddpm_cifar10_unet())


def load_addt_vp(path: Path) -> nn.Module:
    """ADDT fine-tuned Score-SDE DDPM++ -> :class:`NCSNpp`."""
    from bench.zoo.nets.ncsnpp import NCSNpp

    return _load_our_safetensors(path, NCSNpp())


def load_addt_edm(path: Path) -> nn.Module:
    """ADDT fine-tuned EDM -> :class:`EDMPrecond`."""
    from bench.zoo.nets.songunet import EDMPrecond

    return _load_our_safetensors(path, EDMPrecond(), exempt=("resample_filter",))


class FIDFeatures(torch.nn.Module):
    """FID's Inception-v3 pool features: (B, 3, H, W) in [0, 1] -> (B, 2048) (images quantized to
    uint8 and resized by the network, as torch-fidelity / torchmetrics do for FID)."""

    num_features = 2048

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x * 255).round().clamp(0, 255).to(torch.uint8)).reshape(x.shape[0], -1)


def load_fid_inception(path: Path) -> FIDFeatures:
    """The FID Inception-v3 (model file ``fid-inception-v3``) via torchmetrics' ``NoTrainInceptionV3``
    (torch-fidelity's port; ``pip install -e '.[fid]'``). torch-fidelity unpickles its weights file
    with ``weights_only=False``; so the downloaded file is read here with ``weights_only=True`` and
    only a copy re-written from those tensors reaches it."""
    import tempfile

    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except (ImportError, ModuleNotFoundError) as err:
        raise MissingAssetError(f"FID's Inception-v3 needs torch-fidelity: pip install -e '.[fid]' ({err})") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MissingAssetError(f"{path} is not a state_dict of tensors (the format of {path.name})")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "inception.pt"
        torch.save(state, copy)
        try:
            network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                         feature_extractor_weights_path=str(copy))
        except ModuleNotFoundError as err:
            raise MissingAssetError(f"FID's Inception-v3 needs torch-fidelity: pip install -e '.[fid]' ({err})") from None
    return FIDFeatures(network.eval().requires_grad_(False))
