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


# -- training -------------------------------------------------------------------------


def train_classifier(cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info) -> tuple[ToyClassifier, float]:
    """Train the toy CNN on the digits train split; returns (model, test accuracy)."""
    from bench.data import load_digits_split

    train, test = load_digits_split(True), load_digits_split(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = ToyClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.classifier_lr)
    for epoch in range(cfg.classifier_epochs):
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


def train_unet(cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info) -> tuple[nn.Module, float]:
    """Train the toy DDPM (epsilon MSE, Ho et al. Eq. 14; linear beta, T=1000); returns
    (EMA model, mean loss over the last 500 steps)."""
    from diffusers import DDPMScheduler

    from bench.data import load_digits_split

    images = load_digits_split(True).images * 2 - 1
    scheduler = DDPMScheduler(num_train_timesteps=TOY_TRAIN_TIMESTEPS)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    model = make_toy_unet()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.unet_steps)
    recent: list[float] = []
    started = time.perf_counter()
    for step in range(cfg.unet_steps):
        idx = torch.randint(0, images.shape[0], (cfg.unet_batch,), generator=generator)
        x0 = images[idx]
        t = torch.randint(0, TOY_TRAIN_TIMESTEPS, (cfg.unet_batch,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        loss = F.mse_loss(model(scheduler.add_noise(x0, eps, t), t).sample, eps)
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
            progress(f"unet: step {step + 1}/{cfg.unet_steps} loss {sum(recent) / len(recent):.4f} "
                     f"({time.perf_counter() - started:.0f}s)")
    return ema.eval(), sum(recent) / len(recent)


def train_toy_suite(cfg: ToyTrainConfig, out: Path = ASSETS, progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Train both toy models and write safetensors plus ``manifest.json`` into ``out``."""
    from safetensors.torch import save_file

    from bench.provenance import collect_provenance

    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    classifier, accuracy = train_classifier(cfg, progress)
    unet, final_loss = train_unet(cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, model in (("toy_classifier", classifier), ("toy_unet", unet)):
        path = out / f"{name}.safetensors"
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path), metadata={"seed": str(cfg.seed)})
        files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "schema_version": 1,
        "description": "toy suite: DDPM UNet2DModel + CNN classifier on scikit-learn digits (8x8)",
        "train_config": asdict(cfg),
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in TOY_UNET_CONFIG.items()},
        "num_train_timesteps": TOY_TRAIN_TIMESTEPS,
        "metrics": {"classifier_test_accuracy": accuracy, "unet_final_loss": final_loss},
        "train_seconds": round(time.perf_counter() - started, 1),
        "files": files,
        "provenance": collect_provenance(torch.device("cpu")),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
