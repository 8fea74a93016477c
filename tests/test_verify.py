"""`bench verify`: re-running a record's samples from its stored configs and seeds."""

import json
import subprocess
import sys
from pathlib import Path

from bench.harness.replay import verify
from bench.publish.records import load_record_file

RECORD = Path(__file__).resolve().parents[1] / "results/toy/linf-0.25/toy/none__pgd_eot__white.json"


def _fabricated(tmp_path: Path) -> Path:
    """The genuine record with sample 5 claimed robust under every draw (its per-draw classes set to
    its label), every summary re-derived: a valid record whose outcomes only a re-run can refute."""
    from bench.publish.derive import Outcomes, derive
    from bench.publish.records import dumps_record, pred_width

    data = json.loads(RECORD.read_text())
    s, width = data["samples"], pred_width("toy")
    s["adv_preds"][5] = str(s["label"][5]).rjust(width, "0") * data["eval_draws"]
    decoded = {name: [[int(row[i:i + width]) for i in range(0, len(row), width)] for row in s[name]]
               for name in ("clean_preds", "adv_preds", "select_preds")}
    derived = derive(Outcomes.from_predictions(s["label"], decoded["clean_preds"], decoded["adv_preds"],
                                               decoded["select_preds"], s.get("reported"), s.get("gradient_draws"),
                                               s.get("forward_draws")))
    data.update({k: v for k, v in derived.items() if k not in ("samples", "cost")})
    s.update(derived["samples"])
    assert s["adv_correct"][5] == data["eval_draws"]
    path = tmp_path / RECORD.name
    path.write_text(dumps_record(data) + "\n")
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
    assert cli.returncode == 1 and "sample 5: adv_correct, adv_preds differ; record says" in cli.stderr, cli.stdout + cli.stderr


def _shuffled(record_path: Path, tmp_path: Path, device: str) -> Path:
    """The record with samples 0 and 1's outcomes swapped (every summary re-derived, so it stays a
    valid record) and a device string of the submitter's choosing."""
    from bench.publish.derive import Outcomes, derive
    from bench.publish.records import dumps_record

    data = json.loads(record_path.read_text())
    s = data["samples"]
    for name in ("clean_preds", "adv_preds", "select_preds", "gradient_draws", "forward_draws", "reported"):
        if s.get(name) is not None:
            s[name][0], s[name][1] = s[name][1], s[name][0]
    labels = s["label"]
    for name in ("clean_preds", "adv_preds", "select_preds"):  # keep each sample's draws relative to its own label
        for i, j in ((0, 1), (1, 0)):
            s[name][i] = s[name][i].replace(str(labels[j]), str(labels[i]))
    decoded = {name: [[int(c) for c in row] for row in s[name]] for name in ("clean_preds", "adv_preds", "select_preds")}
    derived = derive(Outcomes.from_predictions(labels, decoded["clean_preds"], decoded["adv_preds"],
                                               decoded["select_preds"], s.get("reported"), s.get("gradient_draws"),
                                               s.get("forward_draws")))
    data.update({k: v for k, v in derived.items() if k not in ("samples", "cost")})
    data["cost"].update(derived.get("cost", {}))
    s.update(derived["samples"])
    data["cost"]["device"] = device
    path = tmp_path / record_path.name
    path.write_text(dumps_record(data) + "\n")
    return path


def test_verify_fails_a_shuffled_toy_record_whatever_device_it_claims(exported_records, tmp_path: Path) -> None:
    _, paths = exported_records
    path = _shuffled(paths[0], tmp_path, device="cuda:NVIDIA H100 80GB HBM3")
    record = load_record_file(path)  # valid: its summaries follow from its (shuffled) outcomes
    result = verify(record, str(path), indices=[0, 1])
    assert result.strict and not result.passed and {s.index for s, _ in result.mismatches} <= {0, 1}
    report = tmp_path / "report.json"
    cli = subprocess.run([sys.executable, "-m", "bench.cli.main", "verify", str(path), "--samples", "6",
                          "--report", str(report)], capture_output=True, text=True)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    entry = json.loads(report.read_text())["records"][0]
    assert entry["checked"] == 6 and entry["identical"] < 6 and entry["strict"]


def test_verify_default_catches_five_percent_edits_with_probability_095() -> None:
    from bench.harness.replay import detection_power, detection_samples

    for n in (64, 256, 600):
        s = detection_samples(n)
        assert detection_power(n, s) >= 0.95 > detection_power(n, s - 1)
    assert detection_samples(256) == 52
