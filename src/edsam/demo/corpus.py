"""The embedded demo corpus: seeded image-caption pairs in named visual domains.

A PACS in miniature. Ten shape classes are rendered in four styles:

* ``photo``: a shaded, coloured shape with a drop shadow over a blurred crop
  of a real photograph (scikit-image's bundled sample images, no download);
* ``cartoon``: flat saturated fill, thick black outline, pastel background;
* ``sketch``: grey pencil outline and hatching on paper, no colour;
* ``painting``: brush-stroke texture, shifted colour statistics, canvas
  background.

Training pairs come from the source domain (``photo`` by default) and carry
captions whose wording varies; the other domains are held out for zero-shot
and linear-probe evaluation of domain generalization.

Every image is a pure function of (seed, domain, split, index): the per-sample
random generator is seeded from those four values, so the same seed gives the
same bytes whatever the corpus size or the order in which images are made.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from edsam.fileio import atomic_path, write_bytes_atomic, write_json_atomic
from edsam.manifest import write_shard_manifest
from edsam.shards import safe_member_key

CLASSNAMES = (
    "circle", "square", "triangle", "star", "hexagon",
    "cross", "heart", "ring", "crescent", "arrow",
)
DOMAINS = ("photo", "cartoon", "sketch", "painting")
SPLITS = ("train", "test")

# Caption wording: several names per class so that captions are not one template.
SYNONYMS = {
    "circle": ("circle", "round disc", "disk"),
    "square": ("square", "square tile", "box shape"),
    "triangle": ("triangle", "three-sided shape", "triangle"),
    "star": ("star", "five-pointed star", "star shape"),
    "hexagon": ("hexagon", "six-sided shape", "hexagonal tile"),
    "cross": ("cross", "plus sign", "cross shape"),
    "heart": ("heart", "heart shape", "love heart"),
    "ring": ("ring", "donut shape", "hollow circle"),
    "crescent": ("crescent", "crescent moon", "sickle shape"),
    "arrow": ("arrow", "arrow sign", "pointer arrow"),
}
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 210),
    "yellow": (236, 200, 30),
    "purple": (148, 73, 189),
    "orange": (245, 127, 14),
}
# scikit-image's bundled photographs and what a caption calls them.
BACKGROUNDS = {
    "coffee": "a coffee cup",
    "chelsea": "a cat",
    "astronaut": "an astronaut",
    "rocket": "a rocket launch",
    "immunohistochemistry": "stained tissue",
    "hubble_deep_field": "the night sky",
    "retina": "an eye scan",
    "brick": "a brick wall",
    "grass": "a lawn",
    "gravel": "gravel",
}
CAPTION_TEMPLATES = (
    "a photo of a {colour} {name}.",
    "a {colour} {name} in front of {background}.",
    "a {size} {colour} {name} on top of {background}",
    "close-up photo of a {name} painted {colour}",
    "{Colour} {name}, photographed against {background}.",
    "there is a {colour} {name} here",
    "a {name} in {colour}",
    "snapshot: {size} {name}, {colour}, with {background} behind it",
)
# Captions that name only the object, as much web alt-text does ("a star."). They are what makes a small CLIP
# look at shapes: with only descriptive captions, a batch can be matched on colour and background alone (a
# batch of 128 rarely holds two images with the same colour and background), and the tiny demo CLIPs then
# reached ~40% zero-shot and ~48% linear probe on photos; with 70% short captions, ~60-75% (README).
SHORT_CAPTION_TEMPLATES = ("a photo of a {name}.", "a {name}.", "{name}", "a picture of a {name}")
OTHER_DOMAIN_CAPTIONS = {
    "cartoon": "a cartoon of a {colour} {name}.",
    "sketch": "a pencil sketch of a {name}.",
    "painting": "a painting of a {colour} {name}.",
}
# Zero-shot prompt templates (CLIP style), one list for every domain: the
# evaluation must not be told which domain it is looking at.
ZERO_SHOT_TEMPLATES = (
    "a photo of a {c}.",
    "a drawing of a {c}.",
    "a picture of a {c} shape.",
    "a {c}.",
)
SUPERSAMPLE = 4  # shapes are drawn at 4x and downsampled, for anti-aliased edges


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Mirrors the ``corpus`` block of the config."""

    seed: int = 0
    image_size: int = 64
    source_domain: str = "photo"
    domains: tuple[str, ...] = DOMAINS
    train_per_class: int = 200  # source domain: the CLIP training pairs
    heldout_train_per_class: int = 30  # other domains: linear-probe training split
    test_per_class: int = 50  # every domain: the evaluation split
    short_caption_fraction: float = 0.7  # source-domain captions that name only the shape
    # Deliberately bad URL-list rows, so the demo exercises the failure paths:
    # missing (404), corrupt (truncated PNG), not_image (HTML body),
    # bomb (PNG header claiming 30000x30000 pixels).
    broken: dict[str, int] = field(default_factory=lambda: {"missing": 0, "corrupt": 0, "not_image": 0, "bomb": 0})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.domains) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown corpus domains {unknown}; allowed: {list(DOMAINS)}")
        if self.source_domain not in self.domains:
            raise ValueError(f"source_domain {self.source_domain!r} is not in domains {list(self.domains)}")
        if not 0 <= self.short_caption_fraction <= 1:
            raise ValueError(f"short_caption_fraction {self.short_caption_fraction} is not in [0, 1]")
        bad_kinds = sorted(set(self.broken) - {"missing", "corrupt", "not_image", "bomb"})
        if bad_kinds:
            raise ValueError(f"unknown broken-row kinds {bad_kinds}")

    @classmethod
    def from_config(cls, corpus_config: dict) -> "CorpusSpec":
        values = dict(corpus_config)
        values["domains"] = tuple(values.get("domains", DOMAINS))
        values["broken"] = dict(values.get("broken", {}))
        return cls(**values)

    def per_class(self, domain: str, split: str) -> int:
        if split == "test":
            return self.test_per_class
        return self.train_per_class if domain == self.source_domain else self.heldout_train_per_class


# --------------------------------------------------------------------- shapes
def _polygon(name: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-radius outline of a polygonal class, as (N, 2) points."""
    if name == "square":
        angles = np.deg2rad([45, 135, 225, 315])
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if name == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(angles), np.sin(angles)], 1) * 1.1
    if name == "hexagon":
        angles = np.deg2rad(np.arange(6) * 60)
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if name == "star":
        angles = np.deg2rad(np.arange(10) * 36 - 90)
        radii = np.where(np.arange(10) % 2 == 0, 1.1, 0.45)
        return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    if name == "cross":
        a, b = 0.33, 1.0
        return np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                         (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])
    if name == "arrow":
        return np.array([(-1.0, -0.28), (0.2, -0.28), (0.2, -0.7), (1.0, 0.0),
                         (0.2, 0.7), (0.2, 0.28), (-1.0, 0.28)])
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return np.stack([x, y + 2.5], 1) / 16.5
    raise KeyError(name)


def shape_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float mask in [0, 1] of one randomly placed, scaled and rotated shape."""
    big = size * SUPERSAMPLE
    radius = rng.uniform(0.26, 0.38) * big
    centre = big / 2 + rng.uniform(-0.12, 0.12, size=2) * big
    angle = np.deg2rad(rng.uniform(-25, 25))
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)

    def disc(c, r, fill):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)

    if name == "circle":
        disc(centre, radius, 255)
    elif name == "ring":
        disc(centre, radius, 255)
        disc(centre, radius * rng.uniform(0.5, 0.62), 0)
    elif name == "crescent":
        disc(centre, radius, 255)
        offset = radius * 0.55 * np.array([np.cos(angle), np.sin(angle)])
        disc(centre + offset, radius * 0.85, 0)
    else:
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = _polygon(name, rng) @ rotation.T * radius + centre
        draw.polygon([tuple(p) for p in points], fill=255)
    small = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.float32) / 255.0


# ------------------------------------------------------------------- domains
@lru_cache(maxsize=None)
def _background_photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    # Crops are blurred down to a few dozen pixels: a 256 px copy is plenty
    # and makes cropping 4x cheaper than the full-size photographs.
    photo = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    photo.thumbnail((256, 256), Image.Resampling.LANCZOS)
    return np.asarray(photo)


def _photo_crop(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    photo = _background_photo(name)
    height, width = photo.shape[:2]
    side = int(rng.uniform(0.3, 0.9) * min(height, width))
    top = rng.integers(0, height - side + 1)
    left = rng.integers(0, width - side + 1)
    crop = Image.fromarray(photo[top:top + side, left:left + side])
    crop = crop.resize((size, size), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(1.2))
    return np.asarray(crop, dtype=np.float32)


def _jitter(rgb, rng, amount=18.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    grown = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(2 * width + 1))
    return np.clip(np.asarray(grown, np.float32) / 255.0 - mask, 0, 1)


def _blend(background: np.ndarray, foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return background * (1 - alpha[..., None]) + foreground * alpha[..., None]


def render_photo(mask, colour, background, rng):
    size = mask.shape[0]
    bg = _photo_crop(background, size, rng)
    shadow = np.roll(mask, (2, 2), axis=(0, 1))
    bg = bg * (1 - 0.45 * shadow[..., None])
    yy, xx = np.mgrid[0:size, 0:size] / size
    direction = rng.uniform(-1, 1, 2)
    shading = 0.8 + 0.35 * (direction[0] * (xx - 0.5) + direction[1] * (yy - 0.5))
    fg = _jitter(colour, rng)[None, None, :] * shading[..., None]
    fg = fg + rng.normal(0, 6, fg.shape)
    return _blend(bg, fg, mask)


def render_cartoon(mask, colour, background, rng):
    size = mask.shape[0]
    pastel = 200 + rng.uniform(0, 55, 3)
    bg = np.broadcast_to(pastel, (size, size, 3)).astype(np.float32).copy()
    horizon = int(rng.uniform(0.55, 0.8) * size)
    bg[horizon:] *= 0.85
    image = _blend(bg, np.asarray(colour, np.float32)[None, None, :], mask)
    return _blend(image, np.zeros(3, np.float32)[None, None, :], _outline(mask, 2))


def render_sketch(mask, colour, background, rng):
    size = mask.shape[0]
    paper = 235 + rng.normal(0, 4, (size, size))
    strokes = np.zeros((size, size), np.float32)
    for _ in range(2):  # two slightly offset pencil passes
        shift = rng.integers(-1, 2, 2)
        strokes = np.maximum(strokes, np.roll(_outline(mask, 1), tuple(shift), axis=(0, 1)))
    yy, xx = np.mgrid[0:size, 0:size]
    period = rng.integers(4, 7)
    hatching = (((xx + yy) % period) == 0).astype(np.float32) * mask * 0.5
    grey = paper - 170 * np.maximum(strokes * rng.uniform(0.7, 1.0), hatching)
    return np.repeat(grey[..., None], 3, axis=2)


def render_painting(mask, colour, background, rng):
    size = mask.shape[0]
    coarse = rng.uniform(90, 230, (4, 4, 3)).astype(np.uint8)
    canvas = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    warm = np.array([1.1, 1.0, 0.8], np.float32)  # painted palette: warmer, less blue
    base = _jitter(colour, rng, 30) * warm
    strokes = Image.new("RGB", (size, size), tuple(int(v) for v in np.clip(base, 0, 255)))
    draw = ImageDraw.Draw(strokes)
    for _ in range(60):
        x, y = rng.uniform(0, size, 2)
        dx, dy = rng.normal(0, 3, 2)
        tone = tuple(int(v) for v in np.clip(base + rng.normal(0, 28, 3), 0, 255))
        draw.line([(x, y), (x + dx, y + dy)], fill=tone, width=2)
    soft = np.asarray(
        Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)), np.float32
    ) / 255.0
    return _blend(canvas * warm, np.asarray(strokes, np.float32), soft)


RENDERERS = {
    "photo": render_photo,
    "cartoon": render_cartoon,
    "sketch": render_sketch,
    "painting": render_painting,
}


# ------------------------------------------------------------------ samples
def sample_rng(seed: int, domain: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, DOMAINS.index(domain), SPLITS.index(split), index])


def make_caption(domain: str, classname: str, colour: str, background: str, rng,
                 short_fraction: float = 0.0) -> str:
    if domain != "photo":
        return OTHER_DOMAIN_CAPTIONS[domain].format(colour=colour, name=classname)
    if rng.random() < short_fraction:
        name = SYNONYMS[classname][rng.integers(len(SYNONYMS[classname]))]
        return SHORT_CAPTION_TEMPLATES[rng.integers(len(SHORT_CAPTION_TEMPLATES))].format(name=name)
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    name = SYNONYMS[classname][rng.integers(len(SYNONYMS[classname]))]
    size = ("small", "large", "medium-sized")[rng.integers(3)]
    return template.format(
        colour=colour, Colour=colour.capitalize(), name=name, size=size, background=BACKGROUNDS[background]
    )


def render_sample(spec: CorpusSpec, domain: str, split: str, index: int) -> tuple[Image.Image, dict]:
    """Render sample ``index`` of (domain, split): the image and its metadata row."""
    rng = sample_rng(spec.seed, domain, split, index)
    label = index % len(CLASSNAMES)
    classname = CLASSNAMES[label]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    mask = shape_mask(classname, spec.image_size, rng)
    pixels = RENDERERS[domain](mask, COLOURS[colour], background, rng)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    caption = make_caption(domain, classname, colour, background, rng, spec.short_caption_fraction)
    key = f"{domain}-{split}-{index:06d}"
    row = {
        "key": key, "domain": domain, "split": split, "label": label, "classname": classname,
        "caption": caption, "path": f"{domain}/{split}/{key}.png",
    }
    return image, row


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# ------------------------------------------------------------- broken rows
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb).

    Only the first rows are present: a decoder that trusts the header
    allocates side*side*3 bytes (2.7 GB at 30000) before it notices.
    """
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\x00" * (3 * side))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def broken_files(spec: CorpusSpec, valid_png: bytes) -> dict[str, bytes | None]:
    """Relative path -> body of each deliberately bad row (None: never served, a 404)."""
    bodies = {
        "missing": None,
        "corrupt": valid_png[: len(valid_png) // 2],
        "not_image": b"<html><body>Not found, but served with status 200</body></html>",
        "bomb": bomb_png(),
    }
    return {
        f"broken/{kind}-{i:03d}.png": bodies[kind]
        for kind, count in sorted(spec.broken.items())
        for i in range(count)
    }


# ------------------------------------------------------------------- corpus
def iter_sample_ids(spec: CorpusSpec):
    for domain in spec.domains:
        for split in SPLITS:
            for index in range(spec.per_class(domain, split) * len(CLASSNAMES)):
                yield domain, split, index


def build_url_list(spec: CorpusSpec, metadata: pd.DataFrame, broken: dict[str, bytes | None]) -> pd.DataFrame:
    """The source domain's training pairs as a URL list, bad rows spread through it.

    URLs are paths relative to the image root; the download stage resolves them
    against the loopback server it starts.
    """
    train = metadata[(metadata.domain == spec.source_domain) & (metadata.split == "train")]
    urls = pd.DataFrame({"url": train.path, "caption": train.caption, "label": train.label})
    if broken:
        rng = np.random.default_rng([spec.seed, 999])
        bad = pd.DataFrame({"url": list(broken), "caption": "a photo of nothing in particular", "label": -1})
        positions = np.sort(rng.choice(len(urls) + len(bad), size=len(bad), replace=False))
        order = np.full(len(urls) + len(bad), -1)
        order[positions] = np.arange(len(bad)) + len(urls)
        order[order < 0] = np.arange(len(urls))
        urls = pd.concat([urls, bad], ignore_index=True).iloc[order]
    return urls.reset_index(drop=True)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def pack_shards(spec: CorpusSpec, domain: str, split: str, out_dir: str | Path,
                per_shard: int = 1000) -> list[tuple[Path, int]]:
    """Render one (domain, split) straight into webdataset shards (png, txt, json): [(path, samples)].

    For data that needs no download stage (the tiny LDM's pretraining corpus,
    evaluation sets). Tar headers get a fixed mtime, so the bytes are a pure
    function of the spec.
    """
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = spec.per_class(domain, split) * len(CLASSNAMES)
    paths = []
    for shard, start in enumerate(range(0, total, per_shard)):
        path = out_dir / f"{shard:05d}.tar"
        with atomic_path(path) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:
            for index in range(start, min(start + per_shard, total)):
                image, row = render_sample(spec, domain, split, index)
                meta = {k: row[k] for k in ("domain", "split", "label", "classname")} | {"seed": spec.seed}
                sink.write({"__key__": safe_member_key(row["key"]), "png": png_bytes(image), "txt": row["caption"],
                            "json": meta})
        paths.append((path, min(start + per_shard, total) - start))
    return paths


def pack_shards_with_manifest(spec: CorpusSpec, domain: str, split: str, out_dir: str | Path, name: str,
                              per_shard: int = 1000) -> dict:
    """:func:`pack_shards` into ``out_dir/shards`` plus a ``manifest.json`` shaped like the download stage's."""
    out_dir = Path(out_dir)
    packed = pack_shards(spec, domain, split, out_dir / "shards", per_shard=per_shard)
    manifest = {"dataset": name, "samples": sum(n for _, n in packed), "spec": spec.__dict__,
                "shards": [{"shard": p.stem, "tar": f"shards/{p.name}", "successes": n} for p, n in packed]}
    return write_shard_manifest(out_dir / "manifest.json", manifest)


def build_corpus(spec: CorpusSpec, out_dir: str | Path) -> dict:
    """Write the corpus under ``out_dir`` and return its summary.

    Layout: ``images/<domain>/<split>/<key>.png``, ``images/broken/*``,
    ``metadata.parquet`` (one row per image), ``urls.parquet`` (the URL list
    the download stage fetches), ``classnames.txt``, ``templates.txt`` and
    ``corpus.json`` (written last: the stage's completion marker).
    """
    out_dir = Path(out_dir)
    image_root = out_dir / "images"
    rows = []
    for domain, split, index in iter_sample_ids(spec):
        image, row = render_sample(spec, domain, split, index)
        write_bytes_atomic(image_root / row["path"], png_bytes(image))
        rows.append(row)
    metadata = pd.DataFrame(rows)
    first_png = (image_root / metadata.path.iloc[0]).read_bytes()
    broken = broken_files(spec, first_png)
    for relative, body in broken.items():
        if body is not None:
            write_bytes_atomic(image_root / relative, body)
    urls = build_url_list(spec, metadata, broken)
    write_parquet_atomic(metadata, out_dir / "metadata.parquet")
    write_parquet_atomic(urls, out_dir / "urls.parquet")
    write_bytes_atomic(out_dir / "classnames.txt", ("\n".join(CLASSNAMES) + "\n").encode())
    write_bytes_atomic(out_dir / "templates.txt", ("\n".join(ZERO_SHOT_TEMPLATES) + "\n").encode())
    summary = {
        "spec": {**spec.__dict__, "domains": list(spec.domains)},
        "classnames": list(CLASSNAMES),
        "images": int(len(metadata)),
        "images_per_domain_split": {
            f"{d}/{s}": int(n) for (d, s), n in metadata.groupby(["domain", "split"]).size().items()
        },
        "url_rows": int(len(urls)),
        "broken_rows": {kind: int(n) for kind, n in sorted(spec.broken.items())},
    }
    write_json_atomic(out_dir / "corpus.json", summary)
    return summary
