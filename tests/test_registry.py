import pytest

from bench.core.attack import ATTACKS
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
    with pytest.raises(UnknownNameError, match="Valid attacks: aa_rand, aa_rand_fixed, aa_standard, pgd_eot"):
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
