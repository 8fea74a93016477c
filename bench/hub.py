"""Model files: a checksummed registry, a local cache and a resumable HTTP download.

Written by hand for non-hub sources (NVIDIA CDN, heibox, plain URLs): a resumable download with
an HTTP Range request and checksum verification is a few dozen lines and needs no extra
dependency. Hugging Face hub models go through ``huggingface_hub`` (see ``fetch``).

Files live in ``$BENCH_CACHE`` (default ``~/.cache/dbp-bench/models``). With ``BENCH_OFFLINE=1``
nothing is downloaded and a missing file raises an error naming the exact path to place it at.
A file already in the cache whose checksum does not match is never deleted (it may be the
user's); the error says so. Partial downloads go to ``<name>.part`` and are resumed.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.errors import MissingAssetError
from bench.registry import Registry

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One downloadable file. ``sha256`` / ``md5`` pin its content when known."""

    name: str
    filename: str
    urls: tuple[str, ...]
    description: str
    license: str
    original_format: str
    sha256: str | None = None
    md5: str | None = None


MODEL_FILES: Registry[ModelFile] = Registry("model file")
for _entry in (
    ModelFile(
        name="ddpm-cifar10-pesser-ema",
        filename="pesser_ema_cifar10.ckpt",
        urls=("https://heibox.uni-heidelberg.de/f/2e4f01e2d9ee49bab1d5/?dl=1",),
        description="Ho et al. DDPM CIFAR-10, EMA, 790k steps (pesser/pytorch_diffusion ema_cifar10), used by GDMP",
        license="converted from the DDPM TensorFlow release",
        original_format="torch state_dict (pytorch_diffusion Model names)",
        md5="1fa350b952534ae442b1d5235cce5cd3",
    ),
    ModelFile(
        name="edm-cifar10-uncond-vp",
        filename="edm-cifar10-32x32-uncond-vp.pkl",
        urls=("https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl",),
        description="EDM CIFAR-10 unconditional VP (EDMPrecond + SongUNet DDPM++), used by dp_edm",
        license="CC BY-NC-SA 4.0",
        original_format="pickle dict(ema, loss_fn, augment_pipe, dataset_kwargs) with embedded class code",
    ),
):
    MODEL_FILES.register(_entry.name)(_entry)


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "dbp-bench" / "models"))


def offline() -> bool:
    return os.environ.get("BENCH_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, entry: ModelFile) -> None:
    """Raise if ``path`` does not match the entry's pinned checksum(s)."""
    for algorithm, expected in (("sha256", entry.sha256), ("md5", entry.md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise MissingAssetError(
                    f"{path} has {algorithm} {actual} but {entry.name} must have {expected}: the file is "
                    "corrupted, truncated or a different model. It was left untouched; delete or replace it "
                    f"and run `bench fetch {entry.name}` again."
                )


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a previous partial download with
    an HTTP Range request (restarting if the server ignores it), then rename atomically."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (registry URLs only)
        resumed = bool(offset) and response.status == 206
        length = response.headers.get("Content-Length")
        written = 0
        with open(part, "ab" if resumed else "wb") as handle:
            for block in iter(lambda: response.read(CHUNK), b""):
                handle.write(block)
                written += len(block)
    if length is not None and written != int(length):
        raise OSError(f"download of {url} stopped after {written} of {length} bytes; it will resume from {part}")
    part.replace(dest)


def fetch(name: str) -> Path:
    """The verified local path of model file ``name``, downloading it first if needed."""
    entry = MODEL_FILES.get(name)
    dest = cache_dir() / entry.filename
    if dest.exists():
        verify(dest, entry)
        return dest
    if offline():
        raise MissingAssetError(
            f"{entry.name} is not in the cache and BENCH_OFFLINE is set: download {entry.urls[0]} "
            f"elsewhere and place it at {dest}"
        )
    errors = []
    for url in entry.urls:
        try:
            log.info("downloading %s from %s", entry.name, url)
            download(url, dest)
            break
        except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
            errors.append(f"{url}: {err}")
    else:
        raise MissingAssetError(
            f"could not download {entry.name} ({'; '.join(errors)}). A partial file, if any, is kept at "
            f"{dest}.part and will be resumed; or place the file at {dest} yourself."
        )
    try:
        verify(dest, entry)
    except MissingAssetError:
        dest.replace(dest.with_name(dest.name + ".rejected"))  # our own download: set aside, never used
        raise
    return dest
