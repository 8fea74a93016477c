"""Evaluation datasets: images (N, C, H, W) float32 in [0, 1] and int64 labels.

- ``toy``: scikit-learn's bundled handwritten digits (1,797 real 8x8 grey images, no
  download); samples 0..1196 train the toy models, 1197..1796 (600) are the test split.
- ``cifar10`` / ``cifar100``: the torchvision test sets (10,000 images), downloaded to
  ``$BENCH_DATA_DIR`` (default ``~/.cache/dbp-bench/data``) on first use.
- ``tinyimagenet``: the 10,000 labelled validation images of Tiny-ImageNet-200 (64x64 RGB, 200
  classes), read from the official archive in ``$BENCH_DATA_DIR`` (see :mod:`bench.zoo.tinyimagenet`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import ConfigError, MissingAssetError, UnknownNameError

DATASETS = ("toy", "cifar10", "cifar100", "tinyimagenet")
TOY_TRAIN_SIZE = 1197


@dataclass(frozen=True)
class Split:
    name: str
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR", Path.home() / ".cache" / "dbp-bench" / "data"))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (images (1797, 8, 8) float64 in 0..16, labels (1797,) int64).

    Read straight from the package's ``datasets/data/digits.csv.gz`` (the file
    ``sklearn.datasets.load_digits`` parses: 64 pixel columns then the label) instead of calling
    ``load_digits``: importing scikit-learn costs about a second (scipy, joblib), which every
    ``bench leaderboard build`` paid just to check toy labels. The labels' SHA-256 is pinned in
    :mod:`bench.zoo.labels`, so a different file cannot pass silently."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise MissingAssetError("the toy dataset is scikit-learn's digits: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise MissingAssetError(f"the toy dataset's file {path} is missing from this scikit-learn install; "
                                "reinstall scikit-learn")
    with gzip.open(path, "rt", encoding="ascii") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def load_digits_split(train: bool) -> Split:
    """The toy split: scikit-learn digits scaled from 0..16 to [0, 1], shape (N, 1, 8, 8)."""
    pixels, targets = _digits_arrays()
    images = torch.tensor(pixels, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(targets, dtype=torch.int64)
    part = slice(0, TOY_TRAIN_SIZE) if train else slice(TOY_TRAIN_SIZE, None)
    return Split("toy", images[part].contiguous(), labels[part].contiguous(), 10)


def load_test_split(name: str) -> Split:
    """The test split of dataset ``name`` (one of :data:`DATASETS`)."""
    if name == "toy":
        return load_digits_split(train=False)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name)
    if name == "tinyimagenet":
        from bench.zoo.tinyimagenet import load_split

        return load_split(data_dir(), "val")
    raise UnknownNameError(f"Unknown dataset {name!r}. Valid datasets: {', '.join(DATASETS)}.")


def _load_cifar(name: str, train: bool = False) -> Split:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root = data_dir()
    try:
        # torchvision checks every batch file's MD5 against the official release before reading
        # its pickles, so only the published files are ever unpickled.
        from bench.zoo.hub import offline

        dataset = cls(root=str(root), train=train, download=not offline())
    except Exception as err:  # network errors surface as many types (URLError, OSError, ...)
        raise MissingAssetError(
            f"could not load the {name} test set from {root} ({type(err).__name__}: {err}). "
            f"Download it where the network allows (torchvision.datasets."
            f"{cls.__name__}(root='{root}', train={train}, download=True)) or set BENCH_DATA_DIR "
            "to a folder that holds it."
        ) from err
    images = torch.tensor(dataset.data).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.tensor(dataset.targets, dtype=torch.int64)
    return Split(name, images.contiguous(), labels, 100 if name == "cifar100" else 10)


def load_train_split(name: str) -> Split:
    """The training split of dataset ``name`` (for ADDT fine-tuning)."""
    if name == "toy":
        return load_digits_split(train=True)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, train=True)
    if name == "tinyimagenet":
        from bench.zoo.tinyimagenet import load_split

        return load_split(data_dir(), "train")
    raise UnknownNameError(f"Unknown dataset {name!r}. Valid datasets: {', '.join(DATASETS)}.")


def select_indices(split: Split, n_samples: int | None, start: int = 0) -> list[int]:
    """The first ``n_samples`` test indices from ``start`` (the paper uses the first N)."""
    total = len(split)
    if n_samples is None:
        n_samples = total - start
    if not 0 <= start < total:
        raise ConfigError(f"--start-index {start} is outside the {split.name} test split (valid: 0..{total - 1})")
    if not 1 <= n_samples <= total - start:
        raise ConfigError(
            f"--n-samples {n_samples} from index {start}: the {split.name} test split holds {total} images, "
            f"so from index {start} the valid range is 1..{total - start}"
        )
    return list(range(start, start + n_samples))
