"""The toy suite: a tiny DDPM UNet and a small CNN trained on real 8x8 digits.

It lets every defense x attack run end to end on a CPU in minutes, offline. The weights
are produced by ``bench toy train`` (reproducible from its seed), committed under
``bench/toy_assets/`` as safetensors, and verified against the SHA-256 in its manifest at
load time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import MissingAssetError

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
TOY_MODELS = ("classifier", "ddpm", "vp", "edm")
"""What ``bench toy train`` can produce: the CNN, the DDPM UNet2DModel (dp_ddpm, dp_ddim,
gdmp), the continuous-VP NCSN++ (diffpure, diffpure_pc) and the EDM SongUNet (dp_edm)."""


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.5) / 0.5).flatten(1))


def make_toy_unet() -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(**TOY_UNET_CONFIG)


def make_toy_ncsnpp() -> nn.Module:
    from bench.nets.ncsnpp import NCSNpp, NCSNppConfig

    return NCSNpp(NCSNppConfig(**TOY_NCSNPP_CONFIG))


def make_toy_edm() -> nn.Module:
    from bench.nets.songunet import EDMPrecond, SongUNetConfig

    return EDMPrecond(SongUNetConfig(**TOY_SONGUNET_CONFIG))


@dataclass(frozen=True)
class ToyTrainConfig:
    seed: int = 0
    classifier_epochs: int = 40
    classifier_lr: float = 1e-3
    unet_steps: int = 6000
    unet_batch: int = 128
    unet_lr: float = 2e-3
    ema_decay: float = 0.999


# -- hashing and loading ----------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_verified(name: str, assets: Path = ASSETS) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    manifest_path = assets / "manifest.json"
    path = assets / f"{name}.safetensors"
    fix = "Run `bench toy train` to (re)create the toy suite, or restore bench/toy_assets/ from git."
    if not manifest_path.exists() or not path.exists():
        raise MissingAssetError(f"toy asset {path} or its manifest is missing. {fix}")
    expected = json.loads(manifest_path.read_text())["files"][f"{name}.safetensors"]["sha256"]
    actual = sha256_file(path)
    if actual != expected:
        raise MissingAssetError(f"{path} has SHA-256 {actual}, manifest says {expected}: the file is corrupted or stale. {fix}")
    return load_file(str(path))


def load_toy_classifier(assets: Path = ASSETS) -> ToyClassifier:
    model = ToyClassifier()
    model.load_state_dict(_load_verified("toy_classifier", assets))
    return model.eval().requires_grad_(False)


def load_toy_unet(assets: Path = ASSETS) -> nn.Module:
    model = make_toy_unet()
    model.load_state_dict(_load_verified("toy_unet", assets))
    return model.eval().requires_grad_(False)


def load_toy_ncsnpp(assets: Path = ASSETS) -> nn.Module:
    model = make_toy_ncsnpp()
    model.load_state_dict(_load_verified("toy_ncsnpp", assets))
    return model.eval().requires_grad_(False)


def load_toy_edm(assets: Path = ASSETS) -> nn.Module:
    model = make_toy_edm()
    model.load_state_dict(_load_verified("toy_edm", assets), strict=False)  # resample filters are constants
    return model.eval().requires_grad_(False)


TOY_ADDT_NAMES = {"ddpm": "toy_unet_addt", "vp": "toy_ncsnpp_addt", "edm": "toy_edm_addt"}
_TOY_MAKERS = {"ddpm": make_toy_unet, "vp": make_toy_ncsnpp, "edm": make_toy_edm}


def load_toy_addt(kind: str, assets: Path = ASSETS) -> nn.Module:
    """The toy denoiser ``kind`` (ddpm | vp | edm) after ADDT fine-tuning (`bench addt train
    --dataset toy --toy-assets`)."""
    name = TOY_ADDT_NAMES[kind]
    if not (assets / f"{name}.safetensors").exists():
        raise MissingAssetError(
            f"the ADDT toy model {assets / (name + '.safetensors')} is missing: create it with "
            f"`bench addt train --backbone {kind} --dataset toy --classifier toy --toy-assets`"
        )
    model = _TOY_MAKERS[kind]()
    model.load_state_dict(_load_verified(name, assets), strict=kind != "edm")
    return model.eval().requires_grad_(False)


# -- training -------------------------------------------------------------------------


def train_classifier(cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info) -> tuple[ToyClassifier, float]:
    """Train the toy CNN on the digits train split; returns (model, test accuracy)."""
    from bench.data import load_digits_split

    train, test = load_digits_split(True), load_digits_split(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = ToyClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.classifier_lr)
    for _ in range(cfg.classifier_epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    progress(f"classifier: test accuracy {accuracy:.4f} after {cfg.classifier_epochs} epochs")
    return model, accuracy


def _vp_marginal(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean coefficient and std of the VP-SDE marginal p_0t (Song et al. 2021, Eq. 29)."""
    log_mean = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
    return log_mean.exp(), (1 - (2 * log_mean).exp()).sqrt()


def _ddpm_loss(model: nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Epsilon MSE at a uniform discrete t (Ho et al. Eq. 14)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=TOY_TRAIN_TIMESTEPS)
    t = torch.randint(0, TOY_TRAIN_TIMESTEPS, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    return F.mse_loss(model(scheduler.add_noise(x0, eps, t), t).sample, eps)


def _vp_loss(model: nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Continuous VP denoising score matching as in score_sde (t ~ U(1e-5, 1), label 999 t);
    with score = -net / std this is the epsilon MSE."""
    t = torch.rand(x0.shape[0], generator=generator) * (1 - 1e-5) + 1e-5
    mean, std = _vp_marginal(t)
    eps = torch.randn(x0.shape, generator=generator)
    x_t = mean.view(-1, 1, 1, 1) * x0 + std.view(-1, 1, 1, 1) * eps
    return F.mse_loss(model(x_t, 999 * t), eps)


def _edm_loss(model: nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """EDM loss (Karras et al. 2022, Eq. 2 with Table 1 weighting): ln σ ~ N(-1.2, 1.2²),
    λ(σ) = (σ² + σ_d²) / (σ σ_d)²."""
    sigma = (torch.randn(x0.shape[0], generator=generator) * 1.2 - 1.2).exp().view(-1, 1, 1, 1)
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    noisy = x0 + sigma * torch.randn(x0.shape, generator=generator)
    return (weight * (model(noisy, sigma.flatten()) - x0) ** 2).mean()


DENOISERS: dict[str, tuple[Callable[[], nn.Module], Callable[..., torch.Tensor], str]] = {
    "ddpm": (make_toy_unet, _ddpm_loss, "toy_unet"),
    "vp": (make_toy_ncsnpp, _vp_loss, "toy_ncsnpp"),
    "edm": (make_toy_edm, _edm_loss, "toy_edm"),
}


def train_denoiser(kind: str, cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info) -> tuple[nn.Module, float]:
    """Train the toy denoiser ``kind`` (ddpm | vp | edm) on the digits train split (in [-1, 1]);
    returns (EMA model, mean loss over the last 500 steps)."""
    from bench.data import load_digits_split

    make, loss_fn, _ = DENOISERS[kind]
    images = load_digits_split(True).images * 2 - 1
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    model = make()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.unet_steps)
    recent: list[float] = []
    started = time.perf_counter()
    for step in range(cfg.unet_steps):
        idx = torch.randint(0, images.shape[0], (cfg.unet_batch,), generator=generator)
        loss = loss_fn(model, images[idx], generator)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - cfg.ema_decay)
        recent = (recent + [loss.item()])[-500:]
        if (step + 1) % 1000 == 0:
            progress(f"{kind}: step {step + 1}/{cfg.unet_steps} loss {sum(recent) / len(recent):.4f} "
                     f"({time.perf_counter() - started:.0f}s)")
    return ema.eval(), sum(recent) / len(recent)


def train_unet(cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info) -> tuple[nn.Module, float]:
    """The toy DDPM UNet2DModel (see :func:`train_denoiser`)."""
    return train_denoiser("ddpm", cfg, progress)


def train_toy_suite(
    cfg: ToyTrainConfig, out: Path = ASSETS, progress: Callable[[str], None] = log.info,
    only: tuple[str, ...] = TOY_MODELS,
) -> dict[str, Any]:
    """Train the toy models named in ``only`` and write their safetensors into ``out``,
    updating ``manifest.json`` (entries of models not retrained are kept)."""
    from safetensors.torch import save_file

    from bench.provenance import collect_provenance

    unknown = sorted(set(only) - set(TOY_MODELS))
    if unknown:
        from bench.errors import ConfigError

        raise ConfigError(f"unknown toy model(s) {', '.join(unknown)}; valid: {', '.join(TOY_MODELS)}")
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}, "metrics": {}}
    manifest.setdefault("models", {})
    for kind in only:
        started = time.perf_counter()
        if kind == "classifier":
            model, metric = train_classifier(cfg, progress)
            name, metrics = "toy_classifier", {"classifier_test_accuracy": metric}
        else:
            model, metric = train_denoiser(kind, cfg, progress)
            name, metrics = DENOISERS[kind][2], {f"{kind}_final_loss": metric}
        path = out / f"{name}.safetensors"
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path), metadata={"seed": str(cfg.seed), "kind": kind})
        manifest["files"][path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest["metrics"].update(metrics)
        manifest["models"][kind] = {"file": path.name, "train_seconds": round(time.perf_counter() - started, 1),
                                    "train_config": asdict(cfg)}
    manifest.update({
        "schema_version": 2,
        "description": "toy suite: CNN classifier and DDPM / VP-SDE / EDM denoisers on scikit-learn digits (8x8)",
        "configs": {
            "ddpm": {k: list(v) if isinstance(v, tuple) else v for k, v in TOY_UNET_CONFIG.items()},
            "vp": {k: list(v) if isinstance(v, tuple) else v for k, v in TOY_NCSNPP_CONFIG.items()},
            "edm": {k: list(v) if isinstance(v, tuple) else v for k, v in TOY_SONGUNET_CONFIG.items()},
        },
        "num_train_timesteps": TOY_TRAIN_TIMESTEPS,
        "provenance": collect_provenance(torch.device("cpu")),
    })
    for stale in ("train_config", "unet_config", "train_seconds"):
        manifest.pop(stale, None)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
