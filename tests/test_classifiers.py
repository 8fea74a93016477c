"""Classifier specs: RobustBench's zoo from its cache layout, local WRN-28-10 files, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.zoo.classifiers import CIFAR_MEAN, CIFAR_STD, load_classifier
from bench.core.errors import ConfigError, MissingAssetError


@pytest.fixture(scope="module")
def wrn() -> nn.Module:
    from bench.zoo.compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    torch.manual_seed(0)
    return WideResNet(depth=28, widen_factor=10).eval()


def test_robustbench_standard_loads_from_its_cache_file_offline(wrn, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(MissingAssetError, match=f"place its checkpoint at {tmp_path}/robustbench/cifar10/Linf/Standard.pt"):
        load_classifier("cifar10")
    path = tmp_path / "robustbench" / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    # RobustBench's released format: {'state_dict': {'module.<name>': tensor}}
    torch.save({"state_dict": {f"module.{k}": v for k, v in wrn.state_dict().items()}}, path)
    model = load_classifier("cifar10")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), wrn(x), atol=1e-5)  # [0, 1] input, no normalisation layer
    assert not any(p.requires_grad for p in model.parameters())


def test_local_wrn_checkpoint_gets_cifar_normalisation(wrn, tmp_path) -> None:
    path = tmp_path / "wrn.pt"
    torch.save({"net": wrn.state_dict()}, path)
    model = load_classifier("cifar10", f"wrn-28-10:{path}")
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), wrn((x - mean) / std), atol=1e-5)


def test_a_pickled_whole_network_is_refused_with_advice(tmp_path) -> None:
    path = tmp_path / "origin.t7"
    torch.save({"net": nn.Linear(2, 2)}, path)  # like origin.t7: a whole pickled module
    with pytest.raises(MissingAssetError, match="re-save it with"):
        load_classifier("cifar10", f"wrn-28-10:{path}")


@pytest.mark.parametrize("dataset, spec, message", [
    ("cifar100", None, "has no default classifier"),
    ("cifar10", "resnet", "is not a classifier spec"),
    ("cifar10", "robustbench:Standart", "Did you mean 'Standard'"),
    ("toy", "robustbench:Standard", "does not fit --dataset toy"),
    ("cifar10", "toy", "only works with --dataset toy"),
])
def test_bad_classifier_specs(dataset, spec, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_classifier(dataset, spec)


@pytest.mark.parametrize("name, folder, label_key, classes", [
    ("cifar10", "cifar-10-batches-py", "labels", 10), ("cifar100", "cifar-100-python", "fine_labels", 100),
])
def test_cifar_test_split_reads_the_original_python_format(name, folder, label_key, classes, monkeypatch, tmp_path) -> None:
    """torchvision's files: a pickled dict with uint8 'data' (N, 3072) in CHW order and labels;
    the MD5 check against the official release is bypassed for this synthetic file only."""
    import pickle

    import numpy as np
    import torchvision

    from bench.zoo.datasets import load_test_split

    root = tmp_path / folder
    root.mkdir()
    data = np.arange(4 * 3072, dtype=np.int64).reshape(4, 3072) % 256
    with open(root / "test", "wb") if name == "cifar100" else open(root / "test_batch", "wb") as handle:
        pickle.dump({"data": data.astype(np.uint8), label_key: [0, 1, 2, classes - 1]}, handle)
    meta_name, meta_key = ("meta", "fine_label_names") if name == "cifar100" else ("batches.meta", "label_names")
    with open(root / meta_name, "wb") as handle:
        pickle.dump({meta_key: [str(i) for i in range(classes)]}, handle)
    cls = torchvision.datasets.CIFAR100 if name == "cifar100" else torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    split = load_test_split(name)
    assert split.images.shape == (4, 3, 32, 32) and split.num_classes == classes
    assert split.labels.tolist() == [0, 1, 2, classes - 1]
    assert split.images[0, 0, 0, 1] == pytest.approx(1 / 255) and split.images[0, 1, 0, 0] == pytest.approx((1024 % 256) / 255)
