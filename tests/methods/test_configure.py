"""``make_config``: one fresh config per method, resolved once; nothing writes into it later."""

import copy

import pytest

from ldmdetect import methods
from ldmdetect.engine import train


def _tiny(name: str, pipeline) -> dict:
    import json

    settings = json.dumps(methods.get(name).tiny_settings).replace(
        '"<tiny>"', json.dumps(str(pipeline))
    )
    return json.loads(settings)


@pytest.mark.parametrize("name", methods.list_methods())
def test_building_features_and_the_model_writes_nothing_into_the_config(name, tiny_pipeline_dir):
    method = methods.get(name)
    settings = _tiny(name, tiny_pipeline_dir)
    config = methods.make_config(
        name,
        backbone=settings.get("backbone"),
        input_size=settings.get("input_size"),
        feature=settings.get("feature"),
        pipeline=tiny_pipeline_dir if method.components else None,
    )
    before = copy.deepcopy(config)
    method.build_features(config, device="cpu")
    method.build_model(config, pretrained=False)
    method.transform(config)
    assert config == before


def test_what_features_derive_is_resolved_when_the_config_is_made(tiny_pipeline_dir):
    lare2 = methods.make_config("lare2", pipeline=tiny_pipeline_dir)
    assert lare2.feature["latent_factor"] == 8 and lare2.feature["latent_channels"] == 4
    unguided = methods.make_config("lare2", feature={"guidance": "none"})
    assert "latent_channels" not in unguided.feature and not unguided.components
    aeroblade = methods.make_config(
        "aeroblade", feature={"aeroblade": {"autoencoders": [str(tiny_pipeline_dir)]}}
    )
    assert all(isinstance(s, dict) for s in aeroblade.feature["aeroblade"]["autoencoders"])


def test_the_engine_make_config_is_the_methods_one(tiny_pipeline_dir):
    cfg = train.TrainConfig(method="lare2", input_size=48, feature={"lare": {"image_size": 64}})
    via_train = train.make_config(cfg, methods.get("lare2"), pipeline=tiny_pipeline_dir)
    direct = methods.make_config(
        "lare2", input_size=48, feature={"lare": {"image_size": 64}}, pipeline=tiny_pipeline_dir
    )
    assert via_train == direct
    assert via_train.feature["lare"]["image_size"] == 64
    assert via_train.feature["lare"]["timestep"] == 200  # the rest stays the default
