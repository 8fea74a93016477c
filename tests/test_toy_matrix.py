"""Every registered defense x pgd_eot x setting runs end to end on the toy suite (tiny budgets)."""

import pytest
from sqlalchemy.orm import Session

from bench.core.defense import DEFENSES
from bench.harness.runner import RunRequest, create_run, execute_run
from bench.harness.store import Run, open_store

SETTINGS = ["white", "dw_fwd", "dw_both", "dw_semi:2"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    return open_store(str(tmp_path_factory.mktemp("matrix") / "r.sqlite"))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("defense", DEFENSES.names())
def test_defense_runs_on_the_toy_suite(defense: str, setting: str, engine) -> None:
    request = RunRequest(
        defense=defense, attack="pgd_eot", setting=setting, n_samples=2, batch_size=2, eval_draws=2,
        defense_options=dict(DEFENSES.get(defense).fast_options), attack_options={"steps": 1, "eot": 2},
    )
    run_id = create_run(engine, request)
    metrics = execute_run(engine, run_id)
    assert metrics["robust"]["n"] == 2
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run.status == "complete" and 0 <= run.robust_acc <= 1 and 0 <= run.clean_acc <= 1
