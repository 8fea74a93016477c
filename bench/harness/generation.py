"""Generation quality of a purifier's diffusion model (ADDT paper Table 7, Sec. 6.5 "RBGM").

The paper compares the FID of the DDPM fine-tuned in different ways (vanilla 3.196, clean
fine-tune 3.500, ADDT 5.190, ADDT_ℓ∞ 13.608). Here:

- :func:`generate` — ancestral DDPM sampling from pure noise over every training timestep with
  diffusers' ``DDPMScheduler`` (the model's own schedule), every sample's noise from its own
  generator seeded by (seed, sample index), so a sample does not depend on the batch;
- :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two feature sets
  (torchmetrics' ``FrechetInceptionDistance`` on precomputed features, so that a bootstrap needs
  no second pass through the network), with a percentile bootstrap interval over the generated
  set (the reference set is fixed);
- :func:`feature_extractor` — the feature space: on CIFAR-10 the FID Inception-v3 pool features
  (model file ``fid-inception-v3``, torch-fidelity's weights; ``pip install -e '.[fid]'``), i.e.
  FID; on the toy suite the toy CNN's penultimate features averaged over space (64 values per
  image), so the number is a *toy Fréchet distance*, never FID, and only comparable with itself.

The Fréchet distance is biased upward at finite n (its plug-in covariance estimates), equally for
every model at the same n; the reference row "real vs real" (held-out test images against the
training images the statistics come from) shows that floor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.core.errors import ConfigError
from bench.core.noise import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrechetResult:
    distance: float
    ci_low: float
    ci_high: float
    n_generated: int
    n_reference: int


def generate(unet: nn.Module, scheduler_config: dict, n: int, shape: tuple[int, ...], seed: int,
             batch_size: int = 500) -> torch.Tensor:
    """(n, *shape) images in [0, 1]: DDPM ancestral sampling over all of the model's training
    timesteps (Ho et al. 2020, Alg. 2), sample i driven by a generator seeded with (seed, i)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    out = []
    for start in range(0, n, batch_size):
        ids = range(start, min(n, start + batch_size))
        generators = [torch.Generator().manual_seed(derive_seed(seed, "generation", i)) for i in ids]
        sample = torch.stack([torch.randn(shape, generator=g) for g in generators])
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = unet(sample, torch.full((len(ids),), int(t), dtype=torch.long)).sample
                sample = scheduler.step(eps, t, sample, generator=generators).prev_sample
        out.append(((sample + 1) / 2).clamp(0, 1))
        log.info("generated %d of %d", min(n, start + batch_size), n)
    return torch.cat(out)


class ToyFeatures(nn.Module):
    """The toy CNN's penultimate features averaged over space: (B, 1, 8, 8) in [0, 1] -> (B, 64)."""

    num_features = 64

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.penultimate(x).view(x.shape[0], 64, -1).mean(dim=2)


def feature_extractor(dataset: str) -> tuple[nn.Module, str]:
    """(the feature network, the name of the distance it gives)."""
    if dataset == "toy":
        from bench.zoo.toy import load_toy_classifier

        return ToyFeatures(load_toy_classifier()).eval(), "toy Fréchet distance (toy CNN features, not FID)"
    if dataset == "cifar10":
        from bench.zoo.hub import load_model

        return load_model("fid-inception-v3"), "FID (Inception-v3 pool features)"
    raise ConfigError(f"no feature space for dataset {dataset!r} (have: toy, cifar10)")


def features(network: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([network(images[i:i + batch_size]).double() for i in range(0, len(images), batch_size)])


def frechet_distance(generated: torch.Tensor, reference: torch.Tensor, resamples: int = 200,
                     seed: int = 0) -> FrechetResult:
    """Fréchet distance between Gaussians fitted to ``generated`` (n, d) and ``reference`` (m, d)
    features, with a 95% percentile bootstrap interval over the generated rows."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(nn.Module):
        num_features = generated.shape[1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    metric = FrechetInceptionDistance(feature=Identity(), reset_real_features=False)
    metric.update(reference, real=True)

    def distance(rows: torch.Tensor) -> float:
        metric.reset()  # keeps the reference statistics (reset_real_features=False)
        metric.update(rows, real=False)
        return float(metric.compute())

    point = distance(generated)
    rng = np.random.default_rng(derive_seed(seed, "frechet-bootstrap"))
    draws = [distance(generated[torch.from_numpy(rng.integers(0, len(generated), len(generated)))])
             for _ in range(resamples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return FrechetResult(point, float(low), float(high), len(generated), len(reference))
