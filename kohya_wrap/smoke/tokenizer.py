"""A small CLIP tokenizer directory, written offline, for runs on a random-weight base model.

sd-scripts loads a saved CLIPTokenizer from <tokenizer_cache_dir>/openai_clip-vit-large-patch14
before it tries the hub. The real 49408-token vocabulary is pointless for a model with random
weights; a byte-level vocabulary (every byte, alone and word-final) encodes any text, and a few
merges give the smoke captions whole-word tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from kohya_wrap.fsutil import atomic_write_json, atomic_write_text
from kohya_wrap.sdscripts.base_model import CLIP_TOKENIZER, SD15

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
WORD_END = "</w>"
# Words that get a single token each; everything else is spelled byte by byte.
WHOLE_WORDS = ("photo", "of", "ohwx", "man", "woman", "person", "face", "a", "portrait")


def byte_symbols() -> list[str]:
    """One printable character per byte value, in byte order (the byte-level BPE convention).

    Bytes that are printable Latin-1 stand for themselves; the others (control characters, space,
    and the rest) are moved to code points from 256 up, so no symbol is whitespace.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + shifted)
            shifted += 1
    return [symbols[byte] for byte in range(256)]


def _merges_for(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that join `word` (ASCII) into one word-final token."""
    pieces = [*word[:-1], word[-1] + WORD_END]
    merges = []
    while len(pieces) > 1:
        merges.append((pieces[0], pieces[1]))
        pieces = [pieces[0] + pieces[1], *pieces[2:]]
    return merges


def vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order)."""
    symbols = byte_symbols()
    tokens = [*symbols, *(symbol + WORD_END for symbol in symbols)]
    merges: list[tuple[str, str]] = []
    for word in WHOLE_WORDS:
        for merge in _merges_for(word):
            if merge not in merges:
                merges.append(merge)
    for left, right in merges:
        if left + right not in tokens:
            tokens.append(left + right)
    tokens += [START_TOKEN, END_TOKEN]
    assert len(tokens) <= SD15.text_encoder.vocab_size
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer(cache_dir: Path) -> Path:
    """Write the tokenizer into `cache_dir`/<name sd-scripts looks for>; return that directory.

    `cache_dir` is what sd-scripts' tokenizer cache option takes. Rewritten every time: it is a few
    kilobytes and deterministic.
    """
    directory = CLIP_TOKENIZER.folder(cache_dir)
    vocab, merges = vocabulary()
    atomic_write_text(directory / "vocab.json", json.dumps(vocab, ensure_ascii=False) + "\n")
    # The first line is a header the reader skips.
    atomic_write_text(directory / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": START_TOKEN, "eos_token": END_TOKEN, "unk_token": END_TOKEN, "pad_token": END_TOKEN}
    atomic_write_json(directory / "special_tokens_map.json", special)
    atomic_write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": SD15.text_encoder.max_positions,
            "do_lower_case": True,
            "errors": "replace",
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": True,
            **special,
        },
    )
    return directory
