"""The defended model as seen through an attacker-knowledge setting.

:class:`StochasticTarget` is the only way attacks and the evaluation touch a defense: it
builds per-sample noise from the run seed and the setting's keys, stacks the noise draws
into the batch dimension, and splits the stacked batch into chunks that fit the memory plan.
All losses are summed (not averaged) over samples, so per-sample gradients do not depend
on batch size or chunking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from bench.core.defense import DefendedClassifier
from bench.core.gradient_modes import EXACT, GradientMode
from bench.core.memory import MemoryPlan
from bench.core.noise import Key, NoiseBatch, NoiseSource
from bench.core.settings import Setting

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A per-sample loss ``criterion(logits (N, classes), labels (N,)) -> (N,)``."""


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
        # cost per sample id: purification chains differentiated / run forward only (shared
        # with every :meth:`subset`, so an attack's sub-batches count too)
        self.gradient_draws: dict[int, int] = {}
        self.forward_draws: dict[int, int] = {}
        # called with ("gradient" | "forward", rows) after every counted pass (progress bars)
        self.on_work: Callable[[str, int], None] | None = None
        # how gradient passes differentiate through the purification (bench.core.gradient_modes)
        self.gradient_mode: GradientMode = EXACT

    def subset(self, sample_ids: Sequence[int]) -> StochasticTarget:
        """The same target for a subset of the batch's samples (sharing the cost counters)."""
        sub = StochasticTarget(self.model, self.setting, self.noise, sample_ids, self.grad_plan, self.eval_plan)
        sub.gradient_draws, sub.forward_draws = self.gradient_draws, self.forward_draws
        sub.on_work = self.on_work
        sub.gradient_mode = self.gradient_mode
        return sub

    def reset_cost(self) -> None:
        self.gradient_draws.clear()
        self.forward_draws.clear()

    def cost(self, sample_id: int) -> dict[str, int]:
        """``{"gradient_draws", "forward_draws"}`` spent on ``sample_id`` since the last reset."""
        return {"gradient_draws": self.gradient_draws.get(sample_id, 0),
                "forward_draws": self.forward_draws.get(sample_id, 0)}

    def record_gradient_draws(self, ids: Sequence[int]) -> None:
        """Count one differentiated purification chain for each of ``ids`` (attacks that run their own
        gradient pass, e.g. DiffAttack's, report their cost here)."""
        self._count(self.gradient_draws, ids)

    def _count(self, counter: dict[int, int], ids: Sequence[int]) -> None:
        for sid in ids:
            counter[sid] = counter.get(sid, 0) + 1
        if self.on_work is not None:
            self.on_work("gradient" if counter is self.gradient_draws else "forward", len(ids))

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
        self, x: torch.Tensor, y: torch.Tensor, step: object, eot: int, criterion: Criterion | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over the setting's gradient samples of d CE(f(x; noise_d), y) / dx.

        Draws whose noise is identical (e.g. ``dw_fwd`` on a defense whose only noise is the
        forward stream) are computed once and weighted by their multiplicity, which gives the
        same sum at a fraction of the cost. Returns ``(grad, loss)``: grad (B, C, H, W) and
        the mean loss per sample (B,); the loss is ``criterion(logits, y)`` per sample
        (default cross-entropy, see :mod:`bench.core.losses`).
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
        return self.gradient_with_noise(x, y, noise, len(unique), weights, criterion)

    def gradient_with_noise(
        self, x: torch.Tensor, y: torch.Tensor, noise: NoiseBatch, draws: int, weights: torch.Tensor | None = None,
        criterion: Criterion | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient summed over ``draws`` stacked copies of ``x`` with the given noise
        (draw ``d`` weighted by ``weights[d]`` if given)."""
        grad, loss, _ = self.per_draw_gradients(x, y, noise, draws, criterion)
        if weights is None:
            return grad.sum(0), loss.mean(0)
        shape = (draws, 1, *([1] * (x.dim() - 1)))
        return (grad * weights.view(shape)).sum(0), (loss * weights.view(draws, 1)).sum(0) / weights.sum()

    def per_draw_gradients(
        self, x: torch.Tensor, y: torch.Tensor, noise: NoiseBatch, draws: int,
        criterion: Criterion | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For ``draws`` stacked copies of ``x`` (one forward/backward per memory chunk): the
        gradient of each draw's per-sample ``criterion(logits, y)`` (default cross-entropy)
        w.r.t. its input, (draws, B, C, H, W); the losses (draws, B); the logits (draws, B, K)."""
        criterion = criterion or (lambda logits, labels: F.cross_entropy(logits, labels, reduction="none"))
        batch = x.shape[0]
        x_all = x.detach().repeat(draws, *([1] * (x.dim() - 1)))
        y_all = y.repeat(draws)
        ids_all = self.sample_ids * draws
        self._count(self.gradient_draws, ids_all)
        grad = torch.zeros_like(x_all)
        loss = torch.zeros(x_all.shape[0], dtype=x.dtype, device=x.device)
        logits_all: list[torch.Tensor] = []
        chunk = self.grad_plan.chunk_size
        for start in range(0, x_all.shape[0], chunk):
            stop = min(start + chunk, x_all.shape[0])
            x_c = x_all[start:stop].clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self._gradient_logits(x_c, noise.narrow(start, stop - start), ids_all[start:stop])
                per_sample = criterion(logits, y_all[start:stop])
                (grad[start:stop],) = torch.autograd.grad(per_sample.sum(), x_c)
            loss[start:stop] = per_sample.detach()
            logits_all.append(logits.detach())
        return (grad.view(draws, batch, *x.shape[1:]), loss.view(draws, batch),
                torch.cat(logits_all).view(draws, batch, -1))

    # -- gradient modes ---------------------------------------------------------------
    def _gradient_logits(self, x: torch.Tensor, noise: NoiseBatch, ids: Sequence[int]) -> torch.Tensor:
        """Logits of ``x`` whose backward pass follows ``gradient_mode`` (the forward value is the
        real defense's, except under ``blind``, whose attacker sees the classifier alone)."""
        if self.gradient_mode.kind == "exact":
            return self.model(x, noise, ids, checkpoint=self.grad_plan.checkpoint)
        if self.gradient_mode.kind == "blind":
            return self.model.classifier(x)
        return self.model.classify(self._gradient_purify(x, noise, ids))

    def _gradient_purify(self, x: torch.Tensor, noise: NoiseBatch, ids: Sequence[int]) -> torch.Tensor:
        """The purified images of ``x`` with the real values and the backward pass of
        ``gradient_mode``: exact; the identity (``bpda``), scaled by the forward step's Jacobian
        (``forward_only``); or a K-step surrogate's (``surrogate:K``)."""
        mode = self.gradient_mode
        if mode.kind == "exact":
            return self.model.purify(x, noise, ids, checkpoint=self.grad_plan.checkpoint)
        if mode.kind == "detach_guidance":
            from bench.core.guidance import detached_guidance

            with detached_guidance():  # no checkpointing: a recomputation would differentiate the guidance
                return self.model.purify(x, noise, ids, checkpoint=False)
        with torch.no_grad():
            real = self.model.purify(x, noise, ids)
        if mode.kind in ("bpda", "blind", "forward_only"):
            scale = self.model.defense.forward_scale if mode.kind == "forward_only" else 1.0
            through = scale * (x - x.detach())
            return real + (through.unsqueeze(1) if real.dim() == x.dim() + 1 else through)
        if mode.kind == "adjoint":
            adjoint = getattr(self.model.defense, "adjoint_purify", None)
            if adjoint is None:
                from bench.core.errors import ConfigError

                raise ConfigError(f"gradient=adjoint is DiffPure's torchsde adjoint; {self.model.defense.name!r} has none")
            approx = adjoint(x, noise)
            return real + (approx - approx.detach())
        surrogate = self._surrogate(mode.steps)
        approx = surrogate.purify(x, surrogate_noise(surrogate, noise, tuple(x.shape[1:])),
                                  checkpoint=self.grad_plan.checkpoint)
        return real + (approx - approx.detach())

    def _surrogate(self, steps: int) -> Any:
        cache = self.__dict__.setdefault("_surrogates", {})
        if steps not in cache:
            cache[steps] = self.model.defense.surrogate(steps)
        return cache[steps]

    # -- attacker draws, purification and grafting (DiffHammer) ----------------------
    def attack_noise(self, x: torch.Tensor, step: object, draws: int) -> tuple[NoiseBatch, int]:
        """Noise of the setting's gradient samples at attack step ``step`` (an int or any
        label that keeps this attack's draws apart from others'), stacked draw-major; returns
        ``(noise, n)`` with ``n = setting.attack_draws(draws)`` (1 under ``dw_both``, K under
        ``dw_semi:K``)."""
        streams = self.streams(x)
        n = self.setting.attack_draws(draws)
        return self._stacked_noise(x, n, lambda sid, d: self.setting.attack_keys(streams, step, d)), n

    def purify_with_noise(self, x: torch.Tensor, noise: NoiseBatch, draws: int) -> torch.Tensor:
        """Purified images of ``draws`` stacked copies of ``x`` (no grad): (draws, B, C, H, W),
        or (draws, B, paths, C, H, W) for a multi-path defense."""
        purified = self._forward_chunks(self.model.purify, x, noise, draws)
        return purified.view(draws, x.shape[0], *purified.shape[1:])

    def _forward_chunks(self, fn: Callable[..., torch.Tensor], x: torch.Tensor, noise: NoiseBatch,
                        draws: int) -> torch.Tensor:
        """``fn(x_chunk, noise_chunk, ids_chunk)`` over ``draws`` stacked copies of ``x`` in memory-plan
        chunks, without grad, concatenated (counted as forward draws)."""
        x_all = x.detach().repeat(draws, *([1] * (x.dim() - 1)))
        ids_all = self.sample_ids * draws
        self._count(self.forward_draws, ids_all)
        outputs = []
        chunk = self.eval_plan.chunk_size
        with torch.no_grad():
            for start in range(0, x_all.shape[0], chunk):
                stop = min(start + chunk, x_all.shape[0])
                outputs.append(fn(x_all[start:stop], noise.narrow(start, stop - start), ids_all[start:stop]))
        return torch.cat(outputs)

    def classifier_gradients(
        self, purified: torch.Tensor, y: torch.Tensor, criterion: Criterion
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classifier-only gradients at purified images (draws, B, ...): the gradient of each
        draw's per-sample ``criterion(classify(purified), y)`` w.r.t. its purified image (same
        shape), the losses (draws, B) and the logits (draws, B, classes). No backward pass
        through the purification chain."""
        draws, batch = purified.shape[:2]
        flat = purified.detach().flatten(0, 1).clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model.classify(flat)
            per_sample = criterion(logits, y.repeat(draws))
            (grad,) = torch.autograd.grad(per_sample.sum(), flat)
        return (grad.view_as(purified), per_sample.detach().view(draws, batch),
                logits.detach().view(draws, batch, -1))

    def graft(self, x: torch.Tensor, noise: NoiseBatch, upstream: torch.Tensor) -> torch.Tensor:
        """Gradient grafting (DiffHammer): one backward pass through the purification chain of
        ``x`` (R, C, H, W) under ``noise`` (R rows; ``self.sample_ids`` repeated R / B times) with
        ``upstream`` (the purified output's shape) as the output gradient, i.e. the exact
        vector-Jacobian product (∂ purify(x) / ∂x)ᵀ · upstream, (R, C, H, W). With ``upstream``
        the classifier gradient at the same draw's purified image this equals the full
        gradient of the loss (tests assert it bitwise on CPU)."""
        rows = x.shape[0]
        ids_all = self.sample_ids * (rows // len(self.sample_ids))
        self._count(self.gradient_draws, ids_all)
        grad = torch.zeros_like(x)
        chunk = self.grad_plan.chunk_size
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            x_c = x[start:stop].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                purified = self._gradient_purify(x_c, noise.narrow(start, stop - start), ids_all[start:stop])
                (grad[start:stop],) = torch.autograd.grad(purified, x_c, grad_outputs=upstream[start:stop].to(purified.dtype))
        return grad

    # -- predictions ----------------------------------------------------------------
    def logits_with_noise(self, x: torch.Tensor, noise: NoiseBatch, draws: int) -> torch.Tensor:
        """Logits (draws, B, classes) for ``draws`` stacked copies of ``x`` (no grad)."""
        return self._forward_chunks(self.model, x, noise, draws).view(draws, x.shape[0], -1)

    def eval_predictions(self, x: torch.Tensor, draws: int) -> torch.Tensor:
        """Predicted class of each sample under each of the evaluation's ``draws`` noise
        draws: (B, draws). Under ``dw_both`` all draws are the same, computed once."""
        return self._predictions(x, draws, self.setting.eval_keys)

    def selection_predictions(self, x: torch.Tensor, draws: int) -> torch.Tensor:
        """Like :meth:`eval_predictions` under the setting's *selection* keys (the attacker's own
        queries, independent of the evaluation draws): (B, draws)."""
        return self._predictions(x, draws, self.setting.selection_keys)

    def _predictions(self, x: torch.Tensor, draws: int, keys_of: Callable[..., Mapping[str, Key]]) -> torch.Tensor:
        streams, active, seed = self.streams(x), self.active_streams(x), self.noise.run_seed
        keys = {(sid, d): keys_of(streams, seed, sid, d) for sid in self.sample_ids for d in range(draws)}
        all_same = all(
            keys[(sid, d)][s] == keys[(sid, 0)][s] for (sid, d) in keys for s in active
        )
        distinct = 1 if all_same else draws
        noise = self._stacked_noise(x, distinct, lambda sid, d: keys[(sid, d)])
        preds = self.logits_with_noise(x, noise, distinct).argmax(-1).T  # (B, distinct)
        return preds.expand(-1, draws).clone() if distinct != draws else preds

    def attack_logits(self, x: torch.Tensor, step: object, draw: int = 0) -> torch.Tensor:
        """Logits (B, classes) under the attacker's gradient-sample ``draw`` of ``step``."""
        streams = self.streams(x)
        noise = self._stacked_noise(x, 1, lambda sid, d: self.setting.attack_keys(streams, step, draw))
        return self.logits_with_noise(x, noise, 1)[0]


def surrogate_noise(surrogate: Any, noise: NoiseBatch, sample_shape: tuple[int, ...]) -> NoiseBatch:
    """The real draw's noise for a shorter surrogate chain: each stream's first tensors, as many as
    the surrogate consumes (a surrogate with the purifier's own steps gets exactly the real noise)."""
    from bench.core.errors import ConfigError

    streams = {}
    for name, spec in surrogate.noise_spec(sample_shape).items():
        tensors = noise[name]
        if spec.steps > tensors.shape[0]:
            raise ConfigError(f"the surrogate needs {spec.steps} '{name}' noise tensors, the purifier draws "
                              f"{tensors.shape[0]}: a surrogate must not have more steps than the purifier")
        streams[name] = tensors[: spec.steps]
    return NoiseBatch(streams)
