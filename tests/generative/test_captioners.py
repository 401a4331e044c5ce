"""Captioners: spec parsing, the model-free captioners, and BLIP-2 on a tiny saved checkpoint
loaded back through the same path as ``Salesforce/blip2-opt-2.7b``."""

from pathlib import Path

import pytest
import torch

from ldmdetect.generative.captioners import (
    DEFAULT_BLIP2,
    MAX_NEW_TOKENS,
    Blip2Captioner,
    FixedCaptioner,
    SidecarCaptioner,
    parse_captioner,
)
from ldmdetect.generative.loading import ComponentLoadError
from ldmdetect.generative.tiny_blip2 import write_tiny_blip2


@pytest.fixture(scope="module")
def tiny_blip2_dir(tmp_path_factory) -> Path:
    return write_tiny_blip2(tmp_path_factory.mktemp("tiny-blip2"), seed=0)


def _images(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    """Flat colours (black, white, red, blue, ...) plus a little noise: distinct pictures."""
    generator = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]])
    colours = palette[torch.arange(n) % len(palette)][:, :, None, None].float()
    noise = torch.randn(n, 3, size, size, generator=generator) * 8
    return (colours + noise).clamp(0, 255).round().to(torch.uint8)


def test_parse_captioner_specs_round_trip():
    assert parse_captioner("fixed:a photo") == FixedCaptioner("a photo")
    assert parse_captioner("fixed:") == FixedCaptioner("")
    assert parse_captioner("fixed:a: b").text == "a: b"  # only the first colon splits
    assert isinstance(parse_captioner("sidecar"), SidecarCaptioner)
    assert parse_captioner("blip2").source == DEFAULT_BLIP2
    assert parse_captioner(None).source == DEFAULT_BLIP2
    assert parse_captioner("blip2:/models/blip2").source == "/models/blip2"
    for spec in ("fixed:a photo", "sidecar", "blip2", "blip2:/models/blip2"):
        assert parse_captioner(spec).spec == spec
    with pytest.raises(ValueError, match="unknown captioner"):
        parse_captioner("clip")
    with pytest.raises(ValueError, match="fixed:TEXT"):
        parse_captioner("fixed")


def test_model_free_captioners():
    images = _images(3)
    assert FixedCaptioner("a photo")(images, ["x", "y", "z"]) == ["a photo"] * 3
    assert SidecarCaptioner()(images, ["a cat", "", "a dog"]) == ["a cat", "", "a dog"]


def test_blip2_captions_batched_like_one_by_one(tiny_blip2_dir):
    captioner = parse_captioner(f"blip2:{tiny_blip2_dir}", device="cpu")
    assert isinstance(captioner, Blip2Captioner)
    images = _images(4)
    captions = captioner(images, [""] * 4)
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    # The tiny vocabulary is one character per token, so a caption's length counts its tokens.
    assert all(0 < len(c) <= MAX_NEW_TOKENS for c in captions)
    assert len(set(captions)) > 1  # the images, not a constant, drive the captions
    singles = [captioner(images[i : i + 1], [""])[0] for i in range(4)]
    assert singles == captions
    # Different-sized inputs are resized by the processor.
    assert len(captioner(_images(2, size=57, seed=1), ["", ""])) == 2
    assert captioner(images[:0], []) == []


def test_blip2_respects_max_new_tokens(tiny_blip2_dir):
    captioner = Blip2Captioner(str(tiny_blip2_dir), device="cpu", max_new_tokens=5)
    assert all(len(c) <= 5 for c in captioner(_images(3), [""] * 3))


def test_blip2_load_errors_name_the_source(tmp_path, source_error):
    missing = tmp_path / "missing"
    with pytest.raises(ComponentLoadError, match="captioner") as info:
        parse_captioner(f"blip2:{missing}", device="cpu")(_images(1), [""])
    assert "--captioner sidecar" in source_error(info, missing, local=True)
    with pytest.raises(ComponentLoadError, match="captioner") as info:
        Blip2Captioner("nobody/no-such-blip2", device="cpu").load()
    assert "--captioner blip2:DIR" in source_error(info, "nobody/no-such-blip2", local=False)
