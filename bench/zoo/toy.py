"""The toy suite's models: a small CNN and tiny DDPM / VP / EDM denoisers for real 8x8 digits.

They let every defense x attack run end to end on a CPU in minutes, offline. The weights are
produced by ``bench toy train`` / ``bench addt train --toy-assets`` (``bench.training``),
committed under ``bench/zoo/toy_assets/`` as safetensors, registered as model files
(``toy-ddpm``, ``toy-vp``, ...; :mod:`bench.zoo.hub`) and verified against the SHA-256 in the
manifest at load time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.errors import MissingAssetError

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "toy_assets"
TOY_TRAIN_TIMESTEPS = 1000
TOY_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=8,
)


TOY_NCSNPP_CONFIG: dict[str, Any] = dict(
    image_size=8, channels=1, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0
)
TOY_SONGUNET_CONFIG: dict[str, Any] = dict(
    img_resolution=8, channels=1, augment_dim=0, model_channels=8, channel_mult=(1, 2), num_blocks=1,
    attn_resolutions=(4,), dropout=0.0,
)
TOY_MODELS = ("classifier", "classifier-at", "ddpm", "vp", "edm", "classifier-diffrep-at", "classifier-time-robust")
"""What ``bench toy train`` can produce: the CNN, the DDPM UNet2DModel (dp_ddpm, dp_ddim,
gdmp), the continuous-VP NCSN++ (diffpure, diffpure_pc) and the EDM SongUNet (dp_edm); the CNN
adversarially trained (``-at``) and with the diffusion-representation alignment (``-diffrep-at``,
which needs the DDPM); the time-dependent robust classifier that guides ``rcg_purify``."""


class ToyClassifier(nn.Module):
    """A small CNN for (B, 1, 8, 8) digits in [0, 1] -> 10 logits (normalizes internally)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(64 * 4 * 4, 10)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1024) features before the linear head (the binarization test reads them)."""
        return self.features((x - 0.5) / 0.5).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim) (Ho et al.'s / ADM's)."""
    import math

    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ToyTimeClassifier(nn.Module):
    """h_φ(x_t, t): a time-dependent classifier of noisy digits, (B, 1, 8, 8) x_t in [-1, 1] and
    (B,) integer DDPM timesteps -> 10 logits (robust-classifier-guidance paper, Sec. 4.2).

    The toy CNN's convolutions, each followed by a scale-shift of its channels computed from the
    timestep embedding (ADM's "scale-shift norm", the architecture the paper takes from Dhariwal &
    Nichol 2021, at toy size)."""

    EMBED = 64
    CHANNELS = (32, 64, 64)

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1, stride=2),
                                    nn.Conv2d(64, 64, 3, padding=1)])
        self.embed = nn.Sequential(nn.Linear(self.EMBED, 128), nn.SiLU(), nn.Linear(128, 2 * sum(self.CHANNELS)))
        self.head = nn.Linear(64 * 4 * 4, 10)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        film = self.embed(timestep_embedding(t, self.EMBED).to(x_t.dtype))
        h, offset = x_t, 0
        for conv, width in zip(self.convs, self.CHANNELS):
            scale = film[:, offset:offset + width, None, None]
            shift = film[:, offset + width:offset + 2 * width, None, None]
            offset += 2 * width
            h = torch.relu(conv(h) * (1 + scale) + shift)
        return self.head(h.flatten(1))


def make_toy_unet() -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(**TOY_UNET_CONFIG)


def make_toy_ncsnpp() -> nn.Module:
    from bench.zoo.nets.ncsnpp import NCSNpp, NCSNppConfig

    return NCSNpp(NCSNppConfig(**TOY_NCSNPP_CONFIG))


def make_toy_edm() -> nn.Module:
    from bench.zoo.nets.songunet import EDMPrecond, SongUNetConfig

    return EDMPrecond(SongUNetConfig(**TOY_SONGUNET_CONFIG))


TOY_MAKERS = {"ddpm": make_toy_unet, "vp": make_toy_ncsnpp, "edm": make_toy_edm}


# -- hashing and loading ----------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_verified(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` after checking its SHA-256 against ``manifest.json`` beside it."""
    from safetensors.torch import load_file

    manifest_path = path.parent / "manifest.json"
    fix = "Run `bench toy train` to (re)create the toy suite, or restore bench/zoo/toy_assets/ from git."
    if not manifest_path.exists() or not path.exists():
        raise MissingAssetError(f"toy asset {path} or its manifest is missing. {fix}")
    entry = json.loads(manifest_path.read_text())["files"].get(path.name)
    if entry is None:
        raise MissingAssetError(f"{path.name} is not listed in {manifest_path}. {fix}")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise MissingAssetError(f"{path} has SHA-256 {actual}, manifest says {entry['sha256']}: the file is "
                                f"corrupted or stale. {fix}")
    return load_file(str(path))


def _asset(stem: str, where: Path | None) -> Path:
    """``where`` may be a folder of assets (default: the committed one) or the file itself."""
    where = ASSETS if where is None else Path(where)
    return where if where.suffix == ".safetensors" else where / f"{stem}.safetensors"


CLASSIFIER_FILES = {"toy": "toy_classifier", "toy-at": "toy_classifier_at", "toy-diffrep-at": "toy_classifier_diffrep_at"}
"""Asset stem of each toy classifier spec (``--classifier toy | toy-at | toy-diffrep-at``)."""


def load_toy_classifier(where: Path | None = None, adversarial: bool = False, spec: str = "") -> ToyClassifier:
    """The toy CNN (``spec`` one of :data:`CLASSIFIER_FILES`; ``adversarial`` is ``toy-at``, its
    PGD-adversarially-trained twin)."""
    spec = spec or ("toy-at" if adversarial else "toy")
    model = ToyClassifier()
    model.load_state_dict(_load_verified(_asset(CLASSIFIER_FILES[spec], where)))
    return model.eval().requires_grad_(False)


def load_toy_time_classifier(where: Path | None = None) -> ToyTimeClassifier:
    """The time-dependent robust classifier that guides ``rcg_purify`` (model file ``toy-time-robust``)."""
    model = ToyTimeClassifier()
    model.load_state_dict(_load_verified(_asset("toy_time_classifier", where)))
    return model.eval().requires_grad_(False)


TOY_FILES = {"ddpm": "toy_unet", "vp": "toy_ncsnpp", "edm": "toy_edm"}
"""Asset stem of each toy denoiser family; the ADDT fine-tunes add ``_addt``."""
TOY_ADDT_NAMES = {kind: f"{stem}_addt" for kind, stem in TOY_FILES.items()}


def toy_addt_stem(kind: str, fine_tune: str = "rbgm") -> str:
    """Asset stem of a toy fine-tune: ``toy_unet_addt`` (ADDT), ``toy_unet_addt_linf``, ... (the
    names of :data:`bench.training.addt.FINE_TUNES`)."""
    return TOY_ADDT_NAMES[kind] + ("" if fine_tune == "rbgm" else f"_{fine_tune}")


def load_toy_denoiser(kind: str, addt: bool = False, where: Path | None = None, fine_tune: str = "rbgm") -> nn.Module:
    """The toy denoiser of family ``kind`` (ddpm | vp | edm), plain or fine-tuned (``addt``; which
    fine-tune: ``fine_tune``, `bench addt train --dataset toy --fine-tune NAME --toy-assets`)."""
    path = _asset(toy_addt_stem(kind, fine_tune) if addt else TOY_FILES[kind], where)
    if addt and not path.exists():
        raise MissingAssetError(
            f"the toy fine-tune {path} is missing: create it with `bench addt train --backbone {kind} --dataset toy "
            f"--classifier toy{'' if fine_tune == 'rbgm' else ' --fine-tune ' + fine_tune} --toy-assets`"
        )
    model = TOY_MAKERS[kind]()
    model.load_state_dict(_load_verified(path), strict=kind != "edm")  # EDM's resample filters are constants
    return model.eval().requires_grad_(False)


def load_toy_unet(where: Path | None = None) -> nn.Module:
    return load_toy_denoiser("ddpm", where=where)


def tiny_unet(channels: int = 1, size: int = 8) -> nn.Module:
    """A random-weight ``UNet2DModel`` of the toy architecture for tests (seeded, so always the same)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**{**TOY_UNET_CONFIG, "sample_size": size, "in_channels": channels, "out_channels": channels})


def _file_loader(kind: str, addt: bool):  # type: ignore[no-untyped-def]
    def load(path: Path) -> nn.Module:  # a file path: any fine-tune of the family loads the same way
        return load_toy_denoiser(kind, addt, path)

    load.__name__ = f"load_toy_{kind}{'_addt' if addt else ''}"
    load.__doc__ = f"Converter of the model file ``toy-{kind}{'-addt' if addt else ''}`` (a committed safetensors file)."
    return load



load_toy_ddpm, load_toy_ddpm_addt = _file_loader("ddpm", False), _file_loader("ddpm", True)
load_toy_vp, load_toy_vp_addt = _file_loader("vp", False), _file_loader("vp", True)
load_toy_edm, load_toy_edm_addt = _file_loader("edm", False), _file_loader("edm", True)
