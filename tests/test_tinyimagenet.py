"""Tiny-ImageNet-200 read from an archive in the original layout, made by the test (the real one is
248 MB and cannot be downloaded here): labels by sorted wnid, validation order from
val_annotations.txt, greyscale to RGB, the checksum refusing a changed byte, the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import MissingAssetError
from bench.zoo import tinyimagenet
from bench.zoo.tinyimagenet import OFFICIAL, Archive, load_split

WNIDS = ["n02124075", "n01443537", "n04067472"]  # the file's order is not sorted, as in the original


def _jpeg(value: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    shape = (64, 64, 3) if mode == "RGB" else (64, 64)
    image = Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def make_archive(path: Path) -> Archive:
    """A 3-class archive: 2 train images per class, 4 validation images (one greyscale)."""
    root = tinyimagenet.ROOT
    val = [("val_0.JPEG", "n04067472", 200, "RGB"), ("val_1.JPEG", "n01443537", 40, "L"),
           ("val_2.JPEG", "n02124075", 120, "RGB"), ("val_3.JPEG", "n01443537", 80, "RGB")]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}/wnids.txt", "\n".join(WNIDS) + "\n")
        archive.writestr(f"{root}/words.txt", "".join(f"{w}\tsomething\n" for w in WNIDS))
        for wnid in WNIDS:
            archive.writestr(f"{root}/train/{wnid}/{wnid}_boxes.txt", f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
            for i in range(2):
                archive.writestr(f"{root}/train/{wnid}/images/{wnid}_{i}.JPEG", _jpeg(10 + i))
        for name, wnid, value, mode in val:
            archive.writestr(f"{root}/val/images/{name}", _jpeg(value, mode))
        archive.writestr(f"{root}/val/val_annotations.txt",
                         "".join(f"{name}\t{wnid}\t0\t32\t44\t62\n" for name, wnid, _, _ in val))
        archive.writestr(f"{root}/test/images/test_0.JPEG", _jpeg(1))
    data = path.read_bytes()
    return dataclasses.replace(OFFICIAL, size=len(data), md5=hashlib.md5(data).hexdigest(),  # noqa: S324 (a published pin)
                               sha256=hashlib.sha256(data).hexdigest())


def test_reads_the_original_layout(tmp_path) -> None:
    archive = make_archive(tmp_path / OFFICIAL.filename)
    split = load_split(tmp_path, "val", archive)
    assert split.images.shape == (4, 3, 64, 64) and split.images.dtype == torch.float32
    assert split.num_classes == 200 and split.name == "tinyimagenet"
    # sorted wnids: n01443537 -> 0, n02124075 -> 1, n04067472 -> 2; val_annotations.txt order kept
    assert split.labels.tolist() == [2, 0, 1, 0]
    assert abs(float(split.images[0].mean()) - 200 / 255) < 0.02
    grey = split.images[1]
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])  # greyscale became RGB
    train = load_split(tmp_path, "train", archive)
    assert train.images.shape == (6, 3, 64, 64) and sorted(train.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    # the decoded split is cached (safetensors, keyed by the archive's SHA-256) and read back identically
    cache = tmp_path / f"tiny-imagenet-200-val-{archive.sha256[:12]}.safetensors"
    assert cache.exists()
    again = load_split(tmp_path, "val", archive)
    assert torch.equal(again.images, split.images) and torch.equal(again.labels, split.labels)


def test_refuses_a_corrupted_or_foreign_archive(tmp_path) -> None:
    path = tmp_path / OFFICIAL.filename
    archive = make_archive(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MissingAssetError, match="md5"):
        load_split(tmp_path, "val", archive)
    assert path.read_bytes() == bytes(data)  # left untouched
    # the official pins refuse anything that is not the published archive
    make_archive(path)
    with pytest.raises(MissingAssetError, match="248100043"):
        load_split(tmp_path, "val")


def test_the_dataset_name_fails_offline_naming_the_archive(tmp_path, monkeypatch) -> None:
    from bench.zoo.datasets import load_test_split

    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(MissingAssetError, match="tiny-imagenet-200.zip"):
        load_test_split("tinyimagenet")


@pytest.mark.parametrize("name", ["ddpm-tinyimagenet", "addt-edm-tinyimagenet", "wrn-28-10-tinyimagenet"])
def test_table6_model_files_say_their_source_is_not_published(name, tmp_path, monkeypatch) -> None:
    from bench.zoo.hub import fetch

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    with pytest.raises(MissingAssetError, match="source not published.*LYMDLUT/ADDT"):
        fetch(name)


def test_table6_is_priced_without_any_file(capsys) -> None:
    from bench.cli.main import main

    assert main(["reproduce", "addt-table6-tinyimagenet", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dp_edm_addt" in out and "GPU" in out
