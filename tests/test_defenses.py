"""The purification contract, checked for every registered defense."""

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from bench.core.defense import DEFENSES
from defenses.ddpm_purifier import TruncatedDiffusionConfig
from bench.core.errors import ConfigError
from bench.core.noise import NoiseSource
from tests.conftest import tiny_model


def _noise(defense, x, seed=1, ids=None, key=("eval", 0)):
    spec = defense.noise_spec(tuple(x.shape[1:]))
    ids = ids if ids is not None else list(range(x.shape[0]))
    return NoiseSource(seed).batch(spec, ids, [{s: key for s in spec}] * len(ids))


def _stochastic(name: str) -> bool:
    defense = DEFENSES.get(name).for_testing()
    return any(s.steps for s in defense.noise_spec((1, 8, 8)).values())


@pytest.mark.parametrize("name", DEFENSES.names())
def test_purify_contract(name: str, images: torch.Tensor) -> None:
    defense = DEFENSES.get(name).for_testing().eval()
    noise = _noise(defense, images)
    with torch.no_grad():
        out = defense.purify(images, noise)
        again = defense.purify(images, noise)
    paths = defense.paths
    expected = images.shape if paths == 1 else (images.shape[0], paths, *images.shape[1:])
    assert out.shape == expected and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    if defense.clamps_output:
        assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, again), "same noise must give the same output"
    if _stochastic(name):
        with torch.no_grad():
            other = defense.purify(images, _noise(defense, images, seed=2))
        assert not torch.allclose(other, out), "different noise must give a different output"


@pytest.mark.parametrize("name", DEFENSES.names())
def test_purification_does_not_depend_on_batch(name: str, images: torch.Tensor) -> None:
    defense = DEFENSES.get(name).for_testing().eval()
    ids = [10, 11, 12, 13]
    with torch.no_grad():
        full = defense.purify(images, _noise(defense, images, ids=ids))
        pair = defense.purify(images[2:], _noise(defense, images[2:], ids=ids[2:]))
        single = defense.purify(images[3:], _noise(defense, images[3:], ids=ids[3:]))
        shuffled_order = [3, 0, 2, 1]
        shuffled = defense.purify(images[shuffled_order], _noise(defense, images, ids=[ids[i] for i in shuffled_order]))
    assert (full[2:] - pair).abs().max() < 1e-5
    assert (full[3:] - single).abs().max() < 1e-5
    assert (full[shuffled_order] - shuffled).abs().max() < 1e-5


def test_reverse_timesteps_follow_the_paper_nfe_convention() -> None:
    assert TruncatedDiffusionConfig(nfe=5).timesteps == [100, 80, 60, 40, 20, 0]
    assert TruncatedDiffusionConfig().timesteps == list(range(100, -1, -1))
    with pytest.raises(ConfigError, match="nfe=7 must divide t_star=100"):
        TruncatedDiffusionConfig(nfe=7)
    with pytest.raises(ConfigError, match="t_star"):
        TruncatedDiffusionConfig(t_star=0)


@pytest.mark.parametrize("nfe, ddpm_reverse", [(5, 5), (10, 10)])
def test_stream_lengths(nfe: int, ddpm_reverse: int) -> None:
    config = TruncatedDiffusionConfig(t_star=10, nfe=nfe)
    ddpm = DEFENSES.get("dp_ddpm").for_testing(config)
    ddim = DEFENSES.get("dp_ddim").for_testing(config)
    assert ddpm.noise_spec((1, 8, 8))["reverse"].steps == ddpm_reverse
    assert ddim.noise_spec((1, 8, 8))["reverse"].steps == 0
    assert ddpm.network_calls == ddim.network_calls == nfe + 1


@pytest.mark.parametrize("t, prev_t", [(100, 80), (20, 0), (0, -1), (57, 56)])
def test_ddpm_step_matches_diffusers(t: int, prev_t: int) -> None:
    """Our noise-explicit DDPM step equals DDPMScheduler.step given the same noise."""
    config = TruncatedDiffusionConfig(t_star=100, nfe=5 if t % 20 == 0 else 100)
    defense = DEFENSES.get("dp_ddpm").for_testing(config)
    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large", clip_sample=True)
    scheduler.set_timesteps(timesteps=config.timesteps)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1, 8, 8, generator=generator)
    eps = torch.randn(2, 1, 8, 8, generator=generator)
    expected = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(9)).prev_sample
    noise = randn_tensor(eps.shape, generator=torch.Generator().manual_seed(9), dtype=eps.dtype)
    ours = defense.reverse_step(eps, t, prev_t, x, noise if t > 0 else None)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_ddim_is_deterministic_given_forward_noise(images: torch.Tensor) -> None:
    model = tiny_model("dp_ddim")
    spec = model.defense.noise_spec((1, 8, 8))
    source = NoiseSource(0)
    a = source.batch(spec, [0, 1, 2, 3], [{"forward": ("x",), "reverse": ("a",)}] * 4)
    b = source.batch(spec, [0, 1, 2, 3], [{"forward": ("x",), "reverse": ("b",)}] * 4)
    with torch.no_grad():
        assert torch.equal(model.defense.purify(images, a), model.defense.purify(images, b))
