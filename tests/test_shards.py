import io
import json
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from conftest import write_tar_members
from edsam.demo.corpus import bomb_png
from edsam.shards import (
    ShardError,
    download_report,
    iter_samples,
    safe_member_key,
    unsafe_key_reasons,
    verify_shard,
    verify_shard_files,
)


def jpeg(colour=(200, 30, 30), size=(16, 16)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_tar(path, samples):
    with wds.TarWriter(str(path)) as sink:
        for key, members in samples:
            sink.write({"__key__": key, **members})
    return path


@pytest.fixture
def good_tar(tmp_path):
    return write_tar(tmp_path / "00000.tar", [(f"{i:04d}", {"jpg": jpeg(), "txt": f"caption {i}"}) for i in range(5)])


def test_good_shard_verifies(good_tar):
    result = verify_shard(good_tar, expected_samples=5, max_pixels=1 << 20)
    assert result["samples"] == 5 and result["bad_images"] == 0 and result["missing_captions"] == 0
    assert result["image_sizes"] == {"16x16": 5}


def test_bad_members_are_counted_not_fatal(tmp_path):
    tar = write_tar(tmp_path / "bad.tar", [
        ("a", {"jpg": jpeg(), "txt": "fine"}),
        ("b", {"jpg": b"\xff\xd8 truncated jpeg", "txt": "broken image"}),
        ("c", {"png": bomb_png(20000), "txt": "bomb"}),
        ("d", {"jpg": jpeg(), "txt": "   "}),
        ("e", {"txt": "no image at all"}),
    ])
    result = verify_shard(tar, expected_samples=5, max_pixels=1 << 20)
    assert result["bad_images"] == 3 and sorted(result["bad_image_keys"]) == ["b", "c", "e"]
    assert result["missing_captions"] == 1


def test_truncated_tar_is_an_error(good_tar, tmp_path):
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good_tar.read_bytes()[:1500])
    with pytest.raises(ShardError, match="cut.tar"):
        verify_shard(cut, expected_samples=5, max_pixels=1 << 20)


def test_count_mismatch_is_an_error(good_tar):
    with pytest.raises(ShardError, match="holds 5 samples but its manifest says 6"):
        verify_shard(good_tar, expected_samples=6, max_pixels=1 << 20)


def test_tar_member_names_are_never_extracted(tmp_path):
    """A hostile member name is read as a key, nothing is written outside."""
    evil = write_tar_members(tmp_path / "evil.tar", [("../../escape.jpg", jpeg()), ("../../escape.txt", b"pwned")])
    before = set(tmp_path.parent.parent.iterdir())
    result = verify_shard(evil, expected_samples=1, max_pixels=1 << 20)
    assert result["samples"] == 1
    assert set(tmp_path.parent.parent.iterdir()) == before


def test_report_joins_manifest_and_verification(good_tar, tmp_path):
    manifest = {"dataset": "d", "shards": [
        {"shard": "00000", "tar": "00000.tar", "count": 6, "successes": 5, "failed_to_download": 1, "failed_to_resize": 0},
        {"shard": "00001", "tar": "00001.tar", "count": 3, "successes": 0, "failed_to_download": 3, "failed_to_resize": 0},
    ]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    verify_shard_files([good_tar], tmp_path / "manifest.json", 1 << 20, tmp_path / "v0.json")
    frame = download_report(tmp_path / "manifest.json", [tmp_path / "v0.json"], tmp_path / "report.tsv")
    assert list(frame.verified_samples) == [5, 0]
    assert pd.read_csv(tmp_path / "report.tsv", sep="\t", dtype={"shard": str}).equals(frame)


def test_verify_rejects_a_shard_missing_from_the_manifest(good_tar, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "d", "shards": []}))
    with pytest.raises(ShardError, match="lists no shard '00000'"):
        verify_shard_files([good_tar], tmp_path / "manifest.json", 1 << 20, tmp_path / "v.json")


# ------------------------------------------------------------------ hostile member names (issue 18)
@pytest.mark.parametrize("key, reasons", [
    ("000123", []),
    ("photo-train-000009", []),
    ("some dir name", []),
    ("../../tmp/evil", ["path_separator", "parent_reference"]),
    ("..", ["parent_reference"]),
    ("/tmp/evil2", ["path_separator", "absolute_path"]),
    ("dir\\x", ["path_separator"]),
    ("C:evil", ["absolute_path"]),
    ("a\nb", ["control_character"]),
    ("a\x1b[31mb", ["control_character"]),
    ("invoice\u202egpj.exe", ["control_character"]),  # a bidi override disguising the name
])
def test_unsafe_key_reasons(key, reasons):
    assert unsafe_key_reasons(key) == reasons


def test_safe_member_key_keeps_safe_keys_and_replaces_the_rest_stably():
    assert safe_member_key("000123") == "000123"
    for hostile in ("../../tmp/evil", "/tmp/evil2", "a\nb", "a.b", "", "\udcff"):
        stand_in = safe_member_key(hostile)
        assert stand_in == safe_member_key(hostile) and stand_in.startswith("key-") and len(stand_in) == 36
        assert not unsafe_key_reasons(stand_in) and "." not in stand_in
    assert safe_member_key("../a") != safe_member_key("../b")


def test_verification_counts_unsafe_keys_per_reason_and_not_as_good(tmp_path):
    members = [(f"{key}.{ext}", data) for key in ("../../tmp/evil", "/tmp/evil2", "sub/dir/x", "a\x07b", "fine")
               for ext, data in (("jpg", jpeg()), ("txt", b"a caption"))]
    tar = write_tar_members(tmp_path / "hostile.tar", members)
    result = verify_shard(tar, expected_samples=5, max_pixels=1 << 20)
    assert result["unsafe_keys"] == {"path_separator": 3, "parent_reference": 1, "absolute_path": 1,
                                     "control_character": 1}
    assert result["unsafe_key_samples"] == 4 and result["good_samples"] == 1
    assert set(result["unsafe_key_examples"]) == {"../../tmp/evil", "/tmp/evil2", "sub/dir/x", "a\x07b"}


def test_links_in_a_shard_are_skipped_not_followed(tmp_path):
    import tarfile

    (tmp_path / "secret.txt").write_text("outside")
    path = write_tar_members(tmp_path / "links.tar", [("a.jpg", jpeg()), ("a.txt", b"caption")])
    with tarfile.open(path, "a") as tar:
        link = tarfile.TarInfo("b.txt")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "secret.txt")
        tar.addfile(link)
        hard = tarfile.TarInfo("c.txt")
        hard.type, hard.linkname = tarfile.LNKTYPE, "a.txt"
        tar.addfile(hard)
    assert [s["__key__"] for s in iter_samples(path)] == ["a"]


def test_a_key_with_a_dot_is_counted_under_its_own_reason(tmp_path):
    tar = write_tar_members(tmp_path / "dotted.tar", [
        ("img.v2.jpg", jpeg()), ("img.v2.txt", b"a valid sample, but its key holds a dot"),
        ("ok.jpg", jpeg()), ("ok.txt", b"fine"),
    ])
    result = verify_shard(tar, expected_samples=2, max_pixels=1 << 20)
    assert result["dotted_keys"] == 1 and result["dotted_key_members"] == ["img.v2.jpg", "img.v2.txt"]
    assert result["missing_captions"] == 0 and result["bad_images"] == 0 and result["good_samples"] == 1


def hostile_corpus(root, key="../../../../escape", path="photo/test/a.png", domain="photo"):
    """A corpus folder (metadata.parquet, images/, classnames.txt, templates.txt) with one hand-edited row."""
    (root / "images" / "photo" / "test").mkdir(parents=True)
    (root / "images" / "photo" / "test" / "a.png").write_bytes(jpeg())
    (root / "secret.png").write_bytes(b"a file outside the image root")
    pd.DataFrame({"key": ["photo-test-000000", key], "path": ["photo/test/a.png", path], "label": [0, 0],
                  "domain": ["photo", domain], "split": ["test", "test"]}).to_parquet(root / "metadata.parquet")
    (root / "classnames.txt").write_text("circle\n")
    (root / "templates.txt").write_text("a photo of a {c}.\n")
    (root / "corpus.json").write_text('{"spec": {"source_domain": "photo"}}')
    return root


def test_benchmark_packaging_writes_safe_names_and_reads_only_inside_the_image_root(tmp_path):
    import tarfile

    from edsam.evaluate.benchmarks import package_corpus_domain

    corpus = hostile_corpus(tmp_path / "corpus")
    package_corpus_domain(corpus, "photo", tmp_path / "bench")
    with tarfile.open(tmp_path / "bench" / "test" / "0.tar") as tar:
        names = tar.getnames()
    assert f"{safe_member_key('../../../../escape')}.png" in names and all("/" not in n for n in names), names
    outside = hostile_corpus(tmp_path / "corpus2", key="k2", path="../secret.png")
    with pytest.raises(ValueError, match="leads outside"):
        package_corpus_domain(outside, "photo", tmp_path / "bench2")


def test_domainbed_export_keeps_every_file_inside_its_root(tmp_path):
    from edsam.domainbed.datasets import export_corpus_domains

    corpus = hostile_corpus(tmp_path / "corpus")
    export_corpus_domains(corpus, tmp_path / "work" / "root")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png") if "corpus" not in p.parts)
    assert written == [Path("work/root/photo/circle") / f"{k}.png"
                       for k in sorted(["photo-test-000000", safe_member_key("../../../../escape")])]
    for kwargs, message in (({"domain": "../../up"}, "domain '../../up' cannot be a file or folder name"),
                            ({"key": "k2", "path": "../secret.png"}, "leads outside")):
        with pytest.raises(ValueError, match=message):
            export_corpus_domains(hostile_corpus(tmp_path / str(len(message)), **kwargs), tmp_path / "other")
