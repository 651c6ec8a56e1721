import io
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SMALL_SPEC
from edsam.demo.corpus import CLASSNAMES, DOMAINS, CorpusSpec, bomb_png, build_corpus, render_sample
from edsam.fileio import sha256_file


def tree_digest(root):
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path, small_corpus):
    again = tmp_path / "again"
    build_corpus(CorpusSpec(**SMALL_SPEC), again)
    assert tree_digest(again) == tree_digest(small_corpus)


def test_other_seed_other_images(tmp_path):
    spec = CorpusSpec(**{**SMALL_SPEC, "seed": 4})
    a, _ = render_sample(CorpusSpec(**SMALL_SPEC), "photo", "train", 0)
    b, _ = render_sample(spec, "photo", "train", 0)
    assert a.tobytes() != b.tobytes()


def test_a_sample_does_not_depend_on_corpus_size():
    small = CorpusSpec(**SMALL_SPEC)
    large = CorpusSpec(**{**SMALL_SPEC, "train_per_class": 50})
    assert render_sample(small, "cartoon", "train", 7)[0].tobytes() == render_sample(large, "cartoon", "train", 7)[0].tobytes()


def test_layout_counts_and_balance(small_corpus):
    meta = pd.read_parquet(small_corpus / "metadata.parquet")
    spec = CorpusSpec(**SMALL_SPEC)
    for domain in DOMAINS:
        for split in ("train", "test"):
            part = meta[(meta.domain == domain) & (meta.split == split)]
            assert len(part) == spec.per_class(domain, split) * len(CLASSNAMES)
            assert part.label.value_counts().nunique() == 1  # balanced
    assert all((small_corpus / "images" / p).is_file() for p in meta.path)
    assert (small_corpus / "classnames.txt").read_text().split() == list(CLASSNAMES)
    assert "{c}" in (small_corpus / "templates.txt").read_text()


def test_captions_name_the_class_and_vary(small_corpus):
    meta = pd.read_parquet(small_corpus / "metadata.parquet")
    train = meta[(meta.domain == "photo") & (meta.split == "train")]
    assert train.caption.nunique() == len(train)  # wording varies
    stems = {"cross": "cross|plus", "ring": "ring|donut|hollow", "crescent": "crescent|sickle", "hexagon": "hexagon|six",
             "triangle": "triangle|three", "square": "square|box", "circle": "circle|disc|disk"}
    for _, row in train.iterrows():
        pattern = stems.get(row.classname, row.classname)
        assert pd.Series([row.caption]).str.contains(pattern).item(), row.caption


def test_domains_have_different_image_statistics():
    spec = CorpusSpec(**{**SMALL_SPEC, "image_size": 64})
    stats = {}
    for domain in DOMAINS:
        pixels = np.stack([np.asarray(render_sample(spec, domain, "test", i)[0], float) for i in range(20)])
        saturation = (pixels.max(-1) - pixels.min(-1)).mean()
        stats[domain] = (pixels.mean(), saturation)
    assert stats["sketch"][1] < 1.0  # grey pencil on paper
    assert stats["cartoon"][1] > 40 and stats["painting"][1] > 40
    assert abs(stats["photo"][0] - stats["sketch"][0]) > 30


def test_url_list_spreads_the_bad_rows(small_corpus):
    urls = pd.read_parquet(small_corpus / "urls.parquet")
    assert len(urls) == 30 + 4
    bad = urls[urls.url.str.startswith("broken/")]
    assert sorted(bad.url.str.extract(r"broken/(\w+)-")[0]) == ["bomb", "corrupt", "missing", "not_image"]
    assert not (small_corpus / "images" / "broken" / "missing-000.png").exists()
    assert not urls.url.str.contains("://").any()  # relative: resolved by the download stage


def test_bomb_claims_a_huge_image_but_is_small():
    data = bomb_png(30000)
    assert len(data) < 200_000
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (30000, 30000)
    with pytest.raises(Image.DecompressionBombError):  # Pillow's own guard agrees
        Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    "change, message",
    [({"domains": ("photo", "xray")}, "unknown corpus domains"),
     ({"source_domain": "sketch", "domains": ("photo", "cartoon")}, "source_domain"),
     ({"broken": {"evil": 1}}, "broken-row kinds")],
)
def test_bad_spec_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        CorpusSpec(**{**SMALL_SPEC, **change})
