"""`bench reproduce`: a paper table as a protocol file, planned, priced and run as a grid."""

from __future__ import annotations

import pytest
import torch

from bench.cli.main import main
from bench.core.errors import ConfigError, UnknownNameError
from bench.harness.reproduce import available, estimate, load_reproduction, plan
from tests.test_cifar_pipeline import cifar_cache  # noqa: F401  (fixture: original-format files, random weights)


def test_protocol_files_for_the_main_table_and_the_nfe_table() -> None:
    assert {"addt-table2-cifar10", "addt-table3-nfe"} <= set(available())
    table3 = plan(load_reproduction("addt-table3-nfe"))
    assert [(c.entry, c.norm) for c in table3[:4]] == [("dp_ddpm[nfe=5]", "linf"), ("dp_ddpm[nfe=5]", "l2"),
                                                      ("dp_ddpm_addt[nfe=5]", "linf"), ("dp_ddpm_addt[nfe=5]", "l2")]
    assert len(table3) == 20 and {c.request.n_samples for c in table3} == {1024}
    assert table3[-2].entry == "dp_ddpm_addt[nfe=100]" and table3[-2].reported == {"clean": "85.64", "robust": "51.46"}
    assert all(c.request.protocol == "paper" and c.request.dataset == "cifar10" for c in table3)


def test_dry_run_prices_a_cell_from_draws_and_network_calls(capsys) -> None:
    repro = load_reproduction("addt-table3-nfe")
    cells = {(c.entry, c.norm): c for c in plan(repro)}
    default = estimate(cells[("dp_ddpm[nfe=100]", "linf")], repro.gpu_ms_per_call)
    assert default["gradient_draws"] == 200 and default["network_calls"] == 101
    # the file's calibration: the paper's 5 h on four GPUs for this cell (at K = 1; here K = 10)
    assert 19 < default["gpu_hours"] < 23
    assert estimate(cells[("dp_ddpm[nfe=5]", "linf")], repro.gpu_ms_per_call)["gpu_hours"] < default["gpu_hours"] / 10
    assert main(["reproduce", "addt-table2-cifar10", "--dry-run", "--norms", "linf"]) == 0
    out = capsys.readouterr().out
    assert "12 cells" in out and "gdmp[guidance=ssim]" in out and "estimated total" in out and "GPU-hours" in out


def test_unknown_names_fail_with_the_valid_choices() -> None:
    with pytest.raises(UnknownNameError, match="Valid: addt-table2-cifar10, addt-table3-nfe"):
        load_reproduction("addt-table9")
    with pytest.raises(ConfigError, match="reports only l2, linf"):
        plan(load_reproduction("addt-table3-nfe"), norms=["l1"])


def test_a_protocol_runs_end_to_end_and_prints_reported_beside_measured(cifar_cache, capsys) -> None:  # noqa: F811
    from safetensors.torch import save_file

    from bench.zoo.nets.ddpm_unet import ddpm_cifar10_unet

    torch.manual_seed(1)  # a random "ADDT fine-tune" in the original format `bench addt train` writes
    save_file({k: v.contiguous() for k, v in ddpm_cifar10_unet().state_dict().items()},
              str(cifar_cache / "models" / "addt-ddpm-cifar10.safetensors"))
    db = f"sqlite:///{cifar_cache / 'repro.db'}"
    args = ["reproduce", "addt-table3-nfe", "--n-samples", "2", "--draws", "1", "--norms", "linf",
            "--defense-opt", "nfe=1", "--attack-opt", "steps=1", "--attack-opt", "eot=1", "--db", db]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dp_ddpm_addt[nfe=100]" in out and "85.64 / 51.46" in out and "(n=2, run " in out
    assert main(args) == 0  # again: every cell is complete and skipped
    assert "(n=2, run " in capsys.readouterr().out
