"""Gradient-correctness proofs (the flaws DiffBreak measured in earlier "exact" code, §3.2 and
App. D), for every registered defense: checkpointed = plain bitwise, noise replayed in the
recomputation, GDMP's guidance differentiated to second order, and finite differences with
the *trained* toy weights, not only random ones. Plus gradient grafting = full backprop."""

import pytest
import torch
import torch.nn.functional as F

from bench.core.config import build_config
from bench.core.defense import DEFENSES, DefendedClassifier
from bench.core.noise import NoiseSource
from bench.zoo.classifiers import load_classifier
from tests.conftest import assert_matches_finite_differences, make_target, tiny_model

PURIFIERS = [name for name in DEFENSES.names() if name != "none"]


def _fixed_noise(model: DefendedClassifier, ids: list[int], dtype: torch.dtype = torch.float32):
    spec = model.defense.noise_spec((1, 8, 8))
    return NoiseSource(0).batch(spec, ids, [{s: ("k",) for s in spec}] * len(ids)).to("cpu", dtype)


@pytest.mark.parametrize("name", PURIFIERS)
def test_noise_is_replayed_in_the_checkpointed_recomputation(name: str, images: torch.Tensor) -> None:
    """Recomputation under checkpointing gets its noise as an input, never from the global RNG:
    reseeding the RNG between forward and backward changes nothing, and purification leaves
    the global RNG state untouched."""
    model = tiny_model(name)
    y = torch.tensor([0, 1, 2, 3])
    noise = _fixed_noise(model, [0, 1, 2, 3])

    def gradient(checkpoint: bool, reseed: int | None) -> torch.Tensor:
        x = images.clone().requires_grad_(True)
        torch.manual_seed(123)
        loss = F.cross_entropy(model(x, noise, checkpoint=checkpoint), y, reduction="sum")
        if reseed is not None:
            torch.manual_seed(reseed)
        return torch.autograd.grad(loss, x)[0]

    plain = gradient(False, None)
    torch.testing.assert_close(gradient(True, 999), plain, rtol=0, atol=0)
    state = torch.get_rng_state()
    with torch.no_grad():
        model(images, noise)
    assert torch.equal(torch.get_rng_state(), state), f"{name} drew from the global RNG"


@pytest.mark.parametrize("guidance, stride", [("mse", 1), ("ssim", 1), ("mse", 2)])
def test_gdmp_guidance_gradient_includes_second_order_terms(guidance: str, stride: int) -> None:
    """Finite differences in float64 with guidance on: the guidance term g(z) depends on z (and,
    through its target, on x), so its Jacobian must be in the gradient (DiffBreak measured
    relative errors > 1e4 in code that detached it)."""
    torch.manual_seed(0)
    model = tiny_model("gdmp", dtype=torch.float64, guidance=guidance, guide_scale=2000.0, purify_step=3,
                       iterations=2, paths=2, stride=stride)
    x = 0.3 + 0.4 * torch.rand(2, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([3, 7])
    noise = _fixed_noise(model, [0, 1], torch.float64)
    loss = lambda z: F.cross_entropy(model(z, noise), y, reduction="sum")  # noqa: E731
    assert_matches_finite_differences(loss, x, f"gdmp[{guidance}]", 1e-6)
    # and the guidance matters here: switching it off changes the gradient
    plain = tiny_model("gdmp", dtype=torch.float64, guidance="none", purify_step=3, iterations=2, paths=2,
                       stride=stride)
    x_req = x.clone().requires_grad_(True)
    g_on = torch.autograd.grad(loss(x_req), x_req)[0]
    x_req = x.clone().requires_grad_(True)
    g_off = torch.autograd.grad(F.cross_entropy(plain(x_req, _fixed_noise(plain, [0, 1], torch.float64)), y,
                                                reduction="sum"), x_req)[0]
    assert (g_on - g_off).abs().max() > 1e-6 * g_off.abs().max()


@pytest.mark.parametrize("name", PURIFIERS)
def test_gradient_matches_finite_differences_with_trained_toy_weights(name: str) -> None:
    """The committed toy denoisers and classifier (float64, the plug-in's fast options): the
    chain's gradient equals central finite differences, not only with random weights."""
    from bench.zoo.datasets import load_test_split

    cls = DEFENSES.get(name)
    defense = cls.build("toy", build_config(cls.config_cls, dict(cls.fast_options)))
    model = DefendedClassifier(defense, load_classifier("toy")).to(torch.float64).eval().requires_grad_(False)
    split = load_test_split("toy")
    x, y = split.images[:2].to(torch.float64), split.labels[:2]
    x = x.clamp(0.05, 0.95)  # keep the ±h probes inside any [0, 1] clamp of the input
    noise = _fixed_noise(model, [0, 1], torch.float64)
    loss = lambda z: F.cross_entropy(model(z, noise), y, reduction="sum")  # noqa: E731
    assert_matches_finite_differences(loss, x, f"{name} (trained toy weights)", 1e-5)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_grafting_equals_backprop_with_the_same_upstream_gradient(name: str, images: torch.Tensor) -> None:
    """DiffHammer's grafting with the draw's own classifier gradient as the upstream gradient
    is the full gradient of the loss, bitwise on CPU."""
    model = tiny_model(name)
    y = torch.tensor([0, 1, 2, 3])
    target = make_target(model, "white", [0, 1, 2, 3])
    noise, n = target.attack_noise(images, 0, 1)
    full, _, _ = target.per_draw_gradients(images, y, noise, n)
    purified = target.purify_with_noise(images, noise, n)
    upstream, _, _ = target.classifier_gradients(purified, y, lambda z, t: F.cross_entropy(z, t, reduction="none"))
    grafted = target.graft(images, noise, upstream[0])
    torch.testing.assert_close(grafted, full[0], rtol=0, atol=0)
    assert target.cost(0) == {"gradient_draws": 2, "forward_draws": 1}


def test_run_time_self_check_fails_loudly_on_a_non_replayable_gradient(images: torch.Tensor) -> None:
    """A defense whose computation changes between two identical calls (as a non-deterministic
    kernel would) is caught by the recomputation self-check before anything is stored."""
    from bench.core.determinism import NondeterminismError, self_check

    model = tiny_model("dp_ddpm")
    y = torch.tensor([0, 1, 2, 3])
    target = make_target(model, "white", [0, 1, 2, 3])
    assert self_check(target, images, y)["self_check"]
    calls = {"n": 0}
    purify = model.defense.purify

    def drifting(x, noise, checkpoint=False):
        calls["n"] += 1
        return purify(x, noise, checkpoint) * (1 + 1e-6 * calls["n"])

    model.defense.purify = drifting
    with pytest.raises(NondeterminismError, match="differs between two identical computations"):
        self_check(target, images, y)


def test_runs_record_whether_deterministic_algorithms_were_required(tmp_path) -> None:
    from sqlalchemy.orm import Session

    from bench.harness.runner import RunRequest, create_run, execute_run
    from bench.harness.store import Run, open_store

    engine = open_store(str(tmp_path / "r.sqlite"))
    for deterministic in (True, False):
        run_id = create_run(engine, RunRequest(defense="none", attack="pgd_eot", n_samples=2, batch_size=2,
                                               eval_draws=2, attack_options={"steps": 1, "eot": 1},
                                               deterministic=deterministic))
        execute_run(engine, run_id)
        with Session(engine) as session:
            assert session.get(Run, run_id).runtime["deterministic"] is deterministic
