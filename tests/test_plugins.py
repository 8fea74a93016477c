"""The one plug-in loader: built-in packages and third-party packages found by entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.core.errors import PluginError
from bench.core.registry import Registry

PLUGIN = '''
from dataclasses import dataclass

from bench.core.defense import Defense, register_defense
from bench.core.noise import StreamSpec


@dataclass(frozen=True)
class NoiseConfig:
    strength: float = 0.1


@register_defense("{name}")
class ThirdPartyNoise(Defense):
    description = "a third-party test plug-in: adds Gaussian noise"
    config_cls = NoiseConfig

    def noise_spec(self, sample_shape):
        return {{"forward": StreamSpec(1, tuple(sample_shape))}}

    def purify(self, x, noise, checkpoint=False):
        return (x + self.config.strength * noise.step("forward", 0)).clamp(0, 1)

    @classmethod
    def pretrained(cls, dataset, config):
        return cls(config)

    @classmethod
    def for_testing(cls, config=None, channels=1, size=8):
        return cls(config or NoiseConfig())
'''


def _install(tmp_path: Path, defense_name: str) -> Path:
    """Build and install a throwaway distribution declaring a ``dbp_bench.defenses`` entry point
    into its own target folder (pip, no network); returns that folder."""
    source = tmp_path / "src"
    (source / "thirdparty_defense").mkdir(parents=True)
    (source / "thirdparty_defense" / "__init__.py").write_text(PLUGIN.format(name=defense_name))
    (source / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "thirdparty-defense"
        version = "0.0.1"

        [project.entry-points."dbp_bench.defenses"]
        noise = "thirdparty_defense"

        [tool.setuptools]
        packages = ["thirdparty_defense"]
    '''))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target), str(source)], check=True)
    return target


def _bench(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bench.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])


NETWORK_PLUGIN = '''
"""A plug-in that brings its own network and weights: one module plus its weights file."""
from dataclasses import dataclass

import torch
from torch import nn

from bench.core.defense import Defense, DefenseConfig, register_defense
from bench.core.noise import StreamSpec
from bench.zoo.hub import ModelFile, load_model, register_model_file

register_model_file(ModelFile(
    name="thirdparty-smoother", filename="smoother.safetensors", urls=(), description="a 3x3 smoothing conv",
    license="-", original_format="safetensors", package_file="thirdparty_net:smoother.safetensors",
    sha256="{sha}", converter="thirdparty_net:load_smoother"))


def load_smoother(path):
    from safetensors.torch import load_file

    net = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    net.load_state_dict(load_file(str(path)))
    return net


@dataclass(frozen=True)
class SmootherConfig(DefenseConfig):
    sigma: float = 0.2


@register_defense("thirdparty_smoother")
class Smoother(Defense):
    description = "noise, then a learned smoothing convolution (third-party test plug-in)"
    config_cls = SmootherConfig
    model_files = {{"toy": "thirdparty-smoother"}}
    toy_options = {{"sigma": 0.25}}

    def __init__(self, config, net):
        super().__init__(config)
        self.net = net.requires_grad_(False)

    def noise_spec(self, sample_shape):
        return {{"forward": StreamSpec(1, tuple(sample_shape))}}

    def purify(self, x, noise, checkpoint=False):
        return self.net(x + self.config.sigma * noise.step("forward", 0)).clamp(0, 1)

    @classmethod
    def pretrained(cls, dataset, config):
        return cls(config, load_model("thirdparty-smoother"))

    @classmethod
    def for_testing(cls, config=None, channels=1, size=8):
        net = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(net.weight, 1 / 9)
        return cls(config or SmootherConfig(), net)
'''


def _fake_install(tmp_path: Path, package: str, files: dict[str, bytes | str], entry: str) -> Path:
    """A package importable from ``tmp_path/site`` with a ``dbp_bench.defenses`` entry point, as
    pip would leave it (a ``.dist-info`` folder beside the package), without running pip."""
    site = tmp_path / "site"
    (site / package).mkdir(parents=True)
    for name, content in files.items():
        target = site / package / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    info = site / f"{package}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[dbp_bench.defenses]\n{entry} = {package}\n")
    return site


@pytest.mark.slow
def test_an_installed_package_brings_its_network_and_runs_on_the_toy_suite(tmp_path: Path) -> None:
    """No file of this repository changes: the plug-in's module declares its model file, its toy
    budgets are on its class, `bench run --dataset toy` works, and this repository's contract tests
    pick it up and pass."""
    import hashlib
    import io

    import torch
    from safetensors.torch import save

    weights = save({"weight": torch.full((1, 1, 3, 3), 1 / 9)})
    sha = hashlib.sha256(weights).hexdigest()
    site = _fake_install(tmp_path, "thirdparty_net", {"__init__.py": NETWORK_PLUGIN.format(sha=sha),
                                                       "smoother.safetensors": weights}, "smoother")
    run = _bench(site, "run", "--defense", "thirdparty_smoother", "--attack", "pgd_eot", "--dataset", "toy",
                 "--n-samples", "4", "--steps", "2", "--eot", "2", "--db", str(tmp_path / "r.sqlite"))
    assert run.returncode == 0, run.stderr
    assert "thirdparty_smoother vs pgd_eot" in run.stdout and "protocol toy" in run.stdout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/test_defenses.py", "tests/test_protocols.py", "-k", "thirdparty"],
                              env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert contract.returncode == 0 and " passed" in contract.stdout, contract.stdout + contract.stderr
    del io


@pytest.mark.slow
def test_the_scaffold_passes_the_contract_tests_as_generated(tmp_path: Path) -> None:
    """`bench new defense NAME --family F` for every family, installed as they are: this repository's
    contract tests cover them and pass, and the toy suite runs one."""
    from bench.scaffold import FAMILIES, defense_source

    files = {"__init__.py": "".join(f"from scaffolded.my_{f}_sampler import *  # noqa: F403\n" for f in FAMILIES)}
    files.update({f"my_{f}_sampler.py": defense_source(f"my_{f}_sampler", f) for f in FAMILIES})
    site = _fake_install(tmp_path, "scaffolded", files, "samplers")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    contract = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                               "tests/test_defenses.py", "tests/test_protocols.py", "-k", "_sampler"],
                              env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert contract.returncode == 0 and " passed" in contract.stdout, contract.stdout + contract.stderr
    assert all(f"[my_{f}_sampler]" in contract.stdout for f in FAMILIES), contract.stdout
    run = _bench(site, "run", "--defense", "my_ddpm_sampler", "--attack", "pgd_eot", "--n-samples", "2", "--steps", "1",
                 "--eot", "1", "--db", str(tmp_path / "r.sqlite"))
    assert run.returncode == 0, run.stderr


@pytest.mark.slow
def test_an_installed_package_registers_its_defense(tmp_path: Path) -> None:
    target = _install(tmp_path, "thirdparty_noise")
    listed = _bench(target, "ls", "defenses")
    assert listed.returncode == 0, listed.stderr
    assert "thirdparty_noise" in listed.stdout and "dp_ddpm" in listed.stdout
    card = _bench(target, "show", "thirdparty_noise")
    assert card.returncode == 0 and "a third-party test plug-in" in card.stdout, card.stderr


@pytest.mark.slow
def test_a_package_reusing_a_builtin_name_is_refused(tmp_path: Path) -> None:
    target = _install(tmp_path, "dp_ddpm")
    listed = _bench(target, "ls", "defenses")
    assert listed.returncode == 2
    assert "'dp_ddpm' is already registered" in listed.stderr and "entry point 'noise'" in listed.stderr


def test_registries_load_lazily_and_once() -> None:
    registry: Registry[type] = Registry("thing", builtin="json")  # any importable module stands in
    assert not registry._loaded
    assert registry.names() == [] and registry._loaded


def test_a_broken_plugin_module_names_its_source() -> None:
    registry: Registry[type] = Registry("thing", builtin="no_such_plugin_package")
    with pytest.raises(PluginError, match="package 'no_such_plugin_package'.*failed to import"):
        registry.names()


def test_no_core_module_imports_a_plugin_package() -> None:
    """The arrows point from plug-ins into ``bench``, never back (the loader imports by name)."""
    root = Path(__file__).resolve().parents[1] / "bench"
    offenders = [str(path.relative_to(root.parent)) for path in root.rglob("*.py")
                 if any(line.strip().startswith(("import defenses", "import attacks", "from defenses", "from attacks"))
                        for line in path.read_text().splitlines())]
    assert not offenders


def test_pr_check_smoke_runs_the_defenses_built_on_a_changed_file() -> None:
    """An edit to the shared DDPM base smoke-runs dp_ddpm and dp_ddim (and their ADDT twins), not
    only defenses whose own file changed; an edit outside every closure runs none."""
    from bench.harness.closure import defenses_to_smoke

    names = {name for name, _ in defenses_to_smoke(["defenses/ddpm_purifier.py"])}
    assert {"dp_ddpm", "dp_ddim", "dp_ddpm_addt", "dp_ddim_addt"} <= names and "dp_edm" not in names
    assert {"dp_edm", "dp_edm_ode"} <= {name for name, _ in defenses_to_smoke(["defenses/dp_edm.py"])}
    assert defenses_to_smoke(["README.md", "tests/test_api.py"]) == []
    assert "python -m bench.harness.closure $changed" in (Path(__file__).resolve().parents[1] / ".ci" / "pr-check").read_text()
