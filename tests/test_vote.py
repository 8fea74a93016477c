"""Majority vote over N purifications as a deployed defense (bench/core/vote.py)."""

import pytest
import torch

from bench.core.errors import ConfigError
from bench.core.noise import NoiseBatch
from bench.core.vote import vote_logits
from tests.conftest import make_target, tiny_model


SMALL = {"dp_ddpm": {"nfe": 5}, "gdmp": {"purify_step": 3, "iterations": 2, "paths": 2}, "diffpure": {"dt": 0.025}}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_vote_prediction_is_the_majority_of_its_draws(name: str, images: torch.Tensor) -> None:
    votes = 5
    model = tiny_model(name, votes=votes, **SMALL[name])
    inner = tiny_model(name, **SMALL[name])
    assert model.defense.nfe == votes * inner.defense.nfe
    target = make_target(model, "white", [0, 1, 2, 3])
    noise, _ = target.attack_noise(images, 0, 1)
    with torch.no_grad():
        voted = model(images, noise).argmax(-1)
        per_draw = []
        for i in range(votes):  # vote i uses tensors i·n ... (i+1)·n − 1 of every stream
            sliced = NoiseBatch({k: v.view(votes, -1, *v.shape[1:])[i] for k, v in noise.streams.items()})
            per_draw.append(inner(images, sliced))
    logits = torch.stack(per_draw, dim=1)  # (B, N, classes)
    counts = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(1)
    mean_prob = logits.softmax(-1).mean(1)
    for b in range(images.shape[0]):
        top = counts[b].max()
        tied = (counts[b] == top).nonzero().flatten()
        expected = tied[mean_prob[b, tied].argmax()]  # ties go to the larger mean probability
        assert voted[b] == expected


def test_vote_logits_break_ties_by_mean_probability_and_have_gradients() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]], requires_grad=True)  # one vote each
    scores = vote_logits(logits)
    assert scores.argmax(-1).item() == 1  # tie 1:1, class 1 has the larger mean probability
    scores[0, 1].backward()
    assert logits.grad.abs().sum() > 0


def test_votes_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="votes=0"):
        tiny_model("dp_ddpm", votes=0)
