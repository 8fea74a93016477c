"""Paired comparisons: `bench compare` and the paired bootstrap behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli.main import main
from bench.core.errors import ConfigError
from bench.core.metrics import paired_difference
from bench.harness.compare import compare, load_evaluation

RESULTS = Path(__file__).resolve().parents[1] / "results" / "toy" / "linf-0.25"


def test_paired_bootstrap_is_reproducible_and_covers_the_mean() -> None:
    import random

    rng = random.Random(0)
    a = [rng.random() for _ in range(50)]
    b = [x - 0.1 + rng.gauss(0, 0.05) for x in a]
    first, second = paired_difference(a, b, seed=3), paired_difference(a, b, seed=3)
    assert first == second
    assert first["ci_low"] < first["mean"] < first["ci_high"] and first["ci_low"] > 0
    same = paired_difference(a, a)  # identical on every image: never a zero-width interval
    from bench.core.metrics import wilson_interval

    bound = 2 * wilson_interval(0.0, 50)[1]
    assert same["mean"] == 0.0 and same["ci_low"] == -bound and same["ci_high"] == bound and bound > 0


def test_paired_bootstrap_equals_scipys_percentile_bootstrap() -> None:
    """The shared-resample implementation gives scipy.stats.bootstrap's interval (same seed)."""
    import random

    import numpy as np
    from scipy.stats import bootstrap

    rng = random.Random(1)
    a = [float(rng.randint(0, 10)) / 10 for _ in range(64)]
    b = [min(1.0, max(0.0, x + rng.choice([-0.2, -0.1, 0.0, 0.1]))) for x in a]
    ours = paired_difference(a, b, resamples=2000, seed=5)
    theirs = bootstrap((np.array(a), np.array(b)), lambda u, v, axis=-1: np.mean(u - v, axis=axis), paired=True,
                       vectorized=True, n_resamples=2000, method="percentile", rng=np.random.default_rng(5))
    assert np.allclose([ours["ci_low"], ours["ci_high"]], theirs.confidence_interval, atol=1e-12)


def test_pairing_needs_the_same_images() -> None:
    from dataclasses import replace

    ddpm = load_evaluation(str(RESULTS / "dp_ddpm__pgd_eot__white.json"), None)
    fewer = replace(ddpm, indices=ddpm.indices[:-1], clean=ddpm.clean[:-1], robust=ddpm.robust[:-1])
    reordered = replace(ddpm, indices=ddpm.indices[::-1], clean=ddpm.clean[::-1], robust=ddpm.robust[::-1])
    for other in (fewer, reordered):
        with pytest.raises(ConfigError, match="different images"):
            compare(ddpm, other)
    assert compare(ddpm, ddpm)["n"] == len(ddpm.indices)


def test_bench_compare_on_two_records(capsys: pytest.CaptureFixture) -> None:
    a, b = RESULTS / "dp_ddpm_addt__pgd_eot__white.json", RESULTS / "dp_ddpm__pgd_eot__white.json"
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "paired over 256 images (same seed and K" in out and "robust" in out and "[" in out
