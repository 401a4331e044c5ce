"""Embedders offline: the open_clip and timm loaders fail in one line naming the source and the
fix (``auto``'s fallback is tested in tests/engine/test_synris.py)."""

import pytest

from ldmdetect.features.embeddings import EmbedderUnavailable, load_embedder

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
