"""The Python API (bench.evaluate) on a registered name, a Defense object and a foreign purifier,
the foreign-purifier adapter's guarantees, and the diffusers cross-check against dp_ddpm."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

import bench
from bench.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"steps": 2, "eot": 2}


def noisy(x: torch.Tensor) -> torch.Tensor:
    """A foreign purifier: Gaussian noise drawn with torch's own RNG."""
    return (x + 0.15 * torch.randn_like(x)).clamp(0, 1)


def test_evaluate_a_registered_name_returns_a_typed_result() -> None:
    result = bench.evaluate("dp_ddim", "pgd_eot", n_samples=4, attack_options=QUICK, defense_options={"nfe": 5})
    assert isinstance(result, bench.Result) and result.n == 4 and result.draws == 10
    assert result.robust_acc.ci_low <= result.robust_acc.acc <= result.robust_acc.ci_high
    assert [p.m for p in result.rob_m] == list(range(1, 11))
    assert list(result.per_sample["index"]) == [0, 1, 2, 3]
    assert result.to_record()["entry"] == "dp_ddim[nfe=5]"
    assert result.verify(samples=2) == []


def test_evaluate_a_defense_object() -> None:
    from bench.core.defense import DEFENSES

    defense = DEFENSES.get("dp_ddpm").for_testing()
    result = bench.evaluate(defense, "pgd_eot", n_samples=3, attack_options=QUICK)
    assert result.defense == "instance:dp_ddpm" and result.n == 3
    with pytest.raises(Exception, match="a defense given as a Python object"):
        result.to_record()


def test_a_foreign_purifier_is_batch_independent_and_replayable() -> None:
    runs = [bench.evaluate(noisy, "pgd_eot", n_samples=12, batch_size=b, attack_options=QUICK) for b in (1, 5, 12)]
    again = bench.evaluate(noisy, "pgd_eot", n_samples=12, batch_size=5, attack_options=QUICK)
    columns = ["index", "label", "clean_preds", "adv_preds", "select_preds"]
    first = runs[0].per_sample[columns]
    for other in runs[1:] + [again]:
        assert first.equals(other.per_sample[columns])
    assert runs[0].defense == "foreign:noisy" and runs[0].verify(samples=3) == []
    # the purifier really is stochastic: its draws disagree somewhere
    assert any(len(set(p)) > 1 for p in first["adv_preds"]) or any(len(set(p)) > 1 for p in first["clean_preds"])


@pytest.mark.parametrize("setting", ["dw_fwd", "dw_semi:4"])
def test_a_foreign_purifier_refuses_settings_that_need_named_streams(setting: str) -> None:
    with pytest.raises(ConfigError, match=f"setting {setting} needs the defense's noise as named streams"):
        bench.evaluate(noisy, "pgd_eot", setting=setting, n_samples=2, attack_options=QUICK)


def test_a_foreign_purifier_works_under_dw_both() -> None:
    result = bench.evaluate(noisy, "pgd_eot", setting="dw_both", n_samples=3, attack_options=QUICK)
    assert all(len(set(p)) == 1 for p in result.per_sample["adv_preds"])  # known noise: every draw alike


def test_the_foreign_adapter_replays_gradients_under_checkpointing() -> None:
    from bench.core.foreign import ForeignPurifier
    from bench.core.noise import NoiseSource

    purifier = ForeignPurifier(noisy).double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    noise = NoiseSource(0).batch(purifier.noise_spec((1, 8, 8)), [0, 1, 2], [{"torch_rng": ("eval", 0)}] * 3)
    grads = []
    for checkpoint in (False, True):
        x_req = x.clone().requires_grad_(True)
        (purifier.purify(x_req, noise.to("cpu", torch.float64), checkpoint=checkpoint) ** 2).sum().backward()
        grads.append(x_req.grad)
    assert torch.equal(grads[0], grads[1])


def test_the_example_script_runs() -> None:
    runpy.run_path(str(ROOT / "docs" / "examples" / "evaluate.py"), run_name="__main__")


def test_a_diffusers_scheduler_purifier_agrees_with_dp_ddpm() -> None:
    """DDPM purification assembled from diffusers' DDPMScheduler (its step draws its own noise),
    through the adapter, against the native dp_ddpm at the same t* and steps on 128 toy images:
    the paired differences' 95% intervals contain 0; and its input gradient, through the adapter
    in float64, matches finite differences."""
    from bench.core.foreign import ForeignPurifier
    from bench.core.noise import NoiseSource
    from bench.zoo.toy import load_toy_classifier, load_toy_unet
    from tests.conftest import assert_matches_finite_differences

    example = runpy.run_path(str(ROOT / "docs" / "examples" / "foreign_diffusers.py"))
    check = example["cross_check"](n_samples=128)
    for part in ("clean", "robust"):
        d = check[part]
        print(f"\n{part}: foreign - native {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")
        assert d["ci_low"] <= 0 <= d["ci_high"], (part, d)
    print(f"cost: foreign / native = {check['foreign_seconds'] / check['native_seconds']:.2f}")
    purifier = ForeignPurifier(example["DiffusersDDPMPurifier"](load_toy_unet().double()).eval())
    classifier = load_toy_classifier().double().eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.8 + 0.1
    noise = NoiseSource(0).batch(purifier.noise_spec((1, 8, 8)), [0, 1], [{"torch_rng": ("eval", 0)}] * 2)
    noise = noise.to("cpu", torch.float64)
    assert_matches_finite_differences(lambda z: classifier(purifier.purify(z, noise)).logsumexp(1).sum(), x,
                                      "diffusers purifier through the adapter", tolerance=1e-5)
