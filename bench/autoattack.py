"""AutoAttack's APGD on a stochastic defense, with the noise contract and the selection rules.

The APGD iterations are pyautoattack's own ``APGDAttack.attack_single_run`` (unchanged, not
copied). What is written here is what AutoAttack does *around* it — which points to attack,
which candidate to keep — because that is exactly where the original is wrong for stochastic
defenses (ADDT paper Appendix J; fra31/auto-attack PRs #104/#105):

- :func:`select_original` reproduces ``AutoAttack(version='rand')`` (autoattack.py L125-231,
  autopgd_base.py ``perturb``): one stochastic forward pass decides the clean accuracy, which
  points APGD attacks, and whether a candidate counts as adversarial.
- :func:`select_fixed` is the fix: clean inputs and every candidate are judged by their
  expected accuracy over M noise draws (stacked into one batch); a candidate replaces the
  current point only if its expected accuracy is lower; points still above zero go on to the
  next attack, the others stop early.

We call ``attack_single_run`` directly (rather than ``AutoAttack.run_standard_evaluation``)
because that is the only APGD entry point that never sub-selects rows internally, so every
model call knows which dataset samples its rows are and can draw their per-sample noise.
APGD's random start, which the original draws from the global RNG for the whole batch, is
drawn per sample from the run's noise source with the same distribution (``x_init``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bench.target import StochasticTarget

log = logging.getLogger(__name__)

APGD_LOSSES = {"apgd-ce": "ce", "apgd-dlr": "dlr"}
QUERY_STEP_BASE = 1_000_000  # attacker-query noise keys live apart from PGD's step keys


class AttackerQueries(nn.Module):
    """The defended classifier as APGD queries it: ``forward(x) -> logits`` for the rows
    ``self.ids`` (dataset indices), each call under fresh attacker noise of the setting.

    Calls are grouped in blocks of ``eot`` (APGD's EoT loop): call ``c`` uses the setting's
    gradient sample ``c % eot`` of block ``c // eot`` — fresh noise per call under ``white``,
    the known noise under ``dw_both``, the K known sets in turn under ``dw_semi:K``.
    With ``judge="mean"`` the last call of each block returns, as its *value*, the log of the
    mean predictive distribution over the block's draws (its gradient is still the last
    draw's), so APGD's "best so far" bookkeeping judges an iterate by all its EoT draws
    rather than by the last one alone.
    """

    def __init__(self, target: StochasticTarget, eot: int, judge: Literal["last", "mean"] = "last") -> None:
        super().__init__()
        self.target, self.eot, self.judge = target, eot, judge
        self.ids: list[int] = []
        self.calls = 0  # global over the attack, so no two calls share noise
        self.block: list[torch.Tensor] = []

    def start(self, ids: list[int]) -> None:
        """Rows of the next ``attack_single_run`` are the samples ``ids``; a new EoT block starts."""
        self.ids, self.block = list(ids), []
        self.calls += (-self.calls) % self.eot  # align blocks with APGD's EoT loops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.ids):
            raise RuntimeError(f"APGD queried {x.shape[0]} rows, expected the {len(self.ids)} rows it was given")
        target = self.target
        streams = target.streams(x)
        step, draw = QUERY_STEP_BASE + self.calls // self.eot, self.calls % self.eot
        self.calls += 1
        keys = target.setting.attack_keys(streams, step, draw)
        noise = target.noise.batch(target.model.defense.noise_spec(tuple(x.shape[1:])), self.ids,
                                   [keys] * len(self.ids)).to(x.device, x.dtype)
        logits = target.model(x, noise, self.ids, checkpoint=target.grad_plan.checkpoint)
        if self.judge == "last" or self.eot == 1:
            return logits
        self.block.append(torch.log_softmax(logits.detach(), dim=-1))
        if len(self.block) < self.eot:
            return logits
        mean_log_probs = torch.logsumexp(torch.stack(self.block), dim=0) - torch.log(torch.tensor(float(self.eot)))
        self.block = []
        return logits + (mean_log_probs - logits).detach()


@dataclass
class APGDRunner:
    """One pyautoattack ``APGDAttack`` configured like ``AutoAttack(version='rand')``:
    1 restart, ``n_iter`` iterations, ρ 0.75, EoT ``eot``; ``loss`` set per attack."""

    target: StochasticTarget
    norm: str
    eps: float
    n_iter: int
    eot: int
    judge: Literal["last", "mean"] = "last"

    def __post_init__(self) -> None:
        from pyautoattack.autopgd_base import APGDAttack

        self.queries = AttackerQueries(self.target, self.eot, self.judge)
        self.apgd = APGDAttack(self.queries, n_iter=self.n_iter, norm={"linf": "Linf", "l2": "L2"}[self.norm],
                               n_restarts=1, eps=self.eps, seed=0, loss="ce", eot_iter=self.eot, rho=0.75)
        # pyautoattack logs through its own logger only for DLR zero-gradient warnings
        self.apgd.logger = logging.getLogger("pyautoattack")

    def random_start(self, x: torch.Tensor, ids: list[int], attack: str) -> torch.Tensor:
        """APGD's start x + ε·normalize(t) (t uniform in [-1, 1] for ℓ∞, Gaussian for ℓ2),
        with t drawn per sample from the run's noise source."""
        draws = []
        for sid in ids:
            generator = self.target.noise.generator(sid, "apgd-start", attack)
            t = torch.rand(x.shape[1:], generator=generator) * 2 - 1 if self.norm == "linf" else torch.randn(
                x.shape[1:], generator=generator)
            draws.append(t)
        t = torch.stack(draws).to(x.device, x.dtype)
        return (x + self.eps * self.apgd.normalize(t)).clamp(0, 1)

    def run(self, attack: str, x: torch.Tensor, y: torch.Tensor, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """APGD ``attack`` on rows ``x`` (samples ``ids``): ``(x_best_adv, fooled)`` where
        ``fooled`` is APGD's own verdict (some iterate fooled the judged prediction)."""
        self.apgd.loss = APGD_LOSSES[attack]
        self.apgd.init_hyperparam(x)
        self.queries.start(ids)
        x_init = self.random_start(x, ids, attack)
        with torch.enable_grad():
            _, acc, _, x_best_adv = self.apgd.attack_single_run(x, y, x_init=x_init)
        return x_best_adv.detach(), acc == 0


def expected_correct(target: StochasticTarget, x: torch.Tensor, y: torch.Tensor, ids: list[int],
                     draws: int, round_index: int) -> torch.Tensor:
    """Attacker-side expected accuracy of each row over ``draws`` noise draws (B,), the draws
    stacked into the batch. Keys are attacker keys (never the evaluation's): under ``white``
    fresh noise, under ``dw_both`` the known noise (one draw), under ``dw_semi:K`` all K sets."""
    sub = _subtarget(target, ids)
    streams = sub.streams(x)
    n = sub.setting.attack_draws(draws)
    step = 2 * QUERY_STEP_BASE + round_index
    noise = sub._stacked_noise(x, n, lambda sid, d: sub.setting.attack_keys(streams, step, d))
    logits = sub.logits_with_noise(x, noise, n)  # (n, B, classes)
    return (logits.argmax(-1) == y.unsqueeze(0)).float().mean(0)


def single_draw_correct(target: StochasticTarget, x: torch.Tensor, y: torch.Tensor, ids: list[int],
                        round_index: int) -> torch.Tensor:
    """One stochastic forward pass (the original AutoAttack's check): (B,) bool."""
    return expected_correct(target, x, y, ids, 1, round_index) > 0.5


def _subtarget(target: StochasticTarget, ids: list[int]) -> StochasticTarget:
    return StochasticTarget(target.model, target.setting, target.noise, ids, target.grad_plan, target.eval_plan)


@dataclass
class SelectionReport:
    """What the attack itself concluded per sample (stored beside the harness's evaluation)."""

    reported_correct: list[float]  # original: 0/1 flag; fixed: expected accuracy over M draws
    chosen_by: list[str]  # "clean" or the attack whose candidate was kept

    def rows(self) -> list[dict[str, Any]]:
        return [{"reported_correct": c, "chosen_by": a} for c, a in zip(self.reported_correct, self.chosen_by)]


def select_original(runner: APGDRunner, attacks: tuple[str, ...], x: torch.Tensor, y: torch.Tensor,
                    ids: list[int]) -> tuple[torch.Tensor, SelectionReport]:
    """AutoAttack ``rand`` as published: every decision from one stochastic forward pass."""
    target = runner.target
    x_adv = x.clone()
    robust = single_draw_correct(target, x, y, ids, 0)
    chosen = ["clean"] * len(ids)
    for number, attack in enumerate(attacks, start=1):
        rows = robust.nonzero().flatten().tolist()
        if not rows:
            break
        sub_ids = [ids[r] for r in rows]
        x_sub, y_sub = x[rows], y[rows]
        # APGD.perturb: another single draw decides which of these it attacks at all
        to_fool = [r for r, ok in zip(rows, single_draw_correct(target, x_sub, y_sub, sub_ids, 10 * number).tolist()) if ok]
        adv_sub = x_sub.clone()
        if to_fool:
            positions = [rows.index(r) for r in to_fool]
            best, fooled = runner.run(attack, x[to_fool], y[to_fool], [ids[r] for r in to_fool])
            for k, p in enumerate(positions):
                if fooled[k]:
                    adv_sub[p] = best[k]
        # run_standard_evaluation: one more draw decides whether the candidate counts
        still = single_draw_correct(target, adv_sub, y_sub, sub_ids, 10 * number + 1)
        for k, r in enumerate(rows):
            if not still[k]:
                robust[r] = False
                x_adv[r] = adv_sub[k]
                chosen[r] = attack
    return x_adv, SelectionReport([float(v) for v in robust.tolist()], chosen)


def select_fixed(runner: APGDRunner, attacks: tuple[str, ...], x: torch.Tensor, y: torch.Tensor,
                 ids: list[int], draws: int) -> tuple[torch.Tensor, SelectionReport]:
    """The fixed selection: expected accuracy over ``draws`` draws decides everything."""
    target = runner.target
    x_adv = x.clone()
    current = expected_correct(target, x, y, ids, draws, 0)
    chosen = ["clean"] * len(ids)
    for number, attack in enumerate(attacks, start=1):
        rows = (current > 0).nonzero().flatten().tolist()  # points at zero stop early
        if not rows:
            break
        sub_ids = [ids[r] for r in rows]
        best, _ = runner.run(attack, x[rows], y[rows], sub_ids)
        candidate = expected_correct(target, best, y[rows], sub_ids, draws, number)
        for k, r in enumerate(rows):
            if candidate[k] < current[r]:  # only a strictly lower expected accuracy replaces
                current[r] = candidate[k]
                x_adv[r] = best[k]
                chosen[r] = attack
    return x_adv, SelectionReport([float(v) for v in current.tolist()], chosen)
