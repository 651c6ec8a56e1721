"""An offline CLIP tokenizer built from the BPE vocabulary that open_clip ships.

No model hub is reachable in the embedded default, but open_clip's package
carries ``bpe_simple_vocab_16e6.txt.gz``; writing its merges and vocabulary in
the files ``transformers.CLIPTokenizer`` reads gives the same token ids as
OpenAI's CLIP tokenizer (tested against open_clip's own tokenizer).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2  # as in open_clip.tokenizer.SimpleTokenizer


def _bpe_path() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_tokenizer_files(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for ``CLIPTokenizer`` into ``out_dir``."""
    from open_clip.tokenizer import bytes_to_unicode

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(_bpe_path()).read().decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_path, merges_path


def build_clip_tokenizer(out_dir: str | Path, model_max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = write_clip_tokenizer_files(out_dir)
    return CLIPTokenizer(
        str(vocab), str(merges), model_max_length=model_max_length, pad_token="<|endoftext|>"
    )
