"""Typed method settings: defaults in one place, clear errors, frozen, same JSON shape."""

import dataclasses

import pytest

from ldmdetect import methods
from ldmdetect.config import DetectorConfig


@pytest.mark.parametrize("name", methods.list_methods())
def test_default_settings_round_trip_through_the_feature_dict(name):
    method = methods.get(name)
    settings = method.Settings()
    assert method.Settings.from_feature(settings.to_feature(), method=name) == settings


@pytest.mark.parametrize("name", methods.list_methods())
def test_settings_are_frozen(name):
    settings = methods.get(name).Settings()
    for f in dataclasses.fields(settings):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(settings, f.name, getattr(settings, f.name))


def test_an_unknown_key_names_the_method_and_the_known_keys():
    with pytest.raises(ValueError, match=r"method 'lare2' has no setting 'timestep'.*guidance"):
        methods.get("lare2").Settings.from_feature({"timestep": 100}, method="lare2")
    with pytest.raises(ValueError, match=r"no setting 'lare.steps'; .*lare.timestep"):
        methods.get("lare2").Settings.from_feature({"lare": {"steps": 2}}, method="lare2")
    with pytest.raises(ValueError, match=r"method 'ae' has no setting 'prompt_template'.*none"):
        methods.make_config("ae", feature={"prompt_template": "x"})


def test_a_bad_value_names_the_field():
    fakeinversion = methods.get("fakeinversion").Settings
    with pytest.raises(ValueError, match=r"'fakeinversion'.*'map_size' must be int, not '32'"):
        fakeinversion.from_feature({"map_size": "32"}, method="fakeinversion")
    with pytest.raises(ValueError, match=r"'inversion.steps' must be int"):
        fakeinversion.from_feature({"inversion": {"steps": 2.5}}, method="fakeinversion")
    with pytest.raises(ValueError, match=r"'inversion'.*steps must be at least 1"):
        fakeinversion.from_feature({"inversion": {"steps": 0}}, method="fakeinversion")
    with pytest.raises(ValueError, match=r"'dire'.*space must be one of"):
        methods.get("dire").Settings.from_feature({"space": "voxel"}, method="dire")
    # JSON integers are accepted where a float is expected (a guidance of 1).
    assert fakeinversion.from_feature(
        {"inversion": {"guidance": 1}}, method="fakeinversion"
    ).inversion.guidance == (1)


def test_legacy_configs_read_with_their_legacy_defaults():
    """DIRE configs saved before ``fit_short_side`` cut native-resolution squares."""
    dire = methods.get("dire")
    old = DetectorConfig(method="dire", feature={"dire": {"image_size": 64, "steps": 2}})
    assert dire.settings(old).dire.fit_short_side is False
    assert dire.Settings().dire.fit_short_side is True
