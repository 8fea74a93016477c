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


class _Scaled(torch.nn.Module):
    """A classifier whose logits are multiplied by ``scale`` (tiny scale ⇒ tiny input gradients)."""

    def __init__(self, inner: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.flatten().argsort().argsort().double(), b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_cgpo_is_scale_free(toy_batch, monkeypatch) -> None:
    """With gradients of ~1e-9 the ranks RBGM maps must still be the summed gradient's (they were
    the random start's when the start and the gradients shared one sum)."""
    import bench.training.addt as addt

    unet, classifier, x0, y = toy_batch
    seen_inputs: list[torch.Tensor] = []
    gradients: list[torch.Tensor] = []
    real_rbgm, real_gradient = addt.rbgm, addt._classifier_gradient

    def recording_rbgm(delta, generator=None):  # noqa: ANN001, ANN202
        seen_inputs.append(delta.clone())
        return real_rbgm(delta, generator)

    def recording_gradient(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        grad, loss = real_gradient(*args, **kwargs)
        gradients.append(grad.clone())
        return grad, loss

    monkeypatch.setattr(addt, "rbgm", recording_rbgm)
    monkeypatch.setattr(addt, "_classifier_gradient", recording_gradient)
    cgpo(DDPMFamily(), unet, _Scaled(classifier, 1e-7), x0[:8], y[:8], torch.full((8,), 50), ADDTConfig(),
         torch.Generator().manual_seed(0))
    summed = torch.stack(gradients).sum(0)
    assert 1e-12 < summed.abs().median() < 1e-6, "the test needs tiny gradients"
    assert _spearman(seen_inputs[-1], summed) >= 0.99


def test_cgpo_perturbation_raises_the_classifier_loss_over_a_gaussian(toy_batch) -> None:
    """Paired on one batch: the same images, level and ε; CGPO's ε_δ vs a Gaussian of the same norm."""
    import torch.nn.functional as F

    from bench.training.addt import _classify, mixed_input

    unet, classifier, x0, y = toy_batch
    family, cfg, level = DDPMFamily(), ADDTConfig(lambda_unit=0.24, lambda_max=0.9), torch.full((32,), 100)
    perturbation = cgpo(family, unet, classifier, x0, y, level, cfg, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    gaussian = torch.randn(x0.shape, generator=generator)
    gaussian = gaussian * (perturbation.flatten(1).norm(dim=1) / gaussian.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=generator)
    lam = lambdas(family, level, cfg)

    def loss(p: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x, _ = mixed_input(family, x0, level, eps, p, lam, "rbgm")
            return F.cross_entropy(_classify(classifier, family.predict_x0(unet, x, level)), y, reduction="none")

    difference = loss(perturbation) - loss(gaussian)
    assert difference.mean() > 0 and (difference > 0).float().mean() > 0.5


def test_ema_warm_up_follows_diffusers_ema_model(tmp_path) -> None:
    """The EMA equals the model after the first update (decay 0) and then decays as diffusers'
    ``EMAModel`` with warm-up: d_k = 1 − (1 + (k − 1))^(−3/4) at update k."""
    from diffusers.training_utils import EMAModel
    from safetensors.torch import load_file

    from bench.core.defense import DEFENSES
    from tests.conftest import TinyClassifier

    net = DEFENSES.get("dp_ddpm").for_testing().unet
    images, labels = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1, torch.arange(8)
    cfg = ADDTConfig(batch_size=4, epochs=1, cgpo_iterations=1, checkpoint_every=1, lr=1e-3)
    train("ddpm", net, TinyClassifier(), images, labels, cfg, tmp_path)
    one, two = (load_file(str(tmp_path / f"step-000000{k}.safetensors")) for k in (1, 2))
    names = [k[6:] for k in one if k.startswith("model.") and f"ema.{k[6:]}" in one]
    assert names and all(torch.equal(one[f"ema.{n}"], one[f"model.{n}"]) for n in names)
    reference = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=0.9999, use_ema_warmup=True, inv_gamma=1.0,
                         power=0.75)
    decay = reference.get_decay(2)
    assert decay == pytest.approx(1 - 2 ** -0.75)
    for n in names:
        expected = decay * one[f"ema.{n}"] + (1 - decay) * two[f"model.{n}"]
        assert torch.allclose(two[f"ema.{n}"], expected, atol=1e-6)


def test_training_uses_the_reference_optimizer() -> None:
    cfg = ADDTConfig()
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.weight_decay, cfg.ema_decay) == (0.95, 0.999, 1e-6, 0.9999)
    assert cfg.cgpo_train_mode


@pytest.mark.parametrize("backbone", sorted(FAMILIES))
def test_cgpo_diagnostics_cover_every_band(backbone) -> None:
    from bench.core.defense import DEFENSES
    from bench.training.addt import LEVEL_BANDS, cgpo_diagnostics
    from tests.conftest import TinyClassifier

    name = {"ddpm": "dp_ddpm", "vp": "diffpure", "edm": "dp_edm"}[backbone]
    defense = DEFENSES.get(name).for_testing()
    net = {"ddpm": lambda d: d.unet, "vp": lambda d: d.score_net, "edm": lambda d: d.denoiser}[backbone](defense)
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = cgpo_diagnostics(backbone, net, TinyClassifier(), x0, torch.arange(4), ADDTConfig(cgpo_iterations=2))
    assert [(r["band_low"], r["band_high"]) for r in rows] == LEVEL_BANDS[backbone]
    assert all(r["ce_cgpo"] > 0 and r["ce_gaussian"] > 0 and 0 <= r["cgpo_higher"] <= 1 for r in rows)


def test_the_clean_fine_tune_is_the_plain_denoising_loss(toy_batch) -> None:
    """Table 5's "vanilla fine-tune": no CGPO, no perturbation, the family's own loss on clean data."""
    unet, classifier, x0, y = toy_batch
    backbone = DDPMFamily()
    clean = addt_loss(backbone, unet, classifier, x0, y, ADDTConfig(variant="clean"), torch.Generator().manual_seed(5))
    plain = backbone.clean_loss(unet, x0, torch.Generator().manual_seed(5))
    assert clean.item() == pytest.approx(plain.item(), rel=1e-6)


def test_the_mse_guided_fine_tune_raises_the_reconstruction_error_not_the_classifier_loss(toy_batch) -> None:
    """Table 5's "MSE distance guided" CGPO: its perturbation (RBGM-mapped, like ADDT's) raises the
    one-step reconstruction error over a Gaussian draw, and it never reads the classifier."""
    from bench.training.addt import mixed_input

    unet, classifier, x0, y = toy_batch
    backbone, level = DDPMFamily(), torch.full((32,), 60)
    cfg = ADDTConfig(variant="mse", cgpo_iterations=3, lambda_unit=0.5, lambda_max=0.9)

    class Untouchable(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            raise AssertionError("the MSE-guided fine-tune must not call the classifier")

    mapped = cgpo(backbone, unet, Untouchable(), x0, y, level, cfg, torch.Generator().manual_seed(0))
    gaussian = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    eps, lam = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)), lambdas(backbone, level, cfg)
    errors = []
    for p in (mapped, gaussian):
        with torch.no_grad():
            x, _ = mixed_input(backbone, x0, level, eps, p, lam, "rbgm")
            errors.append((backbone.predict_x0(unet, x, level) - x0).pow(2).flatten(1).sum(1))
    assert (errors[0] - errors[1]).mean() > 0, errors


def test_every_named_fine_tune_has_a_config_and_a_model_file_per_family() -> None:
    from bench.training.addt import TOY_LAMBDA_SCALE, fine_tune_config
    from bench.training.fine_tunes import FINE_TUNES, model_file_name
    from bench.zoo.hub import MODEL_FILES

    for name in FINE_TUNES:
        cifar, toy = fine_tune_config(name, toy=False), fine_tune_config(name, toy=True)
        if cifar.variant in ("rbgm", "mse"):
            assert toy.lambda_unit == pytest.approx(cifar.lambda_unit * TOY_LAMBDA_SCALE)
        for family in FAMILIES:
            for base in (f"toy-{family}-addt", f"addt-{family}-cifar10"):
                assert MODEL_FILES.get(model_file_name(base, name)).produce
    assert fine_tune_config("lambda0.02", toy=True).lambda_unit == pytest.approx(0.16)
    assert fine_tune_config("linf", toy=True).linf_eps == 0.25 and fine_tune_config("linf", toy=False).linf_eps == 8 / 255
    with pytest.raises(ConfigError, match="not one of"):
        fine_tune_config("gaussian", toy=True)


def test_an_addt_entry_loads_the_fine_tune_its_option_names(monkeypatch) -> None:
    from bench.core.config import build_config
    from bench.core.defense import DEFENSES
    from bench.zoo import hub

    loaded: list[str] = []
    monkeypatch.setattr(hub, "load_model", lambda name: loaded.append(name) or torch.nn.Identity())
    for name, option, expected in (("dp_ddpm_addt", {}, "toy-ddpm-addt"), ("dp_ddim_addt", {"fine_tune": "linf"},
                                   "toy-ddpm-addt-linf"), ("diffpure_addt", {"fine_tune": "clean"}, "addt-vp-cifar10-clean")):
        cls = DEFENSES.get(name)
        dataset = "cifar10" if name == "diffpure_addt" else "toy"
        try:
            cls.pretrained(dataset, build_config(cls.config_cls, option))
        except Exception:  # noqa: BLE001 - an Identity is no network; only the file name matters here
            pass
        assert loaded[-1] == expected
    with pytest.raises(ConfigError, match="fine_tune='gaussian' is not one of"):
        build_config(DEFENSES.get("dp_ddpm_addt").config_cls, {"fine_tune": "gaussian"})
