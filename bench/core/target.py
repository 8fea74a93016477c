"""The defended model as seen through an attacker-knowledge setting.

:class:`StochasticTarget` is the only way attacks and the evaluation touch a defense: it
builds per-sample noise from the run seed and the setting's keys, stacks the noise draws
into the batch dimension, and splits the stacked batch into chunks that fit the memory plan.
All losses are summed (not averaged) over samples, so per-sample gradients do not depend
on batch size or chunking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from bench.core.defense import DefendedClassifier
from bench.core.memory import MemoryPlan
from bench.core.noise import Key, NoiseBatch, NoiseSource
from bench.core.settings import Setting


class StochasticTarget:
    """A defended classifier, a noise source and a setting, for one batch of samples.

    Args:
        model: the defended classifier (purifier + classifier).
        setting: the attacker-knowledge setting that decides noise keys.
        noise: the run's noise source.
        sample_ids: dataset indices of the batch rows (they seed the noise).
        grad_plan / eval_plan: memory plans for gradient and no-grad passes.
    """

    def __init__(
        self,
        model: DefendedClassifier,
        setting: Setting,
        noise: NoiseSource,
        sample_ids: Sequence[int],
        grad_plan: MemoryPlan,
        eval_plan: MemoryPlan,
    ) -> None:
        self.model = model
        self.setting = setting
        self.noise = noise
        self.sample_ids = [int(i) for i in sample_ids]
        self.grad_plan = grad_plan
        self.eval_plan = eval_plan

    # -- noise ----------------------------------------------------------------------
    def _stacked_noise(
        self, x: torch.Tensor, draws: int, keys_for: Callable[[int, int], Mapping[str, Key]]
    ) -> NoiseBatch:
        """Noise for ``draws`` copies of the batch stacked draw-major: row ``d*B + b``."""
        spec = self.model.defense.noise_spec(tuple(x.shape[1:]))
        ids = [sid for _ in range(draws) for sid in self.sample_ids]
        keys = [keys_for(sid, d) for d in range(draws) for sid in self.sample_ids]
        return self.noise.batch(spec, ids, keys).to(x.device, x.dtype)

    def streams(self, x: torch.Tensor) -> list[str]:
        return list(self.model.defense.noise_spec(tuple(x.shape[1:])))

    def active_streams(self, x: torch.Tensor) -> list[str]:
        """Streams that hold at least one tensor (keys of empty streams change nothing)."""
        return [n for n, s in self.model.defense.noise_spec(tuple(x.shape[1:])).items() if s.steps]

    def is_deterministic(self, x: torch.Tensor) -> bool:
        """True if the defense consumes no noise at all (e.g. ``none``): one draw suffices."""
        return not self.active_streams(x)

    # -- gradients ------------------------------------------------------------------
    def eot_gradient(
        self, x: torch.Tensor, y: torch.Tensor, step: int, eot: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over the setting's gradient samples of d CE(f(x; noise_d), y) / dx.

        Draws whose noise is identical (e.g. ``dw_fwd`` on a defense whose only noise is the
        forward stream) are computed once and weighted by their multiplicity, which gives the
        same sum at a fraction of the cost. Returns ``(grad, loss)``: grad (B, C, H, W) and
        the mean CE per sample (B,).
        """
        streams, active = self.streams(x), self.active_streams(x)
        counts: dict[tuple[Key, ...], int] = {}
        first: dict[tuple[Key, ...], dict[str, Key]] = {}
        for d in range(self.setting.attack_draws(eot)):
            keys = self.setting.attack_keys(streams, step, d)
            effective = tuple(keys[s] for s in active)
            counts[effective] = counts.get(effective, 0) + 1
            first.setdefault(effective, keys)
        unique = list(first.values())
        noise = self._stacked_noise(x, len(unique), lambda sid, d: unique[d])
        weights = torch.tensor(list(counts.values()), dtype=x.dtype, device=x.device)
        return self.gradient_with_noise(x, y, noise, len(unique), weights)

    def gradient_with_noise(
        self, x: torch.Tensor, y: torch.Tensor, noise: NoiseBatch, draws: int, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient summed over ``draws`` stacked copies of ``x`` with the given noise
        (draw ``d`` weighted by ``weights[d]`` if given)."""
        grad, loss, _ = self.per_draw_gradients(x, y, noise, draws)
        if weights is None:
            return grad.sum(0), loss.mean(0)
        shape = (draws, 1, *([1] * (x.dim() - 1)))
        return (grad * weights.view(shape)).sum(0), (loss * weights.view(draws, 1)).sum(0) / weights.sum()

    def per_draw_gradients(
        self, x: torch.Tensor, y: torch.Tensor, noise: NoiseBatch, draws: int,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For ``draws`` stacked copies of ``x`` (one forward/backward per memory chunk): the
        gradient of each draw's per-sample ``criterion(logits, y)`` (default cross-entropy)
        w.r.t. its input, (draws, B, C, H, W); the losses (draws, B); the logits (draws, B, K)."""
        criterion = criterion or (lambda logits, labels: F.cross_entropy(logits, labels, reduction="none"))
        batch = x.shape[0]
        x_all = x.detach().repeat(draws, *([1] * (x.dim() - 1)))
        y_all = y.repeat(draws)
        ids_all = self.sample_ids * draws
        grad = torch.zeros_like(x_all)
        loss = torch.zeros(x_all.shape[0], dtype=x.dtype, device=x.device)
        logits_all: list[torch.Tensor] = []
        chunk = self.grad_plan.chunk_size
        for start in range(0, x_all.shape[0], chunk):
            stop = min(start + chunk, x_all.shape[0])
            x_c = x_all[start:stop].clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(
                    x_c, noise.narrow(start, stop - start), ids_all[start:stop], checkpoint=self.grad_plan.checkpoint
                )
                per_sample = criterion(logits, y_all[start:stop])
                (grad[start:stop],) = torch.autograd.grad(per_sample.sum(), x_c)
            loss[start:stop] = per_sample.detach()
            logits_all.append(logits.detach())
        return (grad.view(draws, batch, *x.shape[1:]), loss.view(draws, batch),
                torch.cat(logits_all).view(draws, batch, -1))

    # -- predictions ----------------------------------------------------------------
    def logits_with_noise(self, x: torch.Tensor, noise: NoiseBatch, draws: int) -> torch.Tensor:
        """Logits (draws, B, classes) for ``draws`` stacked copies of ``x`` (no grad)."""
        x_all = x.detach().repeat(draws, *([1] * (x.dim() - 1)))
        ids_all = self.sample_ids * draws
        outputs = []
        chunk = self.eval_plan.chunk_size
        with torch.no_grad():
            for start in range(0, x_all.shape[0], chunk):
                stop = min(start + chunk, x_all.shape[0])
                outputs.append(self.model(x_all[start:stop], noise.narrow(start, stop - start), ids_all[start:stop]))
        return torch.cat(outputs).view(draws, x.shape[0], -1)

    def eval_predictions(self, x: torch.Tensor, draws: int) -> torch.Tensor:
        """Predicted class of each sample under each of the evaluation's ``draws`` noise
        draws: (B, draws). Under ``dw_both`` all draws are the same, computed once."""
        streams, active, seed = self.streams(x), self.active_streams(x), self.noise.run_seed
        keys = {(sid, d): self.setting.eval_keys(streams, seed, sid, d) for sid in self.sample_ids for d in range(draws)}
        all_same = all(
            keys[(sid, d)][s] == keys[(sid, 0)][s] for (sid, d) in keys for s in active
        )
        distinct = 1 if all_same else draws
        noise = self._stacked_noise(x, distinct, lambda sid, d: keys[(sid, d)])
        preds = self.logits_with_noise(x, noise, distinct).argmax(-1).T  # (B, distinct)
        return preds.expand(-1, draws).clone() if distinct != draws else preds

    def attack_logits(self, x: torch.Tensor, step: int, draw: int = 0) -> torch.Tensor:
        """Logits (B, classes) under the attacker's gradient-sample ``draw`` of ``step``."""
        streams = self.streams(x)
        noise = self._stacked_noise(x, 1, lambda sid, d: self.setting.attack_keys(streams, step, draw))
        return self.logits_with_noise(x, noise, 1)[0]
