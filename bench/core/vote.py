"""Majority vote over N purifications as the deployed defense (DiffBreak, NeurIPS 2025).

``NAME[votes=N]`` predicts by the majority over N independent purifications of the same input,
each with its own noise: every stream of the inner defense gets N times its tensors (vote i
uses tensors i·n … (i+1)·n − 1 of a stream with n), so attacker-knowledge settings apply to
all N alike (``dw_fwd`` knows all N forward noises) and seeds stay per sample. The N copies
are stacked into the batch (one call of the inner defense).

Logits. A vote is piecewise constant, so its gradient is zero almost everywhere. The logits
are therefore log(v_c + p̄_c / 2), v_c the number of votes for class c and p̄_c the mean
softmax probability over the N purifications (in (0, 1)): their argmax is the majority class
(p̄/2 < 1 only breaks ties, towards the larger mean probability), and their gradient — exact,
no surrogate — flows through p̄. Attacks thus see the defense as deployed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.defense import Checkpoint, Defense
from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch, StreamSpec


def vote_logits(logits: torch.Tensor) -> torch.Tensor:
    """(B, N, classes) per-purification logits -> (B, classes) log(v_c + p̄_c / 2)."""
    votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype).sum(1)
    mean_prob = F.softmax(logits, dim=-1).mean(1)
    return (votes + mean_prob / 2).log()


class MajorityVote(Defense):
    """``inner`` deployed as a majority vote over ``votes`` purifications."""

    def __init__(self, inner: Defense, votes: int) -> None:
        if votes < 2:
            raise ConfigError(f"votes={votes}: a majority vote needs at least 2 purifications")
        super().__init__(inner.config)
        self.inner, self.votes = inner, int(votes)
        self.name = inner.name
        self.description = f"{inner.description}; majority vote over {votes} purifications"

    def bind_classifier(self, classifier: nn.Module) -> None:
        self.inner.bind_classifier(classifier)

    def noise_spec(self, sample_shape: tuple[int, ...]) -> dict[str, StreamSpec]:
        return {name: StreamSpec(spec.steps * self.votes, spec.shape)
                for name, spec in self.inner.noise_spec(sample_shape).items()}

    def purify(self, x: torch.Tensor, noise: NoiseBatch, checkpoint: Checkpoint = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, votes · inner paths, C, H, W): the N purifications of each input."""
        batch, n = x.shape[0], self.votes
        streams = {}
        for name, spec in self.inner.noise_spec(tuple(x.shape[1:])).items():
            tensors = noise[name]  # (n·steps, B, ...) -> (steps, n·B, ...), vote-major rows
            streams[name] = tensors.view(n, spec.steps, batch, *tensors.shape[2:]).transpose(0, 1).reshape(
                spec.steps, n * batch, *tensors.shape[2:])
        out = self.inner.purify(x.repeat(n, *([1] * (x.dim() - 1))), NoiseBatch(streams), checkpoint=checkpoint)
        out = out.view(n, batch, *out.shape[1:]).transpose(0, 1)  # (B, n, [paths,] C, H, W)
        return out.flatten(1, 2) if out.dim() == x.dim() + 2 else out

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, votes · paths, classes) -> (B, classes); a multi-path inner defense combines its
        own paths first (each vote is one prediction of the inner defense)."""
        batch, classes = logits.shape[0], logits.shape[-1]
        per_vote = logits.view(batch, self.votes, -1, classes)
        if per_vote.shape[2] > 1:
            per_vote = self.inner.combine(per_vote.flatten(0, 1)).view(batch, self.votes, classes)
        else:
            per_vote = per_vote.squeeze(2)
        return vote_logits(per_vote)

    @property
    def paths(self) -> int:
        return self.votes * self.inner.paths

    @property
    def clamps_output(self) -> bool:
        return self.inner.clamps_output

    @property
    def forward_scale(self) -> float:
        return self.inner.forward_scale

    def surrogate(self, steps: int) -> Defense:
        return MajorityVote(self.inner.surrogate(steps), self.votes)

    @property
    def network_calls(self) -> int:
        return self.votes * self.inner.network_calls

    @property
    def nfe(self) -> int:
        return self.votes * self.inner.nfe

    @classmethod
    def pretrained(cls, dataset: str, config: Any) -> Defense:  # pragma: no cover - built by with_vote
        raise NotImplementedError("build a vote with bench.core.vote.with_vote(defense)")

    @classmethod
    def for_testing(cls, config: Any | None = None, channels: int = 1, size: int = 8) -> Defense:  # pragma: no cover
        raise NotImplementedError("build a vote with bench.core.vote.with_vote(defense)")


def with_vote(defense: Defense) -> Defense:
    """``defense`` itself, or a :class:`MajorityVote` of it when its config has ``votes > 1``."""
    votes = getattr(defense.config, "votes", 1)
    if votes < 1:
        raise ConfigError(f"votes={votes} must be at least 1 (1 = no vote)")
    return MajorityVote(defense, votes) if votes > 1 else defense
