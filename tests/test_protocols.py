"""Evaluation protocols as data: the toy protocol covers every plug-in, applies to every entry
alike, is what `bench run --dataset toy` uses, and explicit options win over it."""

from __future__ import annotations

import pytest

from bench.core.attack import ATTACKS
from bench.core.config import build_config
from bench.core.defense import DEFENSES
from bench.core.errors import ConfigError, UnknownNameError
from bench.harness.runner import RunRequest, normalized_request
from bench.protocols import Protocol, available, load_protocol, protocol_for

TOY = load_protocol("toy")


@pytest.mark.parametrize("name", DEFENSES.names())
def test_toy_protocol_budgets_every_defense_with_valid_options(name: str) -> None:
    options = TOY.defense_options(name)
    build_config(DEFENSES.get(name).config_cls, options)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_toy_protocol_budgets_every_attack_with_valid_options(name: str) -> None:
    build_config(ATTACKS.get(name).config_cls, TOY.attack_options(name))


@pytest.mark.parametrize("name", [n for n in DEFENSES.names() if DEFENSES.get(n).addt])
def test_addt_twins_get_their_base_defense_budgets(name: str) -> None:
    assert TOY.defense_options(name) == TOY.defense_options(name.removesuffix("_addt"))


def test_ranking_attacks_are_registered_and_rank() -> None:
    assert TOY.ranking_attacks and all(ATTACKS.get(a).ranks for a in TOY.ranking_attacks)
    assert TOY.n_samples == 256 and TOY.seed == 0


def test_toy_runs_use_the_protocol_and_explicit_options_win() -> None:
    toy = normalized_request(RunRequest(defense="dp_ddpm", attack="aa_rand_fixed"))
    assert toy.protocol == "toy" and toy.defense_config["nfe"] == 20 and toy.attack_config["n_iter"] == 20
    explicit = normalized_request(RunRequest(defense="dp_ddpm", attack="aa_rand_fixed", defense_options={"nfe": "5"},
                                             attack_options={"n_iter": "3"}))
    assert explicit.defense_config["nfe"] == 5 and explicit.attack_config["n_iter"] == 3
    assert explicit.attack_config["eot"] == 10  # the protocol's, where nothing was given
    paper = normalized_request(RunRequest(defense="dp_ddpm", attack="aa_rand_fixed", protocol="paper"))
    assert paper.protocol == "paper" and paper.defense_config["nfe"] == 100 and paper.attack_config["n_iter"] == 100


def test_unknown_or_mismatched_protocols_fail_with_the_valid_choices() -> None:
    with pytest.raises(UnknownNameError, match="Unknown protocol 'tiny'. Valid protocols: paper, toy"):
        load_protocol("tiny")
    with pytest.raises(ConfigError, match="protocol 'toy-v1' is for dataset 'toy', not 'cifar10'"):
        protocol_for("cifar10", "toy")
    assert protocol_for("cifar10", None).key == "paper" and "toy" in available()


def test_a_defense_brings_its_toy_budgets_and_the_file_only_overrides() -> None:
    """One file per defense: the toy budgets are the class's ``toy_options``; the protocol file's
    [defenses] line, when there is one, wins; a defense with neither runs at its defaults."""
    assert TOY.defense_options("gdmp") == DEFENSES.get("gdmp").toy_options == {"iterations": 1, "stride": 4}
    overriding = Protocol("toy", "toy-v1", "toy", "test", defenses={"gdmp": {"stride": 2}},
                          defense_budgets_from="toy_options")
    assert overriding.defense_options("gdmp") == {"iterations": 1, "stride": 2}
    assert TOY.defense_options("none") == {}


def test_the_norm_picks_the_defense_papers_value_unless_given() -> None:
    l2 = normalized_request(RunRequest(defense="diffpure", attack="pgd_eot", norm="l2"))
    assert l2.defense_config["t_star"] == 0.075 and l2.norm_defaults == {"t_star": 0.075}
    linf = normalized_request(RunRequest(defense="diffpure_addt", attack="pgd_eot"))
    assert linf.defense_config["t_star"] == 0.1 and linf.norm_defaults == {}
    given = normalized_request(RunRequest(defense="diffpure", attack="pgd_eot", norm="l2",
                                          defense_options={"t_star": "0.1"}))
    assert given.defense_config["t_star"] == 0.1 and given.norm_defaults == {}
