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
