import pytest

from bench.core.attack import ATTACKS, leaderboard_attacks
from bench.core.defense import DEFENSES
from bench.core.errors import UnknownNameError
from bench.core.registry import Registry


def test_unknown_name_suggests_and_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        DEFENSES.get("dp_ddmp")
    message = str(err.value)
    assert "'dp_ddmp'" in message
    assert "Did you mean 'dp_ddpm'" in message
    assert f"Valid defenses: {', '.join(DEFENSES.names())}." in message


def test_unknown_attack_lists_attacks() -> None:
    with pytest.raises(UnknownNameError, match="Valid attacks: " + ", ".join(sorted(ATTACKS.names()))):
        ATTACKS.get("pgd")


def test_duplicate_registration_is_an_error() -> None:
    registry: Registry[type] = Registry("thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a")(float)


def test_required_plugins_are_registered() -> None:
    assert {"none", "dp_ddpm", "dp_ddim"} <= set(DEFENSES.names())
    assert "pgd_eot" in ATTACKS.names()


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_plugin_metadata(name: str) -> None:
    cls = DEFENSES.get(name)
    assert cls.name == name and cls.description, "every defense needs a one-line description"
    cls.config_cls()  # defaults must be valid


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_plugin_metadata(name: str) -> None:
    cls = ATTACKS.get(name)
    assert cls.name == name and cls.description
    cls.config_cls()


def test_leaderboard_columns_come_from_the_attack_flags() -> None:
    """Ranking attacks first, unreliable ones after; deterministic-only attacks get no column."""
    assert leaderboard_attacks() == ["aa_rand_fixed", "diffattack", "diffhammer", "pgd_eot", "aa_rand"]
    assert not ATTACKS.get("aa_rand").ranks and ATTACKS.get("aa_standard").needs_deterministic_target
    pgd = ATTACKS.get("pgd_eot")
    newcomer = type("Newcomer", (pgd,), {"description": "a new ranking attack"})
    ATTACKS.register("zz_newcomer")(newcomer)
    try:
        assert leaderboard_attacks()[:5] == ["aa_rand_fixed", "diffattack", "diffhammer", "pgd_eot", "zz_newcomer"]
    finally:
        ATTACKS.unregister("zz_newcomer")


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_configs_declare_what_they_take(name: str) -> None:
    cls = ATTACKS.get(name)
    assert cls.accepts("norm") and cls.accepts("eps")
    assert not (cls.accepts("n_iter") and cls.accepts("step_size")), "APGD sets its own step size"


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_weights_are_data(name: str) -> None:
    from bench.zoo.hub import MODEL_FILES

    cls = DEFENSES.get(name)
    assert all(file in MODEL_FILES for file in cls.model_files.values())
    assert name == "none" or "toy" in cls.model_files, "every network defense runs on the toy suite"
    assert cls.card()["model_files"] == cls.model_files
