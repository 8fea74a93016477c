"""Tiny-ImageNet-200 (Le & Yang, CS231N 2015): the original archive, checked and cached.

ADDT Table 6 evaluates on it. No maintained library loads this archive with a pinned checksum
(torchvision has no Tiny-ImageNet class), so the reader is written here; it reads the official
zip exactly as published, without extracting it:

    tiny-imagenet-200/wnids.txt                    200 WordNet ids, one per line (not sorted)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG   500 per class, 64x64
    tiny-imagenet-200/val/images/val_<i>.JPEG      10,000, 64x64
    tiny-imagenet-200/val/val_annotations.txt      "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per line

Conventions (the ADDT repository has no Tiny-ImageNet code, so they are ours and recorded here):
labels are the index of the wnid in the *sorted* wnid list (torchvision ImageFolder's and the
Hugging Face copy's order); the evaluation split is ``val`` (the test split has no labels), in
the order of ``val_annotations.txt`` (val_0, val_1, ...), so "the first 1024 images" is
well defined; greyscale JPEGs are converted to RGB.

The archive is verified (size, MD5 and SHA-256 of the official release) before anything in it is
read; the decoded split is cached as a safetensors file keyed by the archive's SHA-256.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.core.errors import ConfigError, MissingAssetError

log = logging.getLogger(__name__)

ROOT = "tiny-imagenet-200"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Archive:
    """A published archive: where it comes from and what it must hash to."""

    url: str
    filename: str
    size: int
    md5: str
    sha256: str


OFFICIAL = Archive(
    url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    filename="tiny-imagenet-200.zip",
    size=248_100_043,
    md5="90528d7ca1a48142e341f4ef8d21d0de",
    sha256="6198c8ae015e2b3e007c7841da39ec069199b9aa3bfa943a462022fe5e43c821",
)


def verify_archive(path: Path, archive: Archive) -> None:
    """Raise :class:`MissingAssetError` unless ``path`` is byte for byte the published archive."""
    from bench.zoo.hub import file_digest

    size = path.stat().st_size
    if size != archive.size:
        raise MissingAssetError(f"{path} has {size} bytes, the published {archive.filename} has {archive.size}: "
                                f"truncated or a different file. Delete it and download {archive.url} again.")
    for algorithm, expected in (("md5", archive.md5), ("sha256", archive.sha256)):
        actual = file_digest(path, algorithm)
        if actual != expected:
            raise MissingAssetError(f"{path} has {algorithm} {actual}, the published {archive.filename} has "
                                    f"{expected}: corrupted or a different file. It was left untouched; delete it "
                                    f"and download {archive.url} again.")


def archive_path(folder: Path, archive: Archive = OFFICIAL) -> Path:
    """The verified archive in ``folder``, downloaded there first when absent and the network is allowed."""
    from bench.zoo.hub import download, offline

    path = folder / archive.filename
    if not path.exists():
        if offline():
            raise MissingAssetError(f"{path} is missing and BENCH_OFFLINE is set: download {archive.url} "
                                    f"({archive.size:,} bytes, sha256 {archive.sha256}) to {path}")
        try:
            download(archive.url, path)
        except OSError as err:
            raise MissingAssetError(f"could not download {archive.url} to {path} ({err}); fetch it where the "
                                    f"network allows and place it there (sha256 {archive.sha256})") from err
    verify_archive(path, archive)
    return path


def _decode(data: bytes) -> torch.Tensor:
    """One JPEG as (3, 64, 64) uint8; greyscale and CMYK files become RGB."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_split(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images (N, 3, 64, 64) uint8, labels (N,) int64, sorted wnids) of ``split`` read from the zip."""
    if split not in SPLITS:
        raise ConfigError(f"Tiny-ImageNet split {split!r} is not one of {', '.join(SPLITS)} (test has no labels)")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        wnids_file = f"{ROOT}/wnids.txt"
        if wnids_file not in names:
            raise MissingAssetError(f"{path} has no {wnids_file}: not the Tiny-ImageNet-200 archive layout")
        wnids = sorted(line.strip() for line in archive.read(wnids_file).decode().splitlines() if line.strip())
        label_of = {wnid: index for index, wnid in enumerate(wnids)}
        if split == "val":
            rows = [line.split("\t") for line in archive.read(f"{ROOT}/val/val_annotations.txt").decode().splitlines()
                    if line.strip()]
            members = [(f"{ROOT}/val/images/{row[0]}", row[1]) for row in rows]
        else:
            members = sorted((name, name.split("/")[2]) for name in names
                             if name.startswith(f"{ROOT}/train/") and name.endswith(".JPEG"))
        unknown = sorted({wnid for _, wnid in members if wnid not in label_of})
        if unknown:
            raise MissingAssetError(f"{path}: wnids {unknown[:5]} are not in wnids.txt")
        images = torch.stack([_decode(archive.read(name)) for name, _ in members])
        labels = torch.tensor([label_of[wnid] for _, wnid in members], dtype=torch.int64)
    return images, labels, wnids


def load_split(folder: Path, split: str = "val", archive: Archive = OFFICIAL):  # -> Split (import cycle)
    """The Tiny-ImageNet ``split`` as a :class:`bench.zoo.datasets.Split` in [0, 1], shape (N, 3, 64, 64).

    Decoding 10,000 JPEGs takes a while, so the decoded split is cached beside the archive as
    ``tiny-imagenet-200-<split>-<sha256[:12]>.safetensors`` (written atomically)."""
    from safetensors.torch import load_file, save_file

    from bench.zoo.datasets import Split

    cache = folder / f"{ROOT}-{split}-{archive.sha256[:12]}.safetensors"
    if cache.exists():
        tensors = load_file(str(cache))
    else:
        images, labels, _ = read_split(archive_path(folder, archive), split)
        tensors = {"images": images.contiguous(), "labels": labels}
        partial = cache.with_name(cache.name + ".part")
        save_file(tensors, str(partial))
        partial.replace(cache)
        log.info("decoded Tiny-ImageNet %s (%d images) to %s", split, len(labels), cache)
    return Split("tinyimagenet", tensors["images"].float() / 255.0, tensors["labels"], 200)
