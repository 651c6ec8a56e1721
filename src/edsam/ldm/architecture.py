"""A published diffusers pipeline architecture, instantiated offline with random weights.

No model hub is reachable here, but a pipeline's architecture is only its
component configs (``model_index.json``, ``<component>/config.json``, the
scheduler and tokenizer configs). ``models/architectures/ldm-text2im-large-256/``
holds those of the paper's LDM; :func:`build_random_pipeline` builds every
component from them with random weights and saves an ordinary diffusers folder,
which then loads through :class:`edsam.ldm.pipeline.LatentDiffusion` exactly as
the downloaded release would: same classes, shapes, tokenizer code path and
memory. That is what the paper-scale rehearsal and the cost model run on.

A tokenizer's vocabulary file is data, not configuration: a CLIP BPE tokenizer
is rebuilt from the vocabulary open_clip ships (identical ids); a BERT WordPiece
tokenizer gets :func:`write_wordpiece_vocab` (the real size and special-token
ids, other ids differ).
"""

from __future__ import annotations

import gzip
import importlib
import json
import string
import tempfile
from pathlib import Path

from edsam.fileio import sha256_file, write_json_atomic

ARCHITECTURES = Path(__file__).resolve().parents[3] / "models" / "architectures"
BUILD_FACTS = "edsam_architecture.json"

# bert-base-uncased's layout: [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103,
# [unused99..993] 104-998, then characters and word pieces.
BERT_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
BERT_RESERVED = 999


def architecture_dir(name_or_path: str | Path) -> Path:
    """A folder holding model_index.json, or the name of one under models/architectures/."""
    path = Path(name_or_path)
    if not (path / "model_index.json").is_file():
        path = ARCHITECTURES / str(name_or_path)
    if not (path / "model_index.json").is_file():
        known = sorted(p.name for p in ARCHITECTURES.iterdir()) if ARCHITECTURES.is_dir() else []
        raise FileNotFoundError(f"{name_or_path}: no model_index.json there, and not one of {known}")
    return path


def _clip_word_pieces():
    """CLIP's BPE merges in merge (roughly frequency) order, as WordPiece entries: a merge that ends a word
    gives the word and its continuation (``##ing``); any other gives a word start and a word middle."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    for line in gzip.open(bpe).read().decode("utf-8").split("\n")[1:]:
        token = "".join(line.split())
        piece = token.removesuffix("</w>")
        if piece.isascii() and piece.isalnum():
            yield piece.lower()
            yield "##" + piece.lower()


def write_wordpiece_vocab(size: int, path: str | Path) -> Path:
    """A ``vocab.txt`` of ``size`` entries laid out like bert-base-uncased's.

    The special tokens sit at bert-base-uncased's ids (so ``[PAD]`` is 0, LDMBert's
    ``pad_token_id``), then single characters and their ``##`` forms (every
    lower-case ASCII word tokenizes, nothing maps to ``[UNK]``), then common
    English words and pieces from CLIP's BPE list. A caption becomes about as many
    tokens as with the real list, so truncation, padding and the text encoder's
    shapes are the real ones; only which id a word gets differs, which random
    weights cannot tell apart.
    """
    if size < BERT_RESERVED + 2 * len(string.ascii_lowercase + string.digits + string.punctuation):
        raise ValueError(f"a WordPiece vocabulary of {size} entries cannot hold bert-base-uncased's layout")
    vocab = []
    for i in range(BERT_RESERVED):
        vocab.append(BERT_SPECIAL.get(i) or f"[unused{len(vocab) - sum(k < i for k in BERT_SPECIAL)}]")
    seen = set(vocab)
    characters = string.punctuation + string.digits + string.ascii_lowercase
    candidates = [*characters, *("##" + c for c in characters), *_clip_word_pieces()]
    for token in candidates:
        if len(vocab) == size:
            break
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    if len(vocab) < size:
        raise ValueError(f"only {len(vocab)} distinct WordPiece tokens available for a vocabulary of {size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocab) + "\n")
    return path


def _component_class(library: str, name: str):
    if library == "latent_diffusion":  # LDMBertModel lives in diffusers' pipeline module
        library = "diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion"
    return getattr(importlib.import_module(library), name)


def _build_model(cls, folder: Path):
    """A diffusers model or scheduler from its config, or a transformers model from its config.json."""
    if hasattr(cls, "from_config") and hasattr(cls, "load_config"):
        return cls.from_config(cls.load_config(str(folder)))
    return cls(cls.config_class.from_json_file(str(folder / "config.json")))


def _build_tokenizer(cls, folder: Path, work: Path, vocab_size: int):
    config = json.loads((folder / "tokenizer_config.json").read_text())
    kwargs = {k: v for k, v in config.items() if k not in ("tokenizer_class", "name_or_path", "special_tokens_map_file")}
    if cls.__name__.startswith("CLIPTokenizer"):
        from edsam.ldm.tokenizer import build_clip_tokenizer

        return build_clip_tokenizer(work, model_max_length=kwargs.get("model_max_length", 77))
    if cls.__name__.startswith("BertTokenizer"):
        return cls(str(write_wordpiece_vocab(vocab_size, work / "vocab.txt")), **kwargs)
    raise ValueError(f"{folder}: no offline vocabulary for a {cls.__name__}")


def random_pipeline(architecture, seed: int = 0):
    """Every component of ``architecture`` (a folder of configs or a name under models/architectures/) with
    random weights, as a diffusers pipeline in memory; and the parameter count of each model component."""
    import diffusers
    import torch

    source = architecture_dir(architecture)
    index = json.loads((source / "model_index.json").read_text())
    entries = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list)}
    torch.manual_seed(seed)
    components, parameters = {}, {}
    for name, (library, class_name) in sorted(entries.items()):
        if library is None or name == "tokenizer":
            components[name] = None
            continue
        components[name] = _build_model(_component_class(library, class_name), source / name)
        if isinstance(components[name], torch.nn.Module):
            parameters[name] = sum(p.numel() for p in components[name].parameters())
    text_encoder = next(m for m in components.values() if hasattr(getattr(m, "config", None), "vocab_size"))
    with tempfile.TemporaryDirectory() as work:  # the vocabulary is read into the tokenizer here
        components["tokenizer"] = _build_tokenizer(_component_class(*entries["tokenizer"]), source / "tokenizer",
                                                   Path(work), text_encoder.config.vocab_size)
    return getattr(diffusers, index["_class_name"])(**components), parameters


def build_random_pipeline(architecture, out_dir: str | Path, seed: int = 0, half: bool = True) -> dict:
    """:func:`random_pipeline`, saved as a diffusers folder in ``out_dir``.

    Weights are written in fp16 when ``half`` (random weights lose nothing, and
    the paper's LDM is 6.2 GB in fp32); loaders cast to their own precision.
    Returns the facts written to ``out_dir/edsam_architecture.json``.
    """
    import torch

    source = architecture_dir(architecture)
    pipeline, parameters = random_pipeline(source, seed)
    if half:
        pipeline.to(torch.float16)
    out_dir = Path(out_dir)
    pipeline.save_pretrained(str(out_dir), safe_serialization=True)
    facts = {
        "architecture": str(source), "pipeline": type(pipeline).__name__, "seed": seed,
        "dtype": "float16" if half else "float32", "parameters": parameters,
        "config_sha256": {str(p.relative_to(source)): sha256_file(p) for p in sorted(source.rglob("*.json"))},
        "weights": "random (torch's default initialisation of each component class)",
    }
    write_json_atomic(out_dir / BUILD_FACTS, facts)
    return facts
