"""``bench toy train``: train the toy suite's classifier and denoisers on the digits train split.

Each denoiser is trained with its family's clean loss (:mod:`bench.families`); the weights and a
manifest with their SHA-256 go to ``bench/zoo/toy_assets/`` (or ``--out``), reproducible from the
seed (deterministic algorithms on).
"""

from __future__ import annotations

import copy
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

from bench.core.errors import ConfigError
from bench.families import FAMILIES
from bench.zoo.toy import (
    ASSETS,
    TOY_FILES,
    TOY_MAKERS,
    TOY_MODELS,
    TOY_NCSNPP_CONFIG,
    TOY_SONGUNET_CONFIG,
    TOY_TRAIN_TIMESTEPS,
    TOY_UNET_CONFIG,
    ToyClassifier,
    sha256_file,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyTrainConfig:
    seed: int = 0
    classifier_epochs: int = 40
    classifier_lr: float = 1e-3
    unet_steps: int = 6000
    unet_batch: int = 128
    unet_lr: float = 2e-3
    ema_decay: float = 0.999


AT_EPS, AT_STEP, AT_STEPS = 0.25, 0.0625, 7  # the toy ℓ∞ threat model (ε = 4 grey levels), PGD-7 with ε/4 steps


def _pgd_training_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Madry et al.'s inner maximisation: PGD-7 from a uniform random start in the ℓ∞ ball."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * AT_EPS
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(AT_STEPS):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x + (x_adv.detach() + AT_STEP * grad.sign() - x).clamp(-AT_EPS, AT_EPS)).clamp(0, 1)
    return x_adv.detach()


def train_classifier(cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info,
                     adversarial: bool = False) -> tuple[ToyClassifier, float]:
    """Train the toy CNN on the digits train split; returns (model, clean test accuracy). With
    ``adversarial``, PGD adversarial training (Madry et al. 2018): every batch is replaced by its
    PGD-7 adversarial examples at the toy threat model (ℓ∞ ε = 0.25) before the update."""
    from bench.zoo.datasets import load_digits_split

    train, test = load_digits_split(True), load_digits_split(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = ToyClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.classifier_lr)
    for _ in range(cfg.classifier_epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), 64):
            idx = order[start : start + 64]
            inputs = train.images[idx]
            if adversarial:
                inputs = _pgd_training_examples(model, inputs, train.labels[idx], generator)
            loss = F.cross_entropy(model(inputs), train.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test.images).argmax(1) == test.labels).float().mean().item()
    progress(f"classifier: test accuracy {accuracy:.4f} after {cfg.classifier_epochs} epochs")
    return model, accuracy


def _family(kind: str) -> Any:
    return FAMILIES[kind](TOY_TRAIN_TIMESTEPS) if kind == "ddpm" else FAMILIES[kind]()


def train_denoiser(kind: str, cfg: ToyTrainConfig, progress: Callable[[str], None] = log.info) -> tuple[nn.Module, float]:
    """Train the toy denoiser ``kind`` (ddpm | vp | edm) with its family's clean loss on the digits
    train split (in [-1, 1]); returns (EMA model, mean loss over the last 500 steps)."""
    from bench.zoo.datasets import load_digits_split

    family = _family(kind)
    images = load_digits_split(True).images * 2 - 1
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    model = TOY_MAKERS[kind]()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.unet_steps)
    recent: list[float] = []
    started = time.perf_counter()
    for step in range(cfg.unet_steps):
        idx = torch.randint(0, images.shape[0], (cfg.unet_batch,), generator=generator)
        loss = family.clean_loss(model, images[idx], generator)
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


def _save(model: nn.Module, path: Path, seed: int, kind: str) -> dict[str, Any]:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"seed": str(seed), "kind": kind})
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _manifest_header(manifest: dict[str, Any]) -> None:
    from bench.core.provenance import collect_provenance

    plain = lambda config: {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}  # noqa: E731
    manifest.update({
        "schema_version": 2,
        "description": "toy suite: CNN classifier and DDPM / VP-SDE / EDM denoisers on scikit-learn digits (8x8)",
        "configs": {"ddpm": plain(TOY_UNET_CONFIG), "vp": plain(TOY_NCSNPP_CONFIG), "edm": plain(TOY_SONGUNET_CONFIG)},
        "num_train_timesteps": TOY_TRAIN_TIMESTEPS,
        "provenance": collect_provenance(torch.device("cpu")),
    })
    for stale in ("train_config", "unet_config", "train_seconds"):
        manifest.pop(stale, None)


def train_toy_suite(
    cfg: ToyTrainConfig, out: Path = ASSETS, progress: Callable[[str], None] = log.info,
    only: tuple[str, ...] = TOY_MODELS,
) -> dict[str, Any]:
    """Train the toy models named in ``only`` and write their safetensors into ``out``,
    updating ``manifest.json`` (entries of models not retrained are kept)."""
    unknown = sorted(set(only) - set(TOY_MODELS))
    if unknown:
        raise ConfigError(f"unknown toy model(s) {', '.join(unknown)}; valid: {', '.join(TOY_MODELS)}")
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}, "metrics": {}}
    manifest.setdefault("models", {})
    for kind in only:
        started = time.perf_counter()
        if kind == "classifier-time-robust":
            from bench.training.toy_robust import TimeRobustConfig, train_time_robust_classifier

            model, metrics = train_time_robust_classifier(TimeRobustConfig(seed=cfg.seed), progress)
            name = "toy_time_classifier"
        elif kind == "classifier-diffrep-at":
            from bench.training.toy_robust import DiffRepConfig, train_diffrep_at_classifier

            model, metric = train_diffrep_at_classifier(DiffRepConfig(seed=cfg.seed), progress)
            name, metrics = "toy_classifier_diffrep_at", {"classifier_diffrep_at_test_accuracy": metric}
        elif kind in ("classifier", "classifier-at"):
            adversarial = kind == "classifier-at"
            model, metric = train_classifier(cfg, progress, adversarial=adversarial)
            name = "toy_classifier_at" if adversarial else "toy_classifier"
            metrics = {f"{kind.replace('-', '_')}_test_accuracy": metric}
        else:
            model, metric = train_denoiser(kind, cfg, progress)
            name, metrics = TOY_FILES[kind], {f"{kind}_final_loss": metric}
        path = out / f"{name}.safetensors"
        manifest["files"][path.name] = _save(model, path, cfg.seed, kind)
        manifest["metrics"].update(metrics)
        manifest["models"][kind] = {"file": path.name, "train_seconds": round(time.perf_counter() - started, 1),
                                    "train_config": asdict(cfg)}
    _manifest_header(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
