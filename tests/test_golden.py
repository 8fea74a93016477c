"""Our network modules reproduce the golden vectors of tests/fixtures (1e-4 relative),
proving that they load the original checkpoints' tensors correctly."""

from __future__ import annotations

import pytest
import torch

from tests.golden_rules import FIXTURES, original_state_dict

RULES = [("sin", "golden.pt"), ("hash", "golden_hashrule.pt")]


def relative_error(y: torch.Tensor, golden: torch.Tensor) -> float:
    return float((y.double() - golden.double()).abs().max() / golden.double().abs().max())


@pytest.mark.parametrize("rule, filename", RULES)
def test_ddpm_pesser_converter_reproduces_golden(rule: str, filename: str) -> None:
    from bench.zoo.nets.ddpm_unet import load_pesser_checkpoint

    folder = "ddpm_pesser_cifar10"
    golden = torch.load(FIXTURES / folder / filename, weights_only=True)
    model = load_pesser_checkpoint(original_state_dict(folder, rule))
    assert sum(p.numel() for p in model.parameters()) == 35_746_307
    with torch.no_grad():
        y = model(golden["x"], golden["t"]).sample
        y1 = model(golden["x_batch1"], golden["t_batch1"]).sample
        y2 = model(golden["x"][1:], golden["t"][1:]).sample
    assert relative_error(y, golden["y"]) < 1e-4
    assert relative_error(y1, golden["y_batch1"]) < 1e-4
    assert relative_error(y2, golden["y_batch1_second"]) < 1e-4


@pytest.mark.parametrize("rule, filename", RULES)
def test_ncsnpp_reproduces_golden(rule: str, filename: str) -> None:
    from bench.zoo.nets.ncsnpp import NCSNpp

    folder = "ncsnpp_ddpmpp_deep_cifar10"
    golden = torch.load(FIXTURES / folder / filename, weights_only=True)
    model = NCSNpp().eval()
    assert sum(p.numel() for p in model.parameters()) == 106_632_579
    model.load_state_dict(original_state_dict(folder, rule))  # strict: every name matches
    with torch.no_grad():
        y = model(golden["x"], golden["labels"])
        y1 = model(golden["x_batch1"], golden["labels_batch1"])
    assert relative_error(y, golden["y"]) < 1e-4
    assert relative_error(y1, golden["y_batch1"]) < 1e-4


def test_ncsnpp_parameter_order_matches_the_original() -> None:
    """score_sde keeps EMA weights as a list in parameters() order: ours must be the same."""
    import csv

    from bench.zoo.nets.ncsnpp import NCSNpp

    with open(FIXTURES / "ncsnpp_ddpmpp_deep_cifar10" / "parameters.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    ours = [(name, "x".join(map(str, p.shape))) for name, p in NCSNpp().named_parameters()]
    theirs = [(row["name"], row["shape"]) for row in rows]
    assert ours == theirs


@pytest.mark.parametrize("rule, filename", RULES)
def test_edm_songunet_reproduces_golden(rule: str, filename: str) -> None:
    from bench.zoo.nets.songunet import EDMPrecond

    folder = "edm_songunet_cifar10_vp"
    golden = torch.load(FIXTURES / folder / filename, weights_only=True)
    model = EDMPrecond().eval()
    assert sum(p.numel() for p in model.parameters()) == 55_733_891
    missing, unexpected = model.load_state_dict(original_state_dict(folder, rule), strict=False)
    assert not unexpected and all(name.endswith("resample_filter") for name in missing)  # exempt constants
    with torch.no_grad():
        d = model(golden["x"], golden["sigma"])
        f = model.model(golden["x"] / (0.25 + golden["sigma"].view(-1, 1, 1, 1) ** 2).sqrt(), golden["sigma"].log() / 4)
        d1 = model(golden["x_batch1"], golden["sigma_batch1"])
    assert relative_error(d, golden["y"]) < 1e-4
    assert relative_error(f, golden["debug_F_x"]) < 1e-4
    assert relative_error(d1, golden["y_batch1"]) < 1e-4


def test_pesser_file_converter_reproduces_golden(tmp_path) -> None:
    """The file-level converter (torch.load weights_only) on a state_dict saved in pesser's names."""
    from bench.zoo.converters import load_pesser_ddpm

    folder = "ddpm_pesser_cifar10"
    golden = torch.load(FIXTURES / folder / "golden.pt", weights_only=True)
    torch.save(original_state_dict(folder, "sin"), tmp_path / "ema_cifar10.ckpt")
    model = load_pesser_ddpm(tmp_path / "ema_cifar10.ckpt")
    with torch.no_grad():
        y = model(golden["x"], golden["t"]).sample
    assert relative_error(y, golden["y"]) < 1e-4
