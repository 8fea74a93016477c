"""`bench verify`: re-running a record's samples from its stored configs and seeds."""

import json
import subprocess
import sys
from pathlib import Path

from bench.core.metrics import wilson_interval
from bench.harness.replay import verify
from bench.publish.records import load_record_file

RECORD = Path(__file__).resolve().parents[1] / "results/toy/linf-0.25/toy/none__pgd_eot__white.json"


def _fabricated(tmp_path: Path) -> Path:
    """The genuine record with sample 5 claimed robust under every draw, its accuracies made consistent."""
    data = json.loads(RECORD.read_text())
    data["samples"]["adv_correct"][5] = data["eval_draws"]
    n, k = data["dataset"]["n_samples"], data["eval_draws"]
    acc = sum(data["samples"]["adv_correct"]) / (n * k)
    low, high = wilson_interval(acc, n)
    data["robust"]["expected"] = {"acc": acc, "ci_low": low, "ci_high": high}
    data.pop("rob_m", None)
    path = tmp_path / RECORD.name
    path.write_text(json.dumps(data))
    return path


def test_verify_passes_on_a_genuine_record() -> None:
    record = load_record_file(RECORD)
    result = verify(record, str(RECORD), samples=3, seed=7)
    assert len(result.indices) == 3 and not result.mismatches and result.agreement == 1.0
    assert verify(record, str(RECORD), samples=3, seed=7).indices == result.indices  # the seed fixes the subset


def test_verify_fails_on_edited_per_sample_outcomes(tmp_path: Path) -> None:
    path = _fabricated(tmp_path)
    result = verify(load_record_file(path), str(path), indices=[4, 5])
    assert [stated.index for stated, _ in result.mismatches] == [5]
    cli = subprocess.run([sys.executable, "-m", "bench.cli.main", "verify", str(path), "--samples", "256"],
                         capture_output=True, text=True)
    assert cli.returncode == 1 and "sample 5: record says" in cli.stderr, cli.stdout + cli.stderr
