"""Embedders offline: the open_clip and timm loaders fail in one line naming the source and the
fix, ``auto`` falls back to the offline embedder and says so, and a local open_clip checkpoint
is the tower that embeds."""

import json

import pytest
import torch

from ldmdetect.features.embeddings import OFFLINE_EMBEDDER, EmbedderUnavailable, load_embedder
from ldmdetect.io.images import load_image
from ldmdetect.io.samples import sample_photos

pytest.importorskip("open_clip")


def test_openclip_weights_not_cached_offline(source_error):
    with pytest.raises(EmbedderUnavailable, match="hub cannot be reached") as info:
        load_embedder("openclip:RN50/openai")
    message = source_error(info, "timm/resnet50_clip.openai", local=False)
    assert "openclip:RN50/PATH" in message


def test_openclip_missing_local_file(tmp_path, source_error):
    missing = tmp_path / "clip.safetensors"
    with pytest.raises(EmbedderUnavailable, match="no such file") as info:
        load_embedder(f"openclip:RN50/{missing}")
    assert "openai" in source_error(info, missing, local=True)  # the known tags are listed


def test_timm_embedder_offline(source_error):
    with pytest.raises(EmbedderUnavailable, match="resnet18") as info:
        load_embedder("timm:resnet18")
    source_error(info, "timm/resnet18.a1_in1k", local=False)


def test_auto_embedder_falls_back_offline_and_says_so():
    # Tests run with the hub set offline and no CLIP weights cached.
    embedder = load_embedder("auto")
    assert embedder.name == OFFLINE_EMBEDDER
    assert "unavailable" in embedder.note and OFFLINE_EMBEDDER in embedder.note
    with pytest.raises(ValueError, match="unknown kind"):
        load_embedder("clip:ViT-B-32")


def test_openclip_embedder_from_a_local_checkpoint(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "tiny-clip-synris.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-clip-synris.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-synris")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    embedder = load_embedder(f"openclip:tiny-clip-synris/{tmp_path / 'tiny.pt'}")
    assert embedder.weights_source == f"file {tmp_path / 'tiny.pt'}"
    photos = [load_image(path) for _, path in sample_photos()[:3]]
    for photo in photos:
        photo.thumbnail((64, 64))
    vectors = embedder.embed_images(photos)
    assert vectors.shape == (3, 16)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    # The tower is the checkpoint's: its image encoder gives the same directions.
    expected = model.eval().encode_image(torch.stack([embedder.preprocess(p) for p in photos]))
    assert torch.allclose(vectors, torch.nn.functional.normalize(expected, dim=1), atol=1e-5)
