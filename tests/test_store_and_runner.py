"""End-to-end runs on the toy suite (small settings), storage, resume and bad input."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.core.defense import DEFENSES
from defenses.ddpm_purifier import TruncatedDiffusionConfig
from bench.core.errors import ConfigError, NonFiniteOutputError, StoreError
from bench.harness.runner import RunRequest, create_run, execute_run
from bench.harness.store import Run, SampleResult, open_store

SMALL = dict(n_samples=6, batch_size=2, eval_draws=3, defense_options={"nfe": "5"}, attack_options={"steps": 2, "eot": 2})


def _request(**overrides) -> RunRequest:
    values = dict(defense="dp_ddpm", attack="pgd_eot", **SMALL)
    values.update(overrides)
    return RunRequest(**values)


def _per_sample(engine, run_id):
    with Session(engine) as session:
        rows = session.scalars(select(SampleResult).where(SampleResult.run_id == run_id).order_by(SampleResult.position))
        return [(r.sample_index, r.label, r.clean_preds, r.adv_preds, round(r.linf_norm, 6)) for r in rows]


def test_run_is_stored_with_reproducibility_metadata(tmp_path: Path) -> None:
    engine = open_store(str(tmp_path / "r.sqlite"))
    run_id = create_run(engine, _request())
    metrics = execute_run(engine, run_id)
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run.status == "complete" and run.n_samples == 6 and run.sample_indices == list(range(6))
        assert run.defense_config == {"votes": 1, "t_star": 100, "nfe": 5, "num_train_timesteps": 1000}
        assert run.attack_config["eps"] == 0.25 and run.attack_config["steps"] == 2
        assert run.package_versions["torch"] and run.device.startswith("cpu") and run.nfe == 5
        assert 0 <= run.robust_ci_low <= run.robust_acc <= run.robust_ci_high <= 1
        assert run.wall_seconds > 0
    rows = _per_sample(engine, run_id)
    assert len(rows) == 6 and all(len(r[2]) == 3 and len(r[3]) == 3 for r in rows)
    # Rob(M) for M = 1..K (Rob(1) = expected, Rob(K) = worst-of-K) and the attack's cost per sample
    curve = metrics["rob_m"]["adv"]
    assert [p["m"] for p in curve] == [1, 2, 3]
    assert abs(curve[0]["acc"] - metrics["robust"]["expected"]["acc"]) < 1e-6
    assert abs(curve[-1]["acc"] - metrics["robust"]["worst"]["acc"]) < 1e-6
    assert metrics["cost_per_sample"]["gradient_draws"] == 2 * 2  # steps x EoT, counted by the target
    assert all(r[4] <= 0.25 + 1e-6 for r in rows)
    assert metrics["robust"]["n"] == 6


def test_resume_after_interruption_gives_identical_results(tmp_path: Path) -> None:
    engine = open_store(str(tmp_path / "r.sqlite"))
    reference = create_run(engine, _request(seed=5))
    execute_run(engine, reference)

    interrupted = create_run(engine, _request(seed=5))
    calls = []

    def stop_after_first_batch(done: int, total: int) -> None:
        calls.append(done)
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_run(engine, interrupted, progress=stop_after_first_batch)
    with Session(engine) as session:
        assert session.get(Run, interrupted).status == "interrupted"
    assert len(_per_sample(engine, interrupted)) == 2
    execute_run(engine, interrupted)
    assert _per_sample(engine, interrupted) == _per_sample(engine, reference)


@pytest.mark.parametrize("attack, options", [("pgd_eot", {"steps": 2, "eot": 2}),
                                             ("aa_rand_fixed", {"n_iter": 2, "eot": 2, "eval_draws": 2})])
def test_progress_moves_inside_a_batch(tmp_path: Path, attack: str, options: dict) -> None:
    """A one-batch run reports fractional progress while its batch runs (so the bar has an ETA
    before the batch ends), never goes backwards, and ends at the total."""
    engine = open_store(str(tmp_path / "r.sqlite"))
    run_id = create_run(engine, _request(attack=attack, attack_options=options, n_samples=4, batch_size=4))
    calls: list[float] = []
    execute_run(engine, run_id, progress=lambda done, total: calls.append(done))
    inside = [c for c in calls if 0 < c < 4]
    assert len(inside) >= 3 and calls == sorted(calls) and calls[-1] == 4


def test_results_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    engine = open_store(str(tmp_path / "r.sqlite"))
    a = create_run(engine, _request(batch_size=2, setting="dw_both", defense="dp_ddim"))
    b = create_run(engine, _request(batch_size=3, setting="dw_both", defense="dp_ddim"))
    execute_run(engine, a)
    execute_run(engine, b)
    assert _per_sample(engine, a) == _per_sample(engine, b)


def test_not_a_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are my notes, not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="is not an SQLite database, so it is not a bench store; it was left untouched"):
        open_store(str(path))
    assert path.read_bytes() == before


def test_too_many_samples_is_a_clear_error(tmp_path: Path) -> None:
    engine = open_store(str(tmp_path / "r.sqlite"))
    with pytest.raises(ConfigError, match="--n-samples 601 .* holds 600 images"):
        create_run(engine, _request(n_samples=601))
    with Session(engine) as session:
        assert session.scalars(select(Run)).first() is None, "nothing is stored for a rejected run"


@dataclass(frozen=True)
class NanConfig(TruncatedDiffusionConfig):
    poisoned_pixel_sum: float = -1.0


_dp_ddim = DEFENSES.get("dp_ddim")


class NanDefense(_dp_ddim):  # type: ignore[misc, valid-type]
    """dp_ddim that returns NaN for the input whose pixel sum equals ``poisoned_pixel_sum``."""

    description = "test only"
    config_cls = NanConfig

    def purify(self, x, noise, checkpoint=False):
        out = super().purify(x, noise, checkpoint)
        poisoned = (x.flatten(1).sum(1) - self.config.poisoned_pixel_sum).abs() < 1e-4
        return torch.where(poisoned.view(-1, 1, 1, 1), torch.full_like(out, float("nan")), out)


@pytest.fixture
def nan_defense():
    NanDefense.name = "test_nan_defense"
    DEFENSES.register("test_nan_defense")(NanDefense)
    yield
    DEFENSES.unregister("test_nan_defense")


def test_nan_purification_stops_the_run_and_names_the_sample(tmp_path: Path, nan_defense: None) -> None:
    from bench.zoo.datasets import load_test_split

    pixel_sum = float(load_test_split("toy").images[3].sum())
    engine = open_store(str(tmp_path / "r.sqlite"))
    run_id = create_run(engine, _request(defense="test_nan_defense", defense_options={"nfe": "5", "poisoned_pixel_sum": str(pixel_sum)},
                                      protocol="paper"))  # a test-only plug-in: the toy protocol does not list it
    with pytest.raises(NonFiniteOutputError, match=r"'test_nan_defense' produced NaN/Inf .* \[3\]"):
        execute_run(engine, run_id)
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run.status == "failed" and "NaN" in run.error and run.robust_acc is None
    assert [r[0] for r in _per_sample(engine, run_id)] == [0, 1], "only the batches before the NaN are stored"


def test_runs_store_the_selection_draws_beside_the_evaluation_draws(tmp_path: Path) -> None:
    engine = open_store(str(tmp_path / "r.sqlite"))
    run_id = create_run(engine, _request())
    execute_run(engine, run_id)
    with Session(engine) as session:
        rows = session.scalars(select(SampleResult).where(SampleResult.run_id == run_id)).all()
        assert all(len(r.select_preds) == len(r.adv_preds) == 3 for r in rows)


def test_a_store_from_before_the_selection_draws_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    open_store(str(path)).dispose()
    connection = sqlite3.connect(path)
    connection.execute("ALTER TABLE sample_results DROP COLUMN select_preds")
    connection.commit()
    connection.close()
    engine = open_store(str(path))
    run_id = create_run(engine, _request(n_samples=2, batch_size=2))
    execute_run(engine, run_id)
    assert len(_per_sample(engine, run_id)) == 2
