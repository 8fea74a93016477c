"""DiffHammer: the selective EM attack with gradient grafting (Wang et al., NeurIPS 2024,
"Rethinking the robustness of diffusion-based adversarial purification"), on this harness's
noise contract. Our own implementation; facts from Ka1b0/DiffHammer ``attacker.py``/``config.py``.

Each iteration t (per sample; every draw seeded per sample with attacker keys):

1. **N draws** of the purification of the current x_adv, forward only; for each draw i the
   classifier-only gradient gᵢ = ∇_{x̂} L(f(x̂ᵢ), y) at the purified image x̂ᵢ and the loss Lᵢ.
2. **Selection** of the draw(s) to backpropagate (``seeds_select``): j* maximises
   Σᵢ ELU(Lᵢ + ε⟨u(gⱼ), gᵢ⟩), u = sign (ℓ∞) or g/‖g‖₂ (ℓ2); the ``n_eot`` best are kept.
3. **E-step**: wᵢ = σ(λ·(Lᵢ + ⟨u(g_{j*}), gᵢ⟩)) — how likely draw i breaks along the selected
   direction (λ = ``em_lambda`` 5, as the code's ``EM_LAM``; no ε, as the code).
   **M-step**: ĝ = Σᵢ wᵢ gᵢ / Σᵢ wᵢ, the weighted classifier gradient.
4. **Gradient grafting**: one backward pass through the chain of draw j* with ĝ as the
   output gradient (:meth:`StochasticTarget.graft`, an exact vector-Jacobian product): O(1)
   backprop through the chain per iteration instead of O(N).
5. **Averaging over iterations** (the code's ``EM_ALPHA``): G ← v·G_t + (1 − v)·G_{t−1},
   v = (t + 1)^(−α), α = 0.5; then an APGD step (Croce & Hein 2020): η starts at 2ε,
   z = Π(x + η·u(G)), x ← Π(x + a(z − x) + (1 − a)(x − x_prev)) with a = 1 at the first
   step and 0.75 after (the code never updates x_prev; we use the previous iterate, as APGD),
   η halved at APGD's checkpoints (0.22, 0.41, … of the steps; ρ = 0.75) with a reset to the
   restart's best point.

Restarts: ``restarts`` runs (default 3 × 50 steps, losses CW, CE, DLR — the CIFAR-10
configuration); restart r > 0 only for samples whose attacker-side success rate at their best
point is ≤ 0.5, from a fresh per-sample random start.

**Stopping and the kept point.** The reference stops only when the *whole batch* is fooled on
every draw of one iteration (``attacker.py``: ``torch.all(success[-n_eval:])``), which depends on
the batch, and keeps the point where a draw was first fooled or the mean loss peaked. Ours is per
sample and batch-independent: a sample whose N draws are all fooled is checked with
``confirm_draws`` (M, default 20) fresh attacker draws, as ``aa_rand_fixed`` does, and stops only
if all M are fooled too. One all-fooled iteration is no evidence: a point whose true success rate
has plateaued at 0.8 shows 10/10 with probability 0.107, and stopping there (as an earlier version
of this plug-in did, keeping the best *observed* rate) ended ~90% of such samples within 20 steps
at a point no better than any other. Within a restart the kept point has the highest success rate
over its draws (the N draws, pooled with the M confirmation draws where an all-fooled iterate was
checked), ties to the higher mean loss; the mean loss alone (the reference's criterion) prefers
the start when hard draws dominate the loss, as in the two-cluster test. The restart's kept point
is then scored by M fresh confirmation draws that did not choose it, and across restarts the point
with the highest confirmation rate is returned; that rate is reported as the attacker's success
rate. The harness evaluates the returned point with its own K fresh draws, as for every attack.
DiffHammer's pooled "Wor.Rob" (robust only if no attacker draw at any iteration was fooled) is
stored as the attack's verdict (``reported_correct``) and never replaces the evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.core.attack import Attack, AttackResult, project, register_attack, validate_budget
from bench.core.errors import ConfigError
from bench.core.gradient_modes import parse_gradient_mode
from bench.core.losses import LOSSES, get_loss
from bench.core.target import StochasticTarget
from attacks.pgd_eot import RESTART_THRESHOLD, random_start

# step-size checkpoints as fractions of the steps (DiffHammer attacker.py; APGD's p_j of Croce &
# Hein 2020 Sec. 3.2, truncated as there)
CHECKPOINT_FRACTIONS = (0.22, 0.41, 0.57, 0.7, 0.8, 0.87, 0.93)


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ⌊p_j · steps⌋ at which the step size may be halved."""
    return sorted({int(q * steps + 1e-9) for q in CHECKPOINT_FRACTIONS} - {0})


@dataclass(frozen=True)
class DiffHammerConfig:
    norm: Literal["linf", "l2"] = "linf"
    eps: float = 8 / 255
    steps: int = 50
    restarts: int = 3
    losses: tuple[str, ...] = ("cw", "ce", "dlr")
    draws: int = 10
    n_eot: int = 1
    em_lambda: float = 5.0
    em_alpha: float = 0.5
    rho: float = 0.75
    confirm_draws: int = 20
    gradient: str = "exact"  # a mode of bench.core.gradient_modes: exact, bpda, ..., detach_guidance

    def __post_init__(self) -> None:
        parse_gradient_mode(self.gradient)
        validate_budget(self.norm, self.eps)
        for name in ("steps", "restarts", "draws", "n_eot", "confirm_draws"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.n_eot > self.draws:
            raise ConfigError(f"n_eot={self.n_eot} cannot exceed draws={self.draws}")
        unknown = [loss for loss in self.losses if loss not in LOSSES]
        if unknown or not self.losses:
            raise ConfigError(f"losses={self.losses!r}: each must be one of {', '.join(LOSSES)}")
        if not 0 < self.rho <= 1:
            raise ConfigError(f"rho={self.rho} must be in (0, 1]")


def unit(g: torch.Tensor, norm: str) -> torch.Tensor:
    """u(g): sign for ℓ∞, g/‖g‖₂ per row for ℓ2 (rows = the first dimension)."""
    if norm == "linf":
        return g.sign()
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def select_draws(grads: torch.Tensor, losses: torch.Tensor, eps: float, norm: str, k: int) -> torch.Tensor:
    """Per sample, the ``k`` draws j maximising Σᵢ ELU(Lᵢ + ε⟨u(gⱼ), gᵢ⟩). grads (N, B, D) flat,
    losses (N, B); returns (k, B) draw indices."""
    n, b, d = grads.shape
    units = unit(grads.reshape(n * b, d), norm).view(n, b, d)
    inner = torch.einsum("jbd,ibd->jib", units, grads)  # ⟨u(g_j), g_i⟩
    score = F.elu(losses.unsqueeze(0) + eps * inner).sum(1)  # (N_j, B)
    return score.topk(k, dim=0).indices


def em_gradient(grads: torch.Tensor, losses: torch.Tensor, selected: torch.Tensor, norm: str,
                lam: float) -> torch.Tensor:
    """E/M steps for one selected draw per sample (selected (B,)): wᵢ = σ(λ(Lᵢ + ⟨u(g_sel), gᵢ⟩)),
    returns Σᵢ wᵢ gᵢ / Σᵢ wᵢ, (B, D)."""
    n, b, d = grads.shape
    chosen = grads[selected, torch.arange(b)]  # (B, D)
    weights = torch.sigmoid(lam * (losses + torch.einsum("bd,ibd->ib", unit(chosen, norm), grads)))
    return (weights.unsqueeze(-1) * grads).sum(0) / weights.sum(0).clamp_min(1e-12).unsqueeze(-1)


@dataclass
class _Best:
    """Per-sample returned point so far, over restarts (by confirmation rate, see the module doc)."""

    x: torch.Tensor
    rate: torch.Tensor  # success rate of ``x`` over M fresh confirmation draws
    restart: list[int]
    confirmed_stop: list[bool]  # the restart stopped early on an all-fooled, confirmed iterate
    fooled_any: torch.Tensor  # pooled over every attacker draw (DiffHammer's Wor.Rob verdict)


@register_attack("diffhammer")
class DiffHammer(Attack):
    description = "DiffHammer: selective EM attack over N=10 draws with gradient grafting (3 x 50 APGD steps)"
    config_cls = DiffHammerConfig

    @property
    def eot(self) -> int:
        return int(self.config.n_eot)  # chains differentiated per sample and step (memory plan)

    def planned_draws(self) -> tuple[int, int]:
        """The first restart (every sample; later restarts run only on samples it left unbroken):
        per step ``draws`` attacker purifications and ``n_eot`` grafted backward passes, then
        ``confirm_draws`` for the kept point."""
        cfg = self.config
        return cfg.steps * cfg.n_eot, cfg.steps * cfg.draws + cfg.confirm_draws

    def perturb(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        cfg = self.config
        batch = x.shape[0]
        best = _Best(x.clone(), torch.full((batch,), -1.0, dtype=x.dtype, device=x.device), [-1] * batch,
                     [False] * batch, torch.zeros(batch, dtype=torch.bool, device=x.device))
        for restart in range(cfg.restarts):
            rows = list(range(batch)) if restart == 0 else \
                (best.rate <= RESTART_THRESHOLD).nonzero().flatten().tolist()
            if not rows:
                break
            sub = target.subset([target.sample_ids[r] for r in rows])
            kept, rate, stopped = self._restart(sub, x[rows], y[rows], rows, restart, best)
            for k, r in enumerate(rows):
                if rate[k] > best.rate[r]:
                    best.x[r], best.rate[r], best.restart[r], best.confirmed_stop[r] = kept[k], rate[k], restart, stopped[k]
        info = [{"reported_correct": float(not fooled), "attacker_success_rate": float(rate),
                 "chosen_by": f"restart {r}", "confirmed_stop": stop}
                for fooled, rate, r, stop in zip(best.fooled_any.tolist(), best.rate.tolist(), best.restart,
                                                 best.confirmed_stop)]
        return AttackResult(best.x.detach(), info)

    def _confirm(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor, label: object) -> torch.Tensor:
        """Success rate (B,) of ``x`` over ``confirm_draws`` fresh attacker draws (forward only),
        keyed ``label`` so that they are independent of every draw that chose ``x``."""
        noise, n = target.attack_noise(x, label, self.config.confirm_draws)
        logits = target.logits_with_noise(x, noise, n)
        return (logits.argmax(-1) != y.unsqueeze(0)).to(x.dtype).mean(0)

    def _restart(self, target: StochasticTarget, x: torch.Tensor, y: torch.Tensor, rows: list[int],
                 restart: int, best: _Best) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """One restart of ``cfg.steps`` APGD steps on the samples ``rows`` of the batch. Returns the
        restart's kept points (B', ...), their confirmation success rates (B',) and whether each
        stopped early on a confirmed all-fooled iterate; updates ``best.fooled_any``."""
        cfg = self.config
        criterion = get_loss(cfg.losses[restart % len(cfg.losses)])
        b = x.shape[0]
        shape = (-1, *([1] * (x.dim() - 1)))
        x_adv = project(x, x + random_start(target, x, cfg.norm, cfg.eps, "diffhammer", restart), cfg.norm, cfg.eps)
        x_prev, past = x_adv.clone(), None
        eta = torch.full((b,), 2 * cfg.eps, dtype=x.dtype, device=x.device)
        checkpoints, last_ckpt = apgd_checkpoints(cfg.steps), 0
        # APGD's reset point: the highest mean attacker loss so far
        own_x, own_loss = x_adv.clone(), torch.full((b,), -math.inf, dtype=x.dtype, device=x.device)
        # the kept point: the highest success rate so far (N draws; pooled with the M confirmation
        # draws where an all-fooled iterate was checked), ties to the higher mean loss
        kept_x = x_adv.clone()
        kept_score = torch.full((b,), -1.0, dtype=x.dtype, device=x.device)
        kept_loss = torch.full((b,), -math.inf, dtype=x.dtype, device=x.device)
        increases = torch.zeros(b, device=x.device)
        eta_at_ckpt, own_loss_at_ckpt = eta.clone(), own_loss.clone()
        prev_loss = torch.full((b,), math.nan, dtype=x.dtype, device=x.device)
        active = torch.ones(b, dtype=torch.bool, device=x.device)
        stopped = torch.zeros(b, dtype=torch.bool, device=x.device)
        for t in range(cfg.steps + 1):
            idx = active.nonzero().flatten().tolist()
            if not idx:
                break
            sub = target.subset([target.sample_ids[i] for i in idx])
            noise, n = sub.attack_noise(x_adv[idx], ("diffhammer", restart, t), cfg.draws)
            purified = sub.purify_with_noise(x_adv[idx], noise, n)
            grads, losses, logits = sub.classifier_gradients(purified, y[idx], criterion)
            rate = (logits.argmax(-1) != y[idx].unsqueeze(0)).to(x.dtype).mean(0)
            for k, i in enumerate(idx):
                best.fooled_any[rows[i]] |= bool(rate[k] > 0)
            mean_loss = losses.mean(0)
            better = mean_loss > own_loss[idx]
            own_loss[idx] = torch.where(better, mean_loss, own_loss[idx])
            own_x[idx] = torch.where(better.view(shape), x_adv[idx], own_x[idx])
            if t > 0:
                increases[idx] += (mean_loss > prev_loss[idx]).float()
            prev_loss[idx] = mean_loss
            # every attacker draw fooled: M fresh draws confirm it before the sample stops here;
            # otherwise the iterate's score pools the N + M draws (one lucky 10/10 is not 1.0)
            score = rate.clone()
            candidates = [k for k in range(len(idx)) if rate[k] >= 1.0]
            if candidates:
                picked = [idx[k] for k in candidates]
                confirm = self._confirm(target.subset([target.sample_ids[i] for i in picked]), x_adv[picked],
                                        y[picked], ("diffhammer-confirm", restart, t))
                for k, i, c in zip(candidates, picked, confirm.tolist()):
                    score[k] = (n * rate[k] + cfg.confirm_draws * c) / (n + cfg.confirm_draws)
                    if c >= 1.0:
                        stopped[i], active[i] = True, False
            for k, i in enumerate(idx):
                if score[k] > kept_score[i] or (score[k] == kept_score[i] and mean_loss[k] > kept_loss[i]):
                    kept_x[i], kept_score[i], kept_loss[i] = x_adv[i], score[k], mean_loss[k]
            if t == cfg.steps:
                break
            go = [k for k, i in enumerate(idx) if active[i]]
            if not go:
                break
            idx = [idx[k] for k in go]
            sub = target.subset([target.sample_ids[i] for i in idx])
            flat, losses = grads[:, go].flatten(2), losses[:, go]
            chosen = select_draws(flat, losses, cfg.eps, cfg.norm, cfg.n_eot)  # (k, B')
            grad = torch.zeros_like(x_adv[idx])
            width = grads.shape[1]  # samples in this iteration's draws: noise row = draw * width + position
            for k in range(chosen.shape[0]):
                upstream = em_gradient(flat, losses, chosen[k], cfg.norm, cfg.em_lambda).view_as(purified[0, go])
                noise_rows = [int(chosen[k, j]) * width + go[j] for j in range(len(go))]
                grad += sub.graft(x_adv[idx], noise.select(noise_rows), upstream) / chosen.shape[0]
            if past is not None:
                v = (t + 1) ** (-cfg.em_alpha)
                grad = v * grad + (1 - v) * past[idx]
            past = torch.zeros_like(x_adv) if past is None else past
            past[idx] = grad
            step = self._apgd_step(x[idx], x_adv[idx], x_prev[idx], grad, eta[idx], t)
            x_prev[idx], x_adv[idx] = x_adv[idx], step
            if t + 1 in checkpoints:
                span = t + 1 - last_ckpt
                halve = (increases < cfg.rho * span) | ((eta_at_ckpt == eta) & (own_loss_at_ckpt == own_loss))
                halve &= active
                eta = torch.where(halve, eta / 2, eta)
                x_adv = torch.where(halve.view(shape), own_x, x_adv)
                increases.zero_()
                eta_at_ckpt, own_loss_at_ckpt, last_ckpt = eta.clone(), own_loss.clone(), t + 1
        # score each kept point on fresh confirmation draws (independent of the draws that chose it)
        rate = torch.ones(b, dtype=x.dtype, device=x.device)
        open_ = (~stopped).nonzero().flatten().tolist()
        if open_:
            rate[open_] = self._confirm(target.subset([target.sample_ids[i] for i in open_]), kept_x[open_],
                                        y[open_], ("diffhammer-confirm", restart, "kept"))
        return kept_x, rate, stopped.tolist()

    def _apgd_step(self, x: torch.Tensor, x_adv: torch.Tensor, x_prev: torch.Tensor, grad: torch.Tensor,
                   eta: torch.Tensor, t: int) -> torch.Tensor:
        cfg = self.config
        shape = (-1, *([1] * (x.dim() - 1)))
        z = project(x, x_adv + eta.view(shape) * unit(grad, cfg.norm), cfg.norm, cfg.eps)
        a = 1.0 if t == 0 else 0.75
        return project(x, x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), cfg.norm, cfg.eps)
