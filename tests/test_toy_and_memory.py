import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.core.errors import ConfigError, MissingAssetError
from bench.core.memory import MemoryPlan, parse_bytes, plan_gradient, saved_bytes_per_sample
from bench.core.noise import NoiseSource
from bench.core.settings import parse_setting
from bench.core.target import StochasticTarget
from bench.training.toy import ToyTrainConfig, train_classifier, train_unet
from bench.zoo.toy import ASSETS, load_toy_classifier, load_toy_unet
from tests.conftest import tiny_model


def test_committed_toy_assets_load_and_verify() -> None:
    assert sum(p.numel() for p in load_toy_unet().parameters()) > 10_000
    assert load_toy_classifier()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_corrupted_toy_asset_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "assets"
    shutil.copytree(ASSETS, copy)
    data = bytearray((copy / "toy_unet.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "toy_unet.safetensors").write_bytes(bytes(data))
    with pytest.raises(MissingAssetError, match="SHA-256 .* corrupted or stale.*bench toy train"):
        load_toy_unet(copy)
    (copy / "toy_classifier.safetensors").unlink()
    with pytest.raises(MissingAssetError, match="missing"):
        load_toy_classifier(copy)


def test_toy_training_is_reproducible_from_its_seed() -> None:
    cfg = replace(ToyTrainConfig(), classifier_epochs=1, unet_steps=3, unet_batch=8)
    a, _ = train_classifier(cfg)
    b, _ = train_classifier(cfg)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    u, _ = train_unet(cfg)
    v, _ = train_unet(cfg)
    assert all(torch.equal(p, q) for p, q in zip(u.state_dict().values(), v.state_dict().values()))
    w, _ = train_unet(replace(cfg, seed=1))
    assert not all(torch.equal(p, q) for p, q in zip(u.state_dict().values(), w.state_dict().values()))


@pytest.mark.parametrize("text, value", [("512MiB", 512 * 2**20), ("4GiB", 4 * 2**30), ("1.5GB", 1_500_000_000), ("100", 100)])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["lots", "4XB", "0GiB"])
def test_parse_bytes_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_bytes(bad)


def test_auto_policy_checkpoints_only_over_budget() -> None:
    model = tiny_model("dp_ddpm")
    per_sample = saved_bytes_per_sample(model, (1, 8, 8), torch.device("cpu"), torch.float32)
    roomy = plan_gradient(model, (1, 8, 8), torch.device("cpu"), torch.float32, "auto", per_sample * 100, 40)
    assert not roomy.checkpoint and roomy.chunk_size == 40
    tight = plan_gradient(model, (1, 8, 8), torch.device("cpu"), torch.float32, "auto", per_sample * 10, 40, measure=False)
    assert tight.checkpoint and tight.bytes_per_sample < per_sample and 1 <= tight.chunk_size <= 40
    assert 0 < tight.checkpoint <= 1  # a fraction of the steps, not necessarily all
    never = plan_gradient(model, (1, 8, 8), torch.device("cpu"), torch.float32, "never", per_sample * 10, 40)
    assert not never.checkpoint and never.chunk_size == (per_sample * 10) // never.bytes_per_sample < 40
    with pytest.raises(ConfigError, match="'sometimes' is not one of never, always, auto"):
        plan_gradient(model, (1, 8, 8), torch.device("cpu"), torch.float32, "sometimes", 1, 1)


def test_auto_policy_weighs_chunking_against_checkpointing_by_cost() -> None:
    """Over budget, the planner times each candidate (a chunk size with the least checkpointing that
    fits it) and takes the fastest per sample: which one depends on the measured costs."""
    model = tiny_model("dp_ddpm")
    shape, cpu, f32 = (1, 8, 8), torch.device("cpu"), torch.float32
    per_sample = saved_bytes_per_sample(model, shape, cpu, f32)
    budget, batch = per_sample * 30, 64
    seen: list[tuple[int, float]] = []

    def cost(slow_small_chunks: bool):
        def timer(chunk: int, fraction: float) -> float:
            seen.append((chunk, fraction))
            return (1 + 0.5 * fraction) * (1 + (100 if slow_small_chunks else 0.01) / chunk)
        return timer

    prefers_checkpointing = plan_gradient(model, shape, cpu, f32, "auto", budget, batch, measure=cost(True))
    candidates = list(seen)
    assert len(candidates) >= 2 and candidates[0][0] == batch and candidates[-1][1] == 0.0
    assert (prefers_checkpointing.chunk_size, prefers_checkpointing.checkpoint) == candidates[0]
    prefers_chunking = plan_gradient(model, shape, cpu, f32, "auto", budget, batch, measure=cost(False))
    assert (prefers_chunking.chunk_size, prefers_chunking.checkpoint) == candidates[-1]
    for plan in (prefers_checkpointing, prefers_chunking):
        assert plan.bytes_per_sample * plan.chunk_size <= budget
    measured = plan_gradient(model, shape, cpu, f32, "auto", budget, batch)  # timed on this machine
    assert measured.bytes_per_sample * measured.chunk_size <= budget


@pytest.mark.parametrize("share", [1.1, 0.45])
def test_measured_planning_admits_a_plan_only_if_its_measured_peak_fits(share: float, caplog) -> None:
    """Timing on the device, the planner also tries plans that fit only without the model's MARGIN
    and keeps them only when the measured peak fits: whatever it picks, the peak of a real gradient
    pass under that plan (the project's tracker) stays within the budget."""
    import logging

    from bench.core.memtrack import PeakMemory
    from tests.conftest import make_target

    model = tiny_model("dp_ddpm")
    shape, batch = (1, 8, 8), 16
    per_sample = saved_bytes_per_sample(model, shape, torch.device("cpu"), torch.float32)
    budget = int(per_sample * batch * share)  # 1.1: the plain batch fits the saved bytes, not MARGIN x them
    with caplog.at_level(logging.INFO, logger="bench.core.memory"):
        plan = plan_gradient(model, shape, torch.device("cpu"), torch.float32, "auto", budget, batch)
    assert "gradient plan candidates" in caplog.text  # candidates were timed (and peaks measured)
    target = make_target(model, "white", list(range(batch)), checkpoint=plan.checkpoint, chunk=plan.chunk_size)
    with PeakMemory() as peak:
        target.eot_gradient(torch.rand(batch, *shape), torch.arange(batch) % 10, step=0, eot=1)
    assert peak.peak <= budget, (plan, peak.peak, budget)


@pytest.mark.parametrize("kind", ["ddpm", "vp", "edm"])
def test_every_parameter_of_a_fresh_toy_denoiser_gets_a_gradient(kind: str) -> None:
    """A freshly initialised network must be trainable end to end (a zero-initialised output
    layer once blocked every gradient of the toy EDM but its last bias)."""
    from bench.families import FAMILIES
    from bench.zoo.toy import TOY_MAKERS

    torch.manual_seed(0)
    model = TOY_MAKERS[kind]().train()
    FAMILIES[kind]().clean_loss(model, torch.rand(8, 1, 8, 8) * 2 - 1, torch.Generator().manual_seed(0)).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().max() > 0]
    assert not dead, f"{kind}: no gradient reaches {dead[:5]}"


@pytest.mark.parametrize("name, share", [("dp_ddpm", s) for s in (0.9, 0.6, 0.35, 0.1)]
                         + [(n, s) for n in ("diffpure", "dp_edm", "gdmp") for s in (0.6, 0.2)])
def test_partial_checkpointing_plan_stays_within_its_budget(name: str, share: float) -> None:
    """The planner checkpoints the smallest fraction of steps that fits, and the measured peak of
    one gradient pass (the project's tracker, every storage alive) stays within the budget."""
    from bench.core.memtrack import PeakMemory
    from tests.conftest import make_target

    model = tiny_model(name)
    batch = 12
    per_sample = saved_bytes_per_sample(model, (1, 8, 8), torch.device("cpu"), torch.float32)
    budget = int(per_sample * batch * share)
    plan = plan_gradient(model, (1, 8, 8), torch.device("cpu"), torch.float32, "auto", budget, batch, measure=False)
    assert 0 < plan.checkpoint <= 1 and plan.bytes_per_sample * plan.chunk_size <= budget
    target = make_target(model, "white", list(range(batch)), checkpoint=plan.checkpoint, chunk=plan.chunk_size)
    x, y = torch.rand(batch, 1, 8, 8), torch.arange(batch) % 10
    with PeakMemory() as peak:
        target.eot_gradient(x, y, step=0, eot=1)
    assert peak.peak <= budget, (plan, peak.peak, budget)


@pytest.mark.parametrize("name, config", [("dp_ddpm", {"nfe": 5}), ("gdmp", {}), ("dp_ddpm", {"nfe": 5, "votes": 3})])
def test_inference_plan_stays_within_its_budget(name: str, config: dict) -> None:
    """No-grad chunks hold all of a sample's paths at once (GDMP's paths, a vote's purifications):
    the measured peak of an evaluation under the inference plan stays within the budget."""
    from bench.core.memory import plan_inference
    from bench.core.memtrack import PeakMemory

    model = tiny_model(name, **config)
    samples, draws = 4, 3
    plan = plan_inference(model, (1, 8, 8), torch.device("cpu"), torch.float32, 2**62, samples * draws)
    budget = plan.bytes_per_sample * 5  # forces chunks of 5 of the 12 stacked draws
    plan = plan_inference(model, (1, 8, 8), torch.device("cpu"), torch.float32, budget, samples * draws)
    assert plan.chunk_size == 5
    target = StochasticTarget(model, parse_setting("white"), NoiseSource(0), list(range(samples)),
                              MemoryPlan(False, samples, 1), plan)
    with PeakMemory() as peak:
        target.eval_predictions(torch.rand(samples, 1, 8, 8), draws)
    assert peak.peak <= budget, (plan, peak.peak, budget)


@pytest.mark.parametrize("name", ["dp_ddpm", "coup"])  # coup differentiates inside its forward (guidance)
def test_the_memory_probe_leaves_no_graph_behind(name: str) -> None:
    """Measuring a model's saved bytes keeps nothing alive: the graph of the probe's saved-tensor
    hook holds indices, not tensors (a hook that returns the tensor makes a cycle through autograd
    that Python's collector cannot free, and every run leaked the probe's graph)."""
    import gc

    model = tiny_model(name)

    def graph_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.grad_fn is not None)

    before = graph_tensors()
    for _ in range(2):
        assert saved_bytes_per_sample(model, (1, 8, 8), torch.device("cpu"), torch.float32) > 0
    assert graph_tensors() == before
