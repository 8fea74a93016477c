"""`bench run --dataset cifar10` end to end, offline, with every file in its original format in
the cache (random full-size weights: this proves the wiring, not accuracy)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bench.harness.runner import RunRequest, execute_run, start_run
from bench.harness.store import open_store


@pytest.fixture
def cifar_cache(monkeypatch, tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from bench.zoo.compat import import_robustbench
    from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    torch.manual_seed(0)
    unet_dir = tmp_path / "models" / "ddpm-cifar10-google"
    unet_dir.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ddpm_cifar10_unet().state_dict().items()},
              str(unet_dir / "diffusion_pytorch_model.safetensors"))
    rb = tmp_path / "models" / "robustbench" / "cifar10" / "Linf"
    rb.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in WideResNet(28, 10).state_dict().items()}}, rb / "Standard.pt")
    batches = tmp_path / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(batches / "test_batch", "wb") as handle:
        pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [3, 1, 4, 1]}, handle)
    with open(batches / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, handle)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    return tmp_path


def test_cifar10_run_uses_the_cached_original_files(cifar_cache) -> None:
    engine = open_store(f"sqlite:///{cifar_cache / 'runs.db'}")
    request = RunRequest(defense="dp_ddim", attack="pgd_eot", dataset="cifar10", n_samples=2, eval_draws=1,
                         defense_options={"nfe": 1}, attack_options={"steps": 1, "eot": 1})
    run_id, parts = start_run(engine, request)
    metrics = execute_run(engine, run_id, parts=parts)
    assert parts.model.defense.unet.config.block_out_channels == (128, 256, 256, 256)
    assert metrics["clean"]["n"] == 2 and 0.0 <= metrics["robust"]["expected"]["acc"] <= 1.0
    from sqlalchemy.orm import Session

    from bench.harness.store import get_run

    with Session(engine) as session:
        run = get_run(session, run_id)
        assert (run.classifier, run.dataset, run.sample_indices, run.eps) == ("robustbench:Standard", "cifar10", [0, 1], 8 / 255)
