import pytest

import labkit
from labkit.presets import ModelSize, PretrainConfig, get_preset


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        get_preset("laptop")
    assert "smoke, cpu, gpu, hub" in str(err.value)


def test_environment_variable_picks_the_preset(monkeypatch):
    monkeypatch.setattr(labkit.presets, "_active", None)
    monkeypatch.setenv("LABKIT_PRESET", "cpu")
    assert get_preset().name == "cpu"
    monkeypatch.setenv("LABKIT_PRESET", "nope")
    with pytest.raises(ValueError, match="Valid presets"):
        get_preset()


def test_use_preset_overrides_for_the_session(monkeypatch):
    monkeypatch.setattr(labkit.presets, "_active", None)
    assert labkit.use_preset("smoke").name == "smoke"
    assert get_preset().name == "smoke"


@pytest.mark.parametrize("kwargs, field", [({"d_model": 30, "n_heads": 4}, "divisible"),
                                           ({"n_layers": 0}, "n_layers")])
def test_model_size_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelSize(**kwargs)


def test_pretrain_config_validation_names_the_field():
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(lr=5.0)


def test_presets_are_frozen():
    with pytest.raises(Exception):
        get_preset("cpu").seed = 3
