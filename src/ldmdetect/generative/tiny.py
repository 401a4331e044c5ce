"""Tiny random generator components in Stable Diffusion's on-disk layout.

No model hub is reachable in tests or CI, so every code path that loads SD components is
exercised on these: they are real diffusers/transformers models, saved with
``save_pretrained`` and loaded back through the same ``from_pretrained`` calls users take.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_byte_level_tokenizer(output_dir: str | Path) -> Path:
    """Write a CLIP BPE tokenizer whose vocabulary is the 256 byte symbols and no merges.

    It tokenizes any text (one token per character) without downloading SD's 49k-token
    vocabulary, and loads through ``CLIPTokenizer.from_pretrained`` like the real one.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab_list = symbols + [s + "</w>" for s in symbols] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (output_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (output_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(output_dir / "vocab.json"),
        str(output_dir / "merges.txt"),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=77,
    )
    tokenizer.save_pretrained(output_dir)
    return output_dir


def byte_level_special_ids() -> tuple[int, int]:
    """(bos_id, eos_id) of the byte-level tokenizer, for the text encoder's config."""
    return 512, 513
