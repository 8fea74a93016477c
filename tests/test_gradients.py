"""Exact gradients through the whole purification chain."""

import pytest
import torch
import torch.nn.functional as F

from bench.core.defense import DEFENSES
from bench.core.noise import NoiseSource
from tests.conftest import assert_matches_finite_differences, make_target, tiny_model

PURIFIERS = [name for name in DEFENSES.names() if name != "none"]


def _loss_fn(model, noise, y):
    return lambda x: F.cross_entropy(model(x, noise), y, reduction="sum")


@pytest.mark.parametrize("name", PURIFIERS)
def test_gradient_matches_central_finite_differences(name: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(name, dtype=torch.float64)
    x = (0.3 + 0.4 * torch.rand(2, 1, 8, 8, dtype=torch.float64))
    y = torch.tensor([3, 7])
    spec = model.defense.noise_spec((1, 8, 8))
    noise = NoiseSource(0).batch(spec, [0, 1], [{s: ("k",) for s in spec}] * 2).to("cpu", torch.float64)
    assert_matches_finite_differences(_loss_fn(model, noise, y), x, name, 1e-6, directions=4)


@pytest.mark.parametrize("name", PURIFIERS)
def test_checkpointed_gradient_equals_plain_gradient(name: str, images: torch.Tensor) -> None:
    """Bitwise, for all steps and for every partial fraction (evenly spread checkpointed steps)."""
    model = tiny_model(name)
    y = torch.tensor([0, 1, 2, 3])
    plain, _ = make_target(model, "white", [0, 1, 2, 3]).eot_gradient(images, y, step=0, eot=3)
    for fraction in (True, 0.25, 0.5, 0.75):
        ckpt, _ = make_target(model, "white", [0, 1, 2, 3], checkpoint=fraction).eot_gradient(images, y, step=0, eot=3)
        torch.testing.assert_close(ckpt, plain, rtol=0, atol=0, msg=f"checkpoint={fraction}")


def test_checkpointed_steps_are_evenly_spread_and_never_the_last() -> None:
    from bench.core.defense import checkpointed_steps

    assert checkpointed_steps(False, 5) == [False] * 5 and checkpointed_steps(True, 5) == [True] * 4 + [False]
    half = checkpointed_steps(0.5, 9)
    assert sum(half) == 4 and half == [False, True] * 4 + [False]
    assert sum(checkpointed_steps(0.3, 101)) == 30 and sum(checkpointed_steps(1.0, 36, keep_last=False)) == 36
    with pytest.raises(ValueError, match="not in"):
        checkpointed_steps(1.5, 4)


def test_eot_gradient_does_not_depend_on_chunking(images: torch.Tensor) -> None:
    model = tiny_model("dp_ddpm")
    y = torch.tensor([0, 1, 2, 3])
    whole, _ = make_target(model, "white", [0, 1, 2, 3]).eot_gradient(images, y, step=2, eot=4)
    chunked, _ = make_target(model, "white", [0, 1, 2, 3], chunk=3).eot_gradient(images, y, step=2, eot=4)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-6)
    # a sample's gradient is the same when it is attacked alone
    alone, _ = make_target(model, "white", [2]).eot_gradient(images[2:3], y[2:3], step=2, eot=4)
    torch.testing.assert_close(alone, whole[2:3], rtol=1e-4, atol=1e-6)


def test_eot_gradient_is_the_sum_over_draws(images: torch.Tensor) -> None:
    model = tiny_model("dp_ddpm")
    y = torch.tensor([0, 1, 2, 3])
    target = make_target(model, "white", [0, 1, 2, 3])
    total, _ = target.eot_gradient(images, y, step=0, eot=2)
    spec = model.defense.noise_spec((1, 8, 8))
    parts = []
    for draw in range(2):
        noise = target.noise.batch(spec, [0, 1, 2, 3], [target.setting.attack_keys(spec, 0, draw)] * 4)
        x = images.clone().requires_grad_(True)
        parts.append(torch.autograd.grad(F.cross_entropy(model(x, noise), y, reduction="sum"), x)[0])
    torch.testing.assert_close(total, parts[0] + parts[1], rtol=1e-5, atol=1e-6)


def test_identical_draws_are_computed_once_with_their_multiplicity(images: torch.Tensor) -> None:
    """dw_fwd on DDIM: every EoT draw has the same (forward) noise; the sum is eot x one draw."""
    model = tiny_model("dp_ddim")
    y = torch.tensor([0, 1, 2, 3])
    target = make_target(model, "dw_fwd", [0, 1, 2, 3])
    five, loss5 = target.eot_gradient(images, y, step=0, eot=5)
    one, loss1 = target.eot_gradient(images, y, step=0, eot=1)
    torch.testing.assert_close(five, 5 * one)
    torch.testing.assert_close(loss5, loss1)
    preds = target.eval_predictions(images, draws=4)
    assert (preds == preds[:, :1]).all()
