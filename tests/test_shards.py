import io
import json

import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from edsam.corpus import bomb_png
from edsam.shards import ShardError, download_report, verify_shard, verify_shard_files


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
    import tarfile

    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, data in (("../../escape.jpg", jpeg()), ("../../escape.txt", b"pwned")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = set(tmp_path.parent.parent.iterdir())
    result = verify_shard(evil, expected_samples=1, max_pixels=1 << 20)
    assert result["samples"] == 1
    assert set(tmp_path.parent.parent.iterdir()) == before


def test_report_joins_manifest_and_verification(good_tar, tmp_path):
    manifest = {"dataset": "d", "shards": [
        {"shard": "00000", "count": 6, "successes": 5, "failed_to_download": 1, "failed_to_resize": 0},
        {"shard": "00001", "count": 3, "successes": 0, "failed_to_download": 3, "failed_to_resize": 0},
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
