"""Attacker-knowledge settings (ADDT paper Section 4.1, Appendices B and C).

A setting is orthogonal to the attack algorithm: it only decides which noise *keys*
(see :mod:`bench.core.noise`) the attacker's gradient samples and the final evaluation use.

- ``white``: the attacker resamples every stream for each EoT sample; the evaluation uses
  fresh, independent noise.
- ``dw_fwd``: the forward-diffusion noise of the evaluation is fixed and known to the
  attacker; every other stream stays unknown (fresh for the attacker and per eval draw).
- ``dw_both``: every stream the evaluation uses is fixed and known: the whole process is
  deterministic to the attacker (EoT collapses to one sample; all eval draws are equal).
- ``dw_semi:K``: each sample has K fixed noise sets; every evaluation draw picks one of
  them uniformly at random, and the attacker, who knows all K, sums its gradient over all
  K at every step (DW_Semi-128 in Appendix C is ``dw_semi:128``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bench.core.errors import ConfigError, UnknownNameError
from bench.core.noise import Key, derive_seed

FORWARD_STREAMS = frozenset({"forward"})
"""Streams that make up the forward diffusion (known to a ``dw_fwd`` attacker)."""

KNOWN: Key = ("known",)
SETTING_NAMES = ("white", "dw_fwd", "dw_both", "dw_semi:K")
SETTING_DESCRIPTIONS = {
    "white": "attacker knows the model, resamples all noise (EoT); evaluation uses fresh noise",
    "dw_fwd": "attacker also knows the evaluation's forward-diffusion noise",
    "dw_both": "attacker knows every noise stream of the evaluation (deterministic to it)",
    "dw_semi:K": "evaluation draws one of K fixed noise sets per sample; attacker knows all K",
}


@dataclass(frozen=True)
class Setting:
    """An attacker-knowledge setting. ``semi_sets`` is K for ``dw_semi:K``, else 0."""

    kind: str
    semi_sets: int = 0

    @property
    def name(self) -> str:
        return f"dw_semi:{self.semi_sets}" if self.kind == "dw_semi" else self.kind

    def attack_draws(self, requested_eot: int) -> int:
        """How many gradient samples one attack step takes under this setting."""
        if self.kind == "dw_both":
            return 1  # every draw would be identical
        if self.kind == "dw_semi":
            return self.semi_sets  # the attacker averages over all K known sets
        return requested_eot

    def attack_keys(self, streams: Iterable[str], step: object, draw: int) -> dict[str, Key]:
        """Keys of gradient sample ``draw`` at attack step ``step`` (same for all samples)."""
        if self.kind == "dw_semi":
            return {s: ("semi", draw) for s in streams}
        return self._known_or(streams, ("attack", step, draw))

    def _known_or(self, streams: Iterable[str], fresh: Key) -> dict[str, Key]:
        """``fresh`` for every stream the attacker does not know, the shared known key otherwise."""
        if self.kind == "white":
            return {s: fresh for s in streams}
        if self.kind == "dw_fwd":
            return {s: (KNOWN if s in FORWARD_STREAMS else fresh) for s in streams}
        return {s: KNOWN for s in streams}  # dw_both

    def eval_keys(self, streams: Iterable[str], run_seed: int, sample_id: int, draw: int) -> dict[str, Key]:
        """Keys of evaluation draw ``draw`` for one sample (clean and adversarial inputs
        use the same draws, so their outcomes are paired)."""
        if self.kind == "dw_semi":
            chosen = derive_seed(run_seed, int(sample_id), "semi-choice", draw) % self.semi_sets
            return {s: ("semi", chosen) for s in streams}
        return self._known_or(streams, ("eval", draw))

    def selection_keys(self, streams: Iterable[str], run_seed: int, sample_id: int, draw: int) -> dict[str, Key]:
        """Keys of *selection* draw ``draw`` for one sample: the attacker's own queries of the
        deployed defense at its final point, drawn like the evaluation's but independent of them.
        The leaderboard chooses each image's strongest attack with these draws and scores it with
        the evaluation draws, so the draws that choose never score (no winner's curse)."""
        if self.kind == "dw_semi":
            chosen = derive_seed(run_seed, int(sample_id), "semi-select", draw) % self.semi_sets
            return {s: ("semi", chosen) for s in streams}
        return self._known_or(streams, ("select", draw))


def parse_setting(text: str) -> Setting:
    """Parse ``white``, ``dw_fwd``, ``dw_both`` or ``dw_semi:K`` (K a positive integer)."""
    if text in ("white", "dw_fwd", "dw_both"):
        return Setting(text)
    if text.startswith("dw_semi"):
        _, _, k = text.partition(":")
        if not (k.isascii() and k.isdigit()) or int(k) < 1:  # isdigit alone passes e.g. '²', which int() refuses
            raise ConfigError(
                f"setting {text!r}: dw_semi needs a positive number of noise sets, e.g. 'dw_semi:128'"
            )
        return Setting("dw_semi", int(k))
    import difflib

    close = difflib.get_close_matches(text, ["white", "dw_fwd", "dw_both", "dw_semi:128"], n=2)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError(f"Unknown setting {text!r}.{hint} Valid settings: {', '.join(SETTING_NAMES)}.")
