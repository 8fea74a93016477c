"""The Python API: :func:`evaluate` one defense against one attack, get a :class:`Result`.

``bench run`` is a thin layer over the same call (:func:`run_request`). A defense is a registered
name (``"dp_ddpm"``, ``"dp_ddpm[votes=10]"``), a :class:`bench.core.defense.Defense` instance, or
any callable / ``nn.Module`` mapping a batch in [0, 1] to a purified batch that draws its own
randomness (a *foreign* purifier, run under per-sample seeds by
:class:`bench.core.foreign.ForeignPurifier`).

Example::

    import bench
    result = bench.evaluate("dp_ddpm", "pgd_eot", n_samples=16)
    print(result)                 # clean and robust accuracy with 95% intervals, Rob(M)
    result.per_sample.head()      # one row per image: label, per-draw predictions, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.core.config import split_entry
from bench.core.defense import Defense
from bench.core.errors import ConfigError
from bench.harness.request import RunRequest
from bench.harness.summary import Accuracies, Interval, RobPoint, RunSummary

DefenseSpec = str | Defense | Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Result:
    """One finished evaluation.

    Attributes:
        run_id: the run's id in the store (``db``).
        defense, attack, setting, dataset: what was evaluated.
        n, draws: images and evaluation draws K per image.
        clean, robust: expected / worst-of-K / majority accuracy, each with its 95% interval.
        rob_m: Rob(M), M = 1..K (accuracy under M independent resubmissions).
        per_sample: a pandas DataFrame, one row per image (index, label, correct draws, the K
            predicted classes of the clean, adversarial and selection draws, perturbation norms,
            the attack's per-sample cost and verdict).
    """

    run_id: str
    defense: str
    attack: str
    setting: str
    dataset: str
    n: int
    draws: int
    clean: Accuracies
    robust: Accuracies
    rob_m: tuple[RobPoint, ...]
    per_sample: Any  # pandas.DataFrame
    summary: RunSummary = field(repr=False)
    _engine: Any = field(default=None, repr=False)
    _prepared: Any = field(default=None, repr=False)

    @property
    def clean_acc(self) -> Interval:
        """Expected clean accuracy over the K draws, with its 95% interval."""
        return self.clean.expected

    @property
    def robust_acc(self) -> Interval:
        """Expected robust accuracy over the K draws, with its 95% interval."""
        return self.robust.expected

    def __str__(self) -> str:
        worst = f"worst-of-{self.draws}"
        return (f"{self.defense} vs {self.attack} ({self.setting}, {self.dataset}), n={self.n} images x {self.draws} "
                f"draws, run {self.run_id}\n"
                f"  clean   expected {self.clean.expected}   {worst} {self.clean.worst}\n"
                f"  robust  expected {self.robust.expected}   {worst} {self.robust.worst}   "
                f"majority {self.robust.majority}")

    def to_record(self) -> dict[str, Any]:
        """The run's leaderboard record (a JSON-ready dict; registered defenses only)."""
        from sqlalchemy.orm import Session

        from bench.harness.store import get_run
        from bench.publish.records import record_from_run

        with Session(self._engine) as session:
            record = record_from_run(get_run(session, self.run_id))
        record.pop("_attack_label", None)
        return record

    def verify(self, samples: int = 4, seed: int = 0) -> list[int]:
        """Re-run ``samples`` of the images alone (a batch of their own) with the same defense,
        configs and seeds, and return the indices whose outcomes differ (empty: identical)."""
        import dataclasses
        import random

        indices = sorted(random.Random(seed).sample(list(self.per_sample["index"]), min(samples, self.n)))
        request = dataclasses.replace(self._prepared.request, sample_indices=indices, batch_size=len(indices))
        defense_object = self._prepared.parts.model.defense if ":" in self._prepared.defense_name else None
        again = run_request(request, db="sqlite://", defense_object=defense_object,
                            defense_name=self._prepared.defense_name)
        columns = ["label", "clean_preds", "adv_preds", "select_preds"]
        mine = self.per_sample.set_index("index").loc[indices, columns]
        theirs = again.per_sample.set_index("index").loc[indices, columns]
        return [i for i in indices if not mine.loc[i].equals(theirs.loc[i])]


def _resolve(defense: DefenseSpec, options: dict[str, Any]) -> tuple[str, Defense | None, str | None]:
    """(registry name, object or None, stored name or None) for a defense given any way."""
    from bench.core.foreign import ForeignPurifier

    if isinstance(defense, str):
        return defense, None, None
    if options:
        raise ConfigError("defense_options apply to registered defenses; configure an object before passing it")
    if isinstance(defense, ForeignPurifier):
        return "none", defense, f"foreign:{defense.config.label}"
    if isinstance(defense, Defense):
        return "none", defense, f"instance:{defense.name or type(defense).__name__}"
    if callable(defense):
        foreign = ForeignPurifier(defense)
        return "none", foreign, f"foreign:{foreign.config.label}"
    raise ConfigError(f"defense must be a registered name, a Defense or a callable purifier, not {type(defense).__name__}")


def evaluate(
    defense: DefenseSpec,
    attack: str = "pgd_eot",
    *,
    dataset: str = "toy",
    setting: str = "white",
    n_samples: int = 64,
    seed: int = 0,
    batch_size: int | None = None,
    draws: int | None = None,
    db: str | None = None,
    defense_options: dict[str, Any] | None = None,
    attack_options: dict[str, Any] | None = None,
    norm: str = "linf",
    eps: float | None = None,
    classifier: str | None = None,
    protocol: str | None = None,
    device: str = "cpu",
    sample_indices: list[int] | None = None,
    progress: Callable[[float, int], None] | None = None,
) -> Result:
    """Evaluate ``defense`` against ``attack`` on the first ``n_samples`` test images and store the run.

    Args:
        defense: a registered name (``"dp_ddpm"``, ``"dp_ddpm[votes=10]"``), a ``Defense``
            instance, or a callable / ``nn.Module`` purifier that draws its own randomness.
        attack: a registered attack (``bench ls attacks``).
        dataset: ``toy`` (default), ``cifar10`` or ``cifar100``.
        setting: ``white`` (default), ``dw_fwd``, ``dw_both`` or ``dw_semi:K``.
        n_samples: the first ``n_samples`` test images.
        seed: fixes every noise draw.
        batch_size: images per batch (default: all; results do not depend on it).
        draws: evaluation draws K per image (default: the protocol's, 10).
        db: a SQLAlchemy URL or SQLite file to store the run in (default: in memory).
        defense_options: options over the protocol's budgets (registered defenses only).
        attack_options: attack options over the protocol's budgets.
        norm: ``linf`` (default) or ``l2``.
        eps: the perturbation budget (default: the dataset's).
        classifier: a classifier spec (default: the dataset's).
        protocol: the budgets (default: the dataset's protocol; ``paper`` for the papers').
        device: a torch device.
        sample_indices: explicit test indices instead of the first ``n_samples``.
        progress: ``callback(images done, total)``.
    """
    from bench.protocols import protocol_for

    if isinstance(defense, str):
        name, entry_options = split_entry(defense)
        defense_object, stored_name = None, None
    else:
        name, defense_object, stored_name = _resolve(defense, defense_options or {})
        entry_options = {}
    request = RunRequest(
        defense=name, attack=attack, setting=setting, norm=norm, eps=eps, dataset=dataset, classifier=classifier,
        n_samples=n_samples, seed=seed,
        eval_draws=draws if draws is not None else protocol_for(dataset, protocol).eval_draws,
        batch_size=batch_size or (len(sample_indices) if sample_indices else n_samples),
        defense_options={**entry_options, **(defense_options or {})} if defense_object is None else {},
        attack_options=dict(attack_options or {}), device=device, protocol=protocol, sample_indices=sample_indices,
    )
    return run_request(request, db=db or "sqlite://", defense_object=defense_object, defense_name=stored_name,
                       progress=progress)


def run_request(request: RunRequest, db: str | None = None, *, defense_object: Defense | None = None,
                defense_name: str | None = None, progress: Callable[[float, int], None] | None = None,
                executor: str = "local", address: str | None = None,
                on_start: Callable[[str], None] | None = None) -> Result:
    """Validate and build ``request`` (nothing is stored if it is refused), store it as a run in
    ``db``, evaluate it and return its :class:`Result`. ``on_start(run_id)`` is called once the run
    is stored (``bench run`` prints the resume hint there)."""
    from bench.harness.components import prepare_run
    from bench.harness.executors import execute
    from bench.harness.runner import store_run
    from bench.harness.store import open_store

    prepared = prepare_run(request, defense_object=defense_object, defense_name=defense_name)
    engine = open_store(db)
    run_id = store_run(engine, prepared)
    if on_start is not None:
        on_start(run_id)
    if executor != "local" and defense_object is not None:
        raise ConfigError("a defense given as a Python object runs in this process (executor local)")
    from bench.harness.store import store_url

    execute(engine, run_id, executor, db_url=store_url(db), address=address, progress=progress,
            parts=prepared.parts if executor == "local" else None)
    return load_result(engine, run_id, prepared)


def load_result(engine: Any, run_id: str, prepared: Any = None) -> Result:
    """The :class:`Result` of a complete run in the store ``engine``."""
    import pandas as pd
    from sqlalchemy.orm import Session

    from bench.harness.store import get_run

    with Session(engine) as session:
        run = get_run(session, run_id)
        summary = RunSummary.from_metrics(run.metrics)
        rows = []
        for r in sorted(run.samples, key=lambda r: r.position):
            info = r.attack_info or {}
            rows.append({"index": r.sample_index, "label": r.label,
                         "clean_correct": sum(int(p == r.label) for p in r.clean_preds),
                         "adv_correct": sum(int(p == r.label) for p in r.adv_preds),
                         "clean_preds": list(r.clean_preds), "adv_preds": list(r.adv_preds),
                         "select_preds": list(r.select_preds or []), "linf": r.linf_norm, "l2": r.l2_norm,
                         "gradient_draws": info.get("gradient_draws"), "forward_draws": info.get("forward_draws"),
                         "attack_reported": info.get("reported_correct")})
        return Result(run_id=run.id, defense=run.defense, attack=run.attack, setting=run.setting, dataset=run.dataset,
                      n=summary.n, draws=summary.draws, clean=summary.clean, robust=summary.robust,
                      rob_m=summary.rob_m, per_sample=pd.DataFrame(rows), summary=summary, _engine=engine,
                      _prepared=prepared)
