"""A tiny random BLIP-2 captioner in the hub's on-disk layout, for tests and smoke runs.

BLIP-2 OPT-2.7b is 3.9 B parameters and out of reach offline, so the captioning path is
exercised on this: a real ``Blip2ForConditionalGeneration`` (ViT + Q-Former + OPT) at tiny
widths with a real ``Blip2Processor``, written with ``save_pretrained`` and loaded back through
the same ``from_pretrained`` calls as the real checkpoint. Its words are random, but they are
real tokens: the vocabulary is the printable ASCII characters, so captions read as text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ldmdetect.generative.tiny import _byte_symbols, _seeded
from ldmdetect.io.files import atomic_write_text

TINY_BLIP2_IMAGE_SIZE = 32
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"


def _write_ascii_tokenizer_files(output_dir: Path) -> dict[str, int]:
    """GPT-2 byte-level BPE files whose vocabulary is printable ASCII (space as "Ġ")."""
    symbols = _byte_symbols()
    tokens = [symbols[b] for b in range(32, 127)]  # " " .. "~"; symbols[32] is "Ġ"
    vocab = {tok: i for i, tok in enumerate(tokens)}
    for special in (EOS_TOKEN, PAD_TOKEN):
        vocab[special] = len(vocab)
    atomic_write_text(output_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(output_dir / "merges.txt", "#version: 0.2\n")
    return vocab


def write_tiny_blip2(output_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write a tiny random BLIP-2 (model + processor) that ``Blip2ForConditionalGeneration``
    and ``AutoProcessor`` load with ``from_pretrained(output_dir)``."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        GPT2Tokenizer,
        OPTConfig,
    )

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vocab = _write_ascii_tokenizer_files(output_dir)
    tokenizer = GPT2Tokenizer(
        str(output_dir / "vocab.json"),
        str(output_dir / "merges.txt"),
        bos_token=EOS_TOKEN,  # OPT's convention: </s> starts and ends a sequence
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
    )
    num_query_tokens = 4
    size = TINY_BLIP2_IMAGE_SIZE
    processor = Blip2Processor(
        BlipImageProcessor(size={"height": size, "width": size}),
        tokenizer,
        num_query_tokens=num_query_tokens,
    )  # adds the "<image>" token to the tokenizer
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    hidden = 32
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=size,
            patch_size=8,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            encoder_hidden_size=hidden,
            vocab_size=len(tokenizer),
        ).to_dict(),
        text_config=OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            word_embed_proj_dim=hidden,
            num_hidden_layers=1,
            ffn_dim=2 * hidden,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=vocab[EOS_TOKEN],
            eos_token_id=vocab[EOS_TOKEN],
            pad_token_id=vocab[PAD_TOKEN],
        ).to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token,
    )
    with _seeded(seed):
        model = Blip2ForConditionalGeneration(config).eval()
    # An untrained LM says "</s>" as readily as anything else; make it unlikely, so that the
    # tiny captioner's captions are not empty and tests see real text come through.
    with torch.no_grad():
        model.language_model.lm_head.weight[vocab[EOS_TOKEN]].zero_()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
