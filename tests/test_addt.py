"""ADDT: RBGM, the λ schedule, CGPO, one training step, and exact resume."""

from __future__ import annotations

import pytest
import torch

from bench.families import FAMILIES, DDPMFamily, EDMFamily
from bench.training.addt import ADDTConfig, addt_loss, cgpo, lambda_schedule, lambdas, rbgm, train
from bench.core.errors import ConfigError


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rbgm_is_a_rank_matched_permutation_of_a_gaussian_sample(dtype) -> None:
    delta = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    out = rbgm(delta, torch.Generator().manual_seed(7))
    sample = torch.randn(6, 25, generator=torch.Generator().manual_seed(7)).to(dtype)
    assert out.shape == delta.shape and out.dtype == dtype and out.device == delta.device
    flat_out, flat_delta = out.reshape(6, 25), delta.reshape(6, 25)
    assert torch.equal(flat_out.sort(dim=1).values, sample.sort(dim=1).values)  # exactly the sample's values
    assert torch.equal(flat_out.argsort(dim=1), flat_delta.argsort(dim=1))  # same ranks, per (image, channel)


def test_lambda_schedule_values() -> None:
    gamma = torch.tensor([1000.0, 10.0, 1.0, 0.01])
    assert lambda_schedule(gamma, 0.03, 0.0, 0.3).tolist() == pytest.approx([0.3, 0.3, 0.03, 0.0003])
    backbone = DDPMFamily()
    lam = lambdas(backbone, torch.tensor([0, 500, 999]), ADDTConfig())
    abar = backbone.alphas_cumprod[[0, 500, 999]]
    expected = (0.03 * abar.sqrt() / (1 - abar).sqrt()).clamp(0, 0.3)
    assert lam.tolist() == pytest.approx(expected.tolist()) and lam[0] == pytest.approx(0.3)
    assert lambdas(EDMFamily(), torch.tensor([0.05, 1.0]), ADDTConfig()).tolist() == pytest.approx([0.3, 0.03])
    linf = ADDTConfig.linf()
    assert (linf.lambda_unit, linf.lambda_max) == (1.0, 10.0)
    with pytest.raises(ConfigError, match="sqrt"):
        ADDTConfig(lambda_max=2.0)


@pytest.fixture(scope="module")
def toy_batch():
    from bench.zoo.datasets import load_digits_split
    from bench.zoo.toy import load_toy_classifier, load_toy_unet

    split = load_digits_split(True)
    return load_toy_unet(), load_toy_classifier(), split.images[:32] * 2 - 1, split.labels[:32]


def test_cgpo_increases_the_classifier_loss(toy_batch) -> None:
    unet, classifier, x0, y = toy_batch
    trace: list[float] = []
    level = torch.full((32,), 60)
    cgpo(DDPMFamily(), unet, classifier, x0, y, level, ADDTConfig(cgpo_iterations=6, lambda_max=0.9,
                                                                    lambda_unit=0.5), torch.Generator().manual_seed(0), trace)
    assert len(trace) == 6 and trace[-1] > trace[0] * 1.05


def test_one_training_step_decreases_the_addt_loss(toy_batch) -> None:
    unet, classifier, x0, y = toy_batch
    import copy

    model = copy.deepcopy(unet).train().requires_grad_(True)
    cfg = ADDTConfig(cgpo_iterations=2)
    backbone = DDPMFamily()
    before = addt_loss(backbone, model, classifier, x0, y, cfg, torch.Generator().manual_seed(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = addt_loss(backbone, model, classifier, x0, y, cfg, torch.Generator().manual_seed(3))
    assert after.item() < before.item()


@pytest.mark.parametrize("backbone", sorted(FAMILIES))
def test_resume_reproduces_an_uninterrupted_run(backbone, tmp_path) -> None:
    from bench.core.defense import DEFENSES
    from tests.conftest import TinyClassifier

    def tiny_net():
        name = {"ddpm": "dp_ddpm", "vp": "diffpure", "edm": "dp_edm"}[backbone]
        defense = DEFENSES.get(name).for_testing()
        return {"ddpm": lambda d: d.unet, "vp": lambda d: d.score_net, "edm": lambda d: d.denoiser}[backbone](defense)

    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(12, 1, 8, 8, generator=generator) * 2 - 1, torch.arange(12) % 10
    cfg = ADDTConfig(batch_size=4, epochs=2, cgpo_iterations=2, checkpoint_every=100, lr=1e-3, ema_decay=0.9)
    whole = train(backbone, tiny_net(), TinyClassifier(), images, labels, cfg, tmp_path / "whole")
    first = train(backbone, tiny_net(), TinyClassifier(), images, labels, cfg, tmp_path / "split", stop_after=4)
    assert first.steps == 4 and (tmp_path / "split" / "step-0000004.safetensors").exists()
    second = train(backbone, tiny_net(), TinyClassifier(), images, labels, cfg, tmp_path / "split")
    assert whole.steps == second.steps == 6 and whole.losses == second.losses
    a, b = whole.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
