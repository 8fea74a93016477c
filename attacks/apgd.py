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
import torch.nn.functional as F
from torch import nn

from bench.core.target import StochasticTarget

log = logging.getLogger(__name__)

APGD_LOSSES = {"apgd-ce": "ce", "apgd-dlr": "dlr"}
QUERY_STEP_BASE = 1_000_000  # attacker-query noise keys live apart from PGD's step keys
CONFIRM_ROUND_BASE = QUERY_STEP_BASE // 2  # early-stop confirmations, apart from the selection's rounds


class _Replay(torch.autograd.Function):
    """Returns precomputed logits whose backward is a precomputed input gradient.

    APGD differentiates ``criterion(model(x), y).sum()`` once per EoT call; we computed every
    draw of the block in one stacked forward/backward, so each call only replays its draw. The
    incoming gradient is checked against the criterion's (it must be the same loss)."""

    @staticmethod
    def forward(ctx, x, value, grad_x, expected_grad_output, check):  # noqa: ANN001, ANN205
        ctx.save_for_backward(grad_x, expected_grad_output)
        ctx.check = check
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        grad_x, expected = ctx.saved_tensors
        if ctx.check and not torch.allclose(grad_output, expected, rtol=1e-4, atol=1e-6):
            raise RuntimeError("APGD differentiated a different loss than the stacked EoT precomputation")
        return grad_x, None, None, None, None


class AttackerQueries(nn.Module):
    """The defended classifier as APGD queries it: ``forward(x) -> logits`` for the rows
    ``self.ids`` (dataset indices), each call under fresh attacker noise of the setting.

    Calls come in blocks of ``eot`` (APGD's EoT loop, same ``x`` throughout): call ``c`` uses
    the setting's gradient sample ``c % eot`` of block ``c // eot`` — fresh noise per call under
    ``white``, the known noise under ``dw_both``, the K known sets in turn under ``dw_semi:K``.
    The first call of a block computes all ``eot`` draws in one stacked forward/backward (chunked
    to the memory plan), and every call replays its draw: the same values and gradients as
    ``eot`` separate calls, at batched speed.
    With ``judge="mean"`` the last call of each block returns, as its *value*, the log of the
    mean predictive distribution over the block's draws (its gradient stays the last draw's),
    so APGD's "best so far" bookkeeping judges an iterate by all its EoT draws.

    With ``early_stop`` a row *retires* at the first iterate whose ``eot`` draws all misclassify
    (those draws were made after the iterate was fixed, so this is an unbiased check that its
    expected accuracy is zero, free from the gradient computation) and whose expected accuracy
    over ``confirm_draws`` further fresh draws (forward only) is zero too — without the
    confirmation a point at, say, 10% expected accuracy retires on a lucky block about once in
    eight. The iterate is kept as the row's candidate (:meth:`retired`) and the row is never
    computed again: APGD keeps looping over it (its batch bookkeeping is cheap) but sees the retiring
    block's logits and a zero gradient. Noise keys are per sample, so retiring one row never
    changes another's draws.
    """

    def __init__(self, target: StochasticTarget, eot: int, judge: Literal["last", "mean"] = "last",
                 early_stop: bool = False, confirm_draws: int = 20) -> None:
        super().__init__()
        self.target, self.eot, self.judge, self.early_stop = target, eot, judge, early_stop
        self.confirm_draws = confirm_draws
        self.ids: list[int] = []
        self.labels: torch.Tensor | None = None
        self.criterion: Any = None
        self.calls = 0  # global over the attack, so no two calls share noise
        self.gradient_draws: dict[int, int] = {}  # sample id -> draws differentiated (cost report)
        self._block: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._active = torch.ones(0, dtype=torch.bool)
        self._retired_x: torch.Tensor | None = None
        self._frozen_logits: torch.Tensor | None = None

    def start(self, ids: list[int], labels: torch.Tensor, criterion: Any) -> None:
        """Rows of the next ``attack_single_run`` are samples ``ids`` with ``labels``; APGD's
        per-sample loss is ``criterion(logits, labels)``."""
        self.ids, self.labels, self.criterion, self._block = list(ids), labels, criterion, None
        self.calls += (-self.calls) % self.eot  # align blocks with APGD's EoT loops
        self._active = torch.ones(len(ids), dtype=torch.bool)
        self._retired_x, self._frozen_logits = None, None

    def retired(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mask (B,) bool, iterates)``: rows retired by ``early_stop`` and the iterate each
        retired at (rows not retired hold unspecified values)."""
        return ~self._active, self._retired_x

    def _compute_block(self, x: torch.Tensor, step: int) -> None:
        rows = self._active.nonzero().flatten().tolist()
        batch = x.shape[0]
        grads = torch.zeros(self.eot, *x.shape, dtype=x.dtype, device=x.device)
        logits = self._frozen_logits.clone() if self._frozen_logits is not None else None
        if rows:
            ids = [self.ids[r] for r in rows]
            sub = self.target.subset(ids)
            x_rows = x[rows]
            streams = sub.streams(x_rows)
            noise = sub._stacked_noise(x_rows, self.eot, lambda sid, d: sub.setting.attack_keys(streams, step, d))
            grads_rows, _, logits_rows = sub.per_draw_gradients(x_rows, self.labels[rows], noise, self.eot,
                                                                self.criterion)
            for sid in ids:
                self.gradient_draws[sid] = self.gradient_draws.get(sid, 0) + self.eot
            if logits is None:
                logits = torch.zeros(self.eot, batch, logits_rows.shape[-1], dtype=logits_rows.dtype,
                                     device=logits_rows.device)
            grads[:, rows], logits[:, rows] = grads_rows, logits_rows
            if self.early_stop:
                self._retire(x, rows, logits_rows)
        with torch.enable_grad():
            leaf = logits.clone().requires_grad_(True)
            (dloss,) = torch.autograd.grad(self.criterion(leaf.flatten(0, 1), self.labels.repeat(self.eot)).sum(), leaf)
        self._block = (x.detach().clone(), logits, grads, dloss)

    def _retire(self, x: torch.Tensor, rows: list[int], logits_rows: torch.Tensor) -> None:
        """Retire the rows (of ``rows``) whose every draw of this block misclassifies."""
        fooled = (logits_rows.argmax(-1) != self.labels[rows].unsqueeze(0)).all(0).tolist()
        done = [r for r, f in zip(rows, fooled) if f]
        if done and self.confirm_draws > 0:
            block = self.calls // self.eot
            check = expected_correct(self.target, x.detach()[done], self.labels[done], [self.ids[r] for r in done],
                                     self.confirm_draws, CONFIRM_ROUND_BASE + block)
            done = [r for r, c in zip(done, check.tolist()) if c == 0]
        if not done:
            return
        if self._retired_x is None:
            self._retired_x = x.detach().clone()
        logits = self._frozen_logits
        if logits is None:
            logits = torch.zeros(self.eot, x.shape[0], logits_rows.shape[-1], dtype=logits_rows.dtype,
                                 device=logits_rows.device)
        positions = [rows.index(r) for r in done]
        logits[:, done] = logits_rows[:, positions]
        self._retired_x[done] = x.detach()[done]
        self._active[done] = False
        self._frozen_logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.ids):
            raise RuntimeError(f"APGD queried {x.shape[0]} rows, expected the {len(self.ids)} rows it was given")
        step, draw = QUERY_STEP_BASE + self.calls // self.eot, self.calls % self.eot
        self.calls += 1
        if draw == 0 or self._block is None or not torch.equal(self._block[0], x.detach()):
            if draw != 0:
                raise RuntimeError("APGD changed its iterate inside an EoT loop")
            self._compute_block(x, step)
        _, logits, grads, dloss = self._block
        value, check = logits[draw], True
        if self.judge == "mean" and draw == self.eot - 1 and self.eot > 1:
            log_probs = torch.log_softmax(logits, dim=-1)
            value = torch.logsumexp(log_probs, dim=0) - torch.log(torch.tensor(float(self.eot)))
            check = False  # APGD's loss is now evaluated at the mean; the gradient stays the draw's
        return _Replay.apply(x, value.to(x.dtype), grads[draw].to(x.dtype), dloss[draw].to(x.dtype), check)


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
    early_stop: bool = False
    confirm_draws: int = 20

    def __post_init__(self) -> None:
        from pyautoattack.autopgd_base import APGDAttack

        self.queries = AttackerQueries(self.target, self.eot, self.judge, self.early_stop, self.confirm_draws)
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

    def gradient_draws(self, ids: list[int]) -> list[int]:
        """Defense forward/backward passes spent so far on each sample of ``ids`` (cost report)."""
        return [self.queries.gradient_draws.get(sid, 0) for sid in ids]

    def run(self, attack: str, x: torch.Tensor, y: torch.Tensor, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """APGD ``attack`` on rows ``x`` (samples ``ids``): ``(x_best_adv, fooled)`` where
        ``fooled`` is APGD's own verdict (some iterate fooled the judged prediction). Rows
        retired by ``early_stop`` return the iterate they retired at, with ``fooled`` true."""
        self.apgd.loss = APGD_LOSSES[attack]
        self.apgd.init_hyperparam(x)
        criterion = (lambda logits, labels: F.cross_entropy(logits, labels, reduction="none")) \
            if attack == "apgd-ce" else self.apgd.dlr_loss
        self.queries.start(ids, y, criterion)
        x_init = self.random_start(x, ids, attack)
        with torch.enable_grad():
            _, acc, _, x_best_adv = self.apgd.attack_single_run(x, y, x_init=x_init)
        x_best_adv, fooled = x_best_adv.detach().clone(), acc == 0
        retired, iterates = self.queries.retired()
        if retired.any():
            x_best_adv[retired] = iterates[retired].to(x_best_adv.dtype)
            fooled = fooled | retired.to(fooled.device)
            log.debug("%s: %d of %d rows retired early", attack, int(retired.sum()), len(ids))
        return x_best_adv, fooled


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
    return target.subset(ids)


@dataclass
class SelectionReport:
    """What the attack itself concluded per sample (stored beside the harness's evaluation)."""

    reported_correct: list[float]  # original: 0/1 flag; fixed: expected accuracy over M draws
    chosen_by: list[str]  # "clean" or the attack whose candidate was kept
    gradient_draws: list[int] | None = None  # defense forward/backward passes spent on the sample

    def rows(self) -> list[dict[str, Any]]:
        rows = [{"reported_correct": c, "chosen_by": a} for c, a in zip(self.reported_correct, self.chosen_by)]
        for row, draws in zip(rows, self.gradient_draws or []):
            row["gradient_draws"] = draws
        return rows


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
    return x_adv, SelectionReport([float(v) for v in robust.tolist()], chosen, runner.gradient_draws(ids))


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
    return x_adv, SelectionReport([float(v) for v in current.tolist()], chosen, runner.gradient_draws(ids))
