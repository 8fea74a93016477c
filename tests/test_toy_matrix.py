"""Every registered defense x pgd_eot x setting runs end to end on the toy suite (tiny budgets)."""

import pytest
from sqlalchemy.orm import Session

from bench.defense import DEFENSES
from bench.runner import RunRequest, create_run, execute_run
from bench.store import Run, open_store

# Cheap but structurally faithful options per defense (the same code paths as the defaults).
FAST_OPTIONS = {
    "dp_ddpm": {"nfe": "5"},
    "dp_ddim": {"nfe": "5"},
    "diffpure": {"dt": "0.025"},
    "diffpure_pc": {"dt": "0.025"},
    "gdmp": {"purify_step": "6", "iterations": "2", "paths": "2"},
    "dp_edm": {"num_steps": "6"},
    "dp_edm_ode": {"num_steps": "6"},
}
SETTINGS = ["white", "dw_fwd", "dw_both", "dw_semi:2"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    return open_store(str(tmp_path_factory.mktemp("matrix") / "r.sqlite"))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("defense", DEFENSES.names())
def test_defense_runs_on_the_toy_suite(defense: str, setting: str, engine) -> None:
    request = RunRequest(
        defense=defense, attack="pgd_eot", setting=setting, n_samples=2, batch_size=2, eval_draws=2,
        defense_options=FAST_OPTIONS.get(defense, {}), attack_options={"steps": 1, "eot": 2},
    )
    run_id = create_run(engine, request)
    metrics = execute_run(engine, run_id)
    assert metrics["robust"]["n"] == 2
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run.status == "complete" and 0 <= run.robust_acc <= 1 and 0 <= run.clean_acc <= 1
