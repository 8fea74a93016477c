"""glibc malloc tuning: applied by the CLI, recorded with the device, opt-out honoured."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from bench.core import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

PROBE = (
    "import json, sys\n"
    "from bench.core import allocator, provenance\n"
    "import torch\n"
    "applied = allocator.tune_glibc_malloc()\n"
    "print(json.dumps({'applied': applied, 'again': allocator.tune_glibc_malloc(),\n"
    "                  'device': provenance.device_description(torch.device('cpu'))}))\n"
)


def _probe(env_value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("BENCH_MALLOC_TUNING", None)
    if env_value is not None:
        env["BENCH_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, timeout=120)

    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt exists on glibc only")
def test_tuning_applies_every_setting_once_and_is_recorded_with_the_device() -> None:
    result = _probe(None)
    assert result["applied"] == {name: value for name, (_, value) in allocator.GLIBC_SETTINGS.items()}
    assert result["again"] == result["applied"]
    assert result["device"].endswith(" malloc=tuned")


def test_opt_out_leaves_glibc_defaults_and_says_so() -> None:
    result = _probe("0")
    assert result["applied"] == {}
    assert "malloc=tuned" not in result["device"]


def test_cli_tunes_before_running_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr("bench.cli.main.tune_glibc_malloc", lambda: calls.append("tuned") or {})
    from bench.cli.main import main

    assert main(["ls"]) == 0
    assert calls == ["tuned"]
