"""Gradient modes (bench/core/gradient_modes.py): each mode's gradient equals its definition, and
records made with a mode other than exact never rank."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.core.errors import ConfigError
from bench.core.gradient_modes import parse_gradient_mode
from bench.core.noise import NoiseSource
from tests.conftest import make_target, tiny_model


def _setup(name: str = "dp_ddpm", **config):
    model = tiny_model(name, dtype=torch.float64, **config)
    generator = torch.Generator().manual_seed(2)
    x = (0.2 + 0.6 * torch.rand(3, 1, 8, 8, generator=generator)).double()
    y = torch.tensor([1, 2, 3])
    target = make_target(model, "white", [0, 1, 2])
    noise = target._stacked_noise(x, 1, lambda sid, d: {s: ("eval", 0) for s in target.streams(x)})
    return model, target, x, y, noise


def _grad(target, x, y, noise, mode: str) -> torch.Tensor:  # noqa: ANN001
    target.gradient_mode = parse_gradient_mode(mode)
    grad, _, _ = target.per_draw_gradients(x, y, noise, 1)
    return grad[0]


def test_bpda_is_the_classifier_gradient_at_the_purified_input() -> None:
    model, target, x, y, noise = _setup()
    with torch.no_grad():
        purified = model.purify(x, noise)
    p = purified.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(model.classifier(p), y, reduction="sum"), p)
    assert torch.allclose(_grad(target, x, y, noise, "bpda"), expected)


def test_blind_is_the_classifier_gradient_at_the_input() -> None:
    model, target, x, y, noise = _setup()
    inp = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(model.classifier(inp), y, reduction="sum"), inp)
    assert torch.allclose(_grad(target, x, y, noise, "blind"), expected)


def test_forward_only_is_bpda_scaled_by_the_forward_jacobian() -> None:
    model, target, x, y, noise = _setup()
    scale = model.defense.forward_scale
    assert 0 < scale < 1
    assert torch.allclose(_grad(target, x, y, noise, "forward_only"), scale * _grad(target, x, y, noise, "bpda"))


@pytest.mark.parametrize("name, own", [("dp_ddpm", 5), ("dp_edm", 4), ("diffpure", 3)])
def test_a_surrogate_with_the_purifiers_own_steps_is_exact(name: str, own: int) -> None:
    _, target, x, y, noise = _setup(name)
    exact = _grad(target, x, y, noise, "exact")
    assert torch.equal(_grad(target, x, y, noise, f"surrogate:{own}"), exact)
    if name == "dp_ddpm":  # a shorter chain is a different (approximate) gradient
        fewer = _grad(target, x, y, noise, "surrogate:1")
        assert not torch.allclose(fewer, exact) and torch.isfinite(fewer).all()


def test_unknown_modes_and_impossible_surrogates_are_refused() -> None:
    with pytest.raises(ConfigError, match="gradient='bdpa' is not one of"):
        parse_gradient_mode("bdpa")
    for digits in ("0", "\u00b2", "\u0663"):  # superscript two, Arabic-Indic three: str.isdigit() says yes
        with pytest.raises(ConfigError, match="is not one of"):
            parse_gradient_mode(f"surrogate:{digits}")
    _, target, x, y, noise = _setup("gdmp")
    with pytest.raises(ConfigError, match="has no surrogate"):
        _grad(target, x, y, noise, "surrogate:2")


def test_a_record_made_with_an_approximate_gradient_is_off_protocol(exported_records) -> None:
    import json

    from bench.protocols import load_protocol
    from bench.publish.conformance import protocol_differences
    from bench.publish.records import Record

    _, paths = exported_records
    data = json.loads(paths[0].read_text())
    data["attack"]["config"]["gradient"] = "bpda"
    assert "attack gradient=bpda, not exact" in protocol_differences(Record.model_validate(data), load_protocol("toy"))
    data["attack"]["config"].pop("gradient")  # a record from before the option existed is the exact attack
    assert not any("gradient" in d for d in protocol_differences(Record.model_validate(data), load_protocol("toy")))


def test_the_protocol_effects_page_pairs_an_approximate_record_with_its_exact_twin(tmp_path) -> None:
    import json

    from bench.harness.perf import write_synthetic_records
    from bench.publish.derive import Outcomes, derive
    from bench.publish.leaderboard import build_site
    from bench.publish.records import decode_preds, encode_preds, pred_width

    results = tmp_path / "results"
    write_synthetic_records(results, 24)
    exact = sorted(p for p in results.rglob("*__pgd_eot__white.json") if "/toy/" in p.as_posix())[0]
    data = json.loads(exact.read_text())
    data["attack"]["config"]["gradient"] = "bpda"
    data["run_id"] = "bpdatwin"
    s, w = data["samples"], pred_width("toy")
    labels = s["label"]
    adv = decode_preds(s["adv_preds"], w)
    adv[:, :] = [[y] * adv.shape[1] for y in labels]  # the weaker attack leaves every draw correct
    s["adv_preds"] = encode_preds(adv, w)
    derived = derive(Outcomes.from_predictions(labels, decode_preds(s["clean_preds"], w), adv,
                                               decode_preds(s["select_preds"], w)))
    data.update(robust=derived["robust"], rob_m=derived["rob_m"])
    s.update(derived["samples"])
    (exact.parent / "bpda.json").write_text(json.dumps(data))
    build_site(results, tmp_path / "site")
    page = (tmp_path / "site" / "effects.html").read_text()
    assert "pgd_eot, gradient=bpda" in page and "vs" in page


def test_the_adjoint_mode_is_diffpures_torchsde_gradient() -> None:
    """torchsde's adjoint on the draw's own Brownian path: the forward pass is our chain exactly,
    the gradient is the continuous adjoint's (close to, not equal to, the exact one), per sample."""
    pytest.importorskip("torchsde")
    model, target, x, y, noise = _setup("diffpure")
    defense = model.defense
    with torch.no_grad():
        assert torch.allclose(defense.adjoint_purify(x, noise), defense.purify(x, noise), atol=1e-5)
    exact = _grad(target, x, y, noise, "exact")
    adjoint = _grad(target, x, y, noise, "adjoint")
    cosine = F.cosine_similarity(adjoint.flatten(1), exact.flatten(1), dim=1)
    assert torch.isfinite(adjoint).all() and (cosine > 0.5).all(), cosine
    assert not torch.allclose(adjoint, exact, atol=1e-6)  # another gradient, not the exact one
    assert torch.equal(adjoint, _grad(target, x, y, noise, "adjoint"))  # reproducible
    single = _grad(target, x[:1], y[:1], noise.select([0]), "adjoint")
    assert torch.allclose(single, adjoint[:1], atol=1e-5)  # a sample's gradient does not depend on the batch
    _, target, x, y, noise = _setup("dp_ddpm")
    with pytest.raises(ConfigError, match="has none"):
        _grad(target, x, y, noise, "adjoint")


def test_a_literature_row_finds_the_toy_effect_of_its_own_protocol() -> None:
    from bench.publish.effects import Effect, literature_effects

    def effect(entry: str, protocol: str) -> Effect:
        return Effect(entry, protocol, "pgd_eot", 0.3, 0.2, {"mean": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n": 128}, "a", "b")

    effects = [effect("diffpure", "pgd_eot, gradient=adjoint"), effect("diffpure", "pgd_eot, gradient=surrogate:5"),
               effect("diffpure", "aa_rand (as published)"), effect("gdmp", "pgd_eot, gradient=blind")]
    assert [e.protocol for e in literature_effects(effects, "diffpure", "adjoint", "AutoAttack min(rand, standard)")] == [
        "pgd_eot, gradient=adjoint"]
    assert [e.protocol for e in literature_effects(effects, "diffpure", "surrogate", "DiffHammer")] == [
        "pgd_eot, gradient=surrogate:5"]
    assert [e.protocol for e in literature_effects(effects, "diffpure", "exact", "AutoAttack rand, original (fra31)")] == [
        "aa_rand (as published)"]
    assert literature_effects(effects, "diffpure", "exact", "PGD-20 EoT-10") == []
    assert literature_effects(effects, None, "blind", "x") == [] and len(literature_effects(effects, "gdmp", "blind", "x")) == 1


@pytest.mark.parametrize("name, config", [("dp_ddpm", {}), ("rcg_purify", {}), ("coup", {}),
                                          ("gdmp", {"guidance": "mse"}), ("gdmp", {"guidance": "ssim"})])
def test_detach_guidance_drops_only_the_guidance_derivative(name: str, config: dict) -> None:
    """Unguided: the exact gradient. Guided: the gradient of the same chain with every guidance
    gradient replaced by its value as a constant (computed here by a purifier whose guidance is
    evaluated on a detached copy), which differs from the exact one."""
    from bench.core import guidance

    model, target, x, y, noise = _setup(name, **config)
    exact = _grad(target, x, y, noise, "exact")
    detached = _grad(target, x, y, noise, "detach_guidance")
    if name == "dp_ddpm":
        assert torch.allclose(detached, exact)
        return
    original_input, original_term = guidance.input_gradient, guidance.guidance_term

    def constant_input_gradient(objective, z):  # noqa: ANN001, ANN202
        return original_input(objective, z.detach())

    import importlib

    module = importlib.import_module(type(model.defense).__module__)
    patched = {"input_gradient": constant_input_gradient, "guidance_term": lambda g: g.detach()}
    saved = {k: getattr(module, k) for k in patched if hasattr(module, k)}
    try:
        for k in saved:
            setattr(module, k, patched[k])
        expected = _grad(target, x, y, noise, "exact")
    finally:
        for k, v in saved.items():
            setattr(module, k, v)
    assert guidance.input_gradient is original_input and guidance.guidance_term is original_term
    assert torch.allclose(detached, expected, atol=1e-12)
    assert not torch.allclose(detached, exact), "the guidance's second-order terms should matter"
    losses = {}
    for mode in ("exact", "detach_guidance"):  # the forward values are the real defense's in both
        target.gradient_mode = parse_gradient_mode(mode)
        _, losses[mode], _ = target.per_draw_gradients(x, y, noise, 1)
    assert torch.allclose(losses["exact"], losses["detach_guidance"], atol=1e-12)


def test_a_ranked_entry_with_a_stronger_approximate_record_is_flagged(tmp_path, capsys) -> None:
    """A White-box record that beats the ranked worst case on the same images (paired interval below
    zero; here an approximate-gradient mode) puts an "overestimate" flag beside the ranked row, on the
    site and in the README's table; without it, there is none."""
    import json

    from bench.harness.perf import write_synthetic_records
    from bench.publish.derive import Outcomes, derive
    from bench.publish.leaderboard import build_site, load_tracks
    from bench.publish.records import decode_preds, encode_preds, pred_width

    results = tmp_path / "results"
    write_synthetic_records(results, 60)
    ranked = [row.entry for t in load_tracks(results) if t.dataset == "toy" for row in t.ranked]
    assert ranked, "the synthetic records should rank some toy entry"
    exact = next(p for p in sorted(results.rglob("*__pgd_eot__white.json"))
                 if json.loads(p.read_text())["entry"] == ranked[0])
    data = json.loads(exact.read_text())
    data["attack"]["config"]["gradient"] = "detach_guidance"
    data["run_id"] = "detachedtwin"
    s, w = data["samples"], pred_width("toy")
    adv = decode_preds(s["adv_preds"], w)
    adv[:, :] = [[(y + 1) % 10] * adv.shape[1] for y in s["label"]]  # the approximation breaks every draw
    s["adv_preds"] = encode_preds(adv, w)
    derived = derive(Outcomes.from_predictions(s["label"], decode_preds(s["clean_preds"], w), adv,
                                               decode_preds(s["select_preds"], w)))
    data.update(robust=derived["robust"], rob_m=derived["rob_m"])
    s.update(derived["samples"])
    if data["robust"]["expected"]["acc"] == json.loads(exact.read_text())["robust"]["expected"]["acc"]:
        import pytest

        pytest.skip("the synthetic exact record already has zero robust accuracy")
    twin = exact.parent / "detached.json"
    twin.write_text(json.dumps(data))
    build_site(results, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count("overestimate: pgd_eot[gradient=detach_guidance] reaches 0.0 %") == 1
    from bench.publish.leaderboard import slugify

    entry_page = (tmp_path / "site" / "entries" / f"{slugify(ranked[0])}.html").read_text()
    assert "Overestimate</span>: <code>pgd_eot[gradient=detach_guidance]</code>" in entry_page
    from bench.cli.main import main

    track = next(t.table_id for t in load_tracks(results) if ranked[0] in [row.entry for row in t.ranked])
    assert main(["leaderboard", "table", "--records", str(results), "--track", track]) == 0
    table = capsys.readouterr().out
    assert f"(!) `{ranked[0]}`: overestimated — `pgd_eot[gradient=detach_guidance]` reaches 0.000" in table
    twin.unlink()
    build_site(results, tmp_path / "site")
    assert "overestimate:" not in (tmp_path / "site" / "index.html").read_text()
