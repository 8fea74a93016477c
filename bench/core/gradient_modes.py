"""How an attack differentiates through the purification: exact, or one of the approximations the
literature used (and that make published robust accuracies too high).

Every gradient attack takes ``gradient=MODE`` (``--attack-opt gradient=bpda``); the target applies
it to every gradient pass (:meth:`bench.core.target.StochasticTarget.per_draw_gradients`,
:meth:`~bench.core.target.StochasticTarget.graft`). Forward values — what the attack sees as the
defense's output and logits — are always the real purification's; only the backward pass changes.
Records made with a mode other than ``exact`` are off-protocol and never rank.

- ``exact`` (default): backpropagation through the whole chain (with checkpointing).
- ``bpda``: Backward Pass Differentiable Approximation (Athalye et al., ICML 2018): the
  purification is taken as the identity in the backward pass, so the gradient is the classifier's
  gradient at the purified image (DiffBreak's ``bpda``).
- ``blind``: the classifier alone, at the input, as if there were no purification (DiffBreak's
  ``blind``): the attacker ignores the defense.
- ``forward_only``: through the forward diffusion only, the reverse process taken as the identity
  (DiffBreak's ``forward_diff_only``): BPDA scaled by the forward step's Jacobian, sqrt(ᾱ_{t*}) for
  DDPM/VP purification (:attr:`bench.core.defense.Defense.forward_scale`).
- ``surrogate:K``: through a K-step version of the same purifier (Lee & Kim, ICCV 2023, who
  backpropagate a cheaper surrogate process and evaluate with the real one); its noise is the real
  draw's, stream by stream, truncated to what K steps consume, so K = the purifier's own steps is
  the exact gradient.
- ``detach_guidance``: through the whole chain, but every guidance gradient inside the purifier
  (GDMP's SSIM guidance, COUP's confidence guidance, rcg_purify's robust-classifier guidance:
  :func:`bench.core.guidance.input_gradient`) is a constant of the attacked graph, its derivative
  with respect to the input dropped. COUP's released attack detaches its guidance this way. It is
  an approximation and never ranks, but it can be *stronger* than the exact gradient: second-order
  terms through a robust guide can point away from the adversarial direction (on the toy
  rcg_purify, PGD20-EoT10 with detached guidance leaves 0.161 robust accuracy against 0.471 with
  exact gradients on the same 256 images, −0.311 [−0.343, −0.280] paired). A ranked entry with a
  significantly stronger non-exact record is flagged on the site. The gradient pass runs without
  checkpointing (a recomputation in the backward pass would otherwise differentiate the guidance
  again). GDMP's closed-form MSE guidance is detached too (:func:`bench.core.guidance.guidance_term`).
- ``adjoint``: DiffPure's shipped gradient, torchsde's stochastic adjoint of the reverse SDE
  (``diffpure`` only; ``pip install -e '.[perf]'``): the continuous adjoint is not the gradient of
  the discretised solver, and its Brownian path is torchsde's, seeded per sample from the draw.
  How far it is from the exact gradient depends on the solver step: on the trained toy DiffPure
  (t* = 0.1, six test digits) its cosine with the exact gradient is 0.95-0.99 at dt = 1e-3 (DiffPure's
  CIFAR-10 step) and 2e-4 but -0.08-0.35 at the toy protocol's dt = 5e-3, so the toy's adjoint effect
  (robust accuracy +69 points over exact) overstates what the adjoint does at DiffPure's own step.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.errors import ConfigError

GRADIENT_MODES = ("exact", "bpda", "blind", "forward_only", "surrogate:K", "adjoint", "detach_guidance")


@dataclass(frozen=True)
class GradientMode:
    kind: str
    steps: int = 0  # K of surrogate:K

    @property
    def name(self) -> str:
        return f"surrogate:{self.steps}" if self.kind == "surrogate" else self.kind


EXACT = GradientMode("exact")


def parse_gradient_mode(text: str) -> GradientMode:
    """``exact`` | ``bpda`` | ``blind`` | ``forward_only`` | ``surrogate:K`` (K ≥ 1) | ``adjoint`` |
    ``detach_guidance``."""
    if text in GRADIENT_MODES and text != "surrogate:K":  # the modes without a parameter
        return GradientMode(text)
    kind, _, steps = text.partition(":")
    if kind == "surrogate" and steps.isascii() and steps.isdigit() and int(steps) >= 1:  # ASCII: isdigit passes "²"
        return GradientMode("surrogate", int(steps))
    raise ConfigError(f"gradient={text!r} is not one of {', '.join(GRADIENT_MODES)} (e.g. surrogate:5)")
