import http.server
import json
import socket
import threading
import time
import urllib.request

import pandas as pd
import pytest

from edsam.download import (
    DownloadError,
    DownloadSettings,
    clean_rows,
    diagnose_body,
    download_dataset,
    failure_category,
    prepare_url_list,
    repair_partial_shards,
    shard_paths,
)
from edsam.demo.loopback import LoopbackServer
from edsam.shards import iter_samples


def settings_for(corpus, **overrides):
    values = dict(
        url_list=str(corpus / "urls.parquet"), loopback_root=str(corpus / "images"), image_size=32,
        resize_mode="no", number_sample_per_shard=10, processes_count=1, thread_count=4, timeout=5,
        min_success_rate=0.8, max_image_pixels=1 << 20, save_additional_columns=("label",),
    )
    values.update(overrides)
    return DownloadSettings(name="small", **values)


@pytest.fixture(scope="module")
def downloaded(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("download")
    manifest = download_dataset(settings_for(small_corpus), out)
    return out, manifest


def test_manifest_counts_every_failure_kind(downloaded):
    out, manifest = downloaded
    assert manifest["rows"] == 34 and manifest["samples"] == 30
    assert manifest["success_rate"] == pytest.approx(30 / 34)
    # one stable category per bad row of the corpus (edsam.demo.corpus.broken_files), the library's text as detail
    assert manifest["failures"] == {"http_404": 1, "not_an_image": 1, "pixel_limit": 1, "truncated_image": 1}
    details = manifest["failure_details"]
    assert list(details["http_404"]) == ["HTTP Error 404: File not found"]
    assert "CV_IO_MAX_IMAGE_PIXELS" in next(iter(details["pixel_limit"]))  # the bomb, refused from its header
    assert list(details["not_an_image"]) == ["not_an_image: Image decoding error"]  # the HTML page
    assert manifest["loopback_requests"] == {"200": 33, "404": 1}
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_shards_are_readable_webdataset_with_captions(downloaded, small_corpus):
    out, manifest = downloaded
    assert manifest["num_shards"] == 4  # 34 rows, 10 per shard
    captions = dict(pd.read_parquet(small_corpus / "urls.parquet")[["url", "caption"]].values)
    seen = 0
    for tar in shard_paths(out / "manifest.json"):
        for sample in iter_samples(tar):
            meta = json.loads(sample["json"])
            assert sample["txt"].decode() == captions[meta["url"].split("/", 3)[3]]
            assert meta["label"] >= 0
            seen += 1
    assert seen == 30


def test_nothing_but_img2dataset_output_in_shard_folder(downloaded):
    out, manifest = downloaded
    names = {p.name for p in (out / "shards").iterdir()}
    assert {n for n in names if n.endswith(".json")} == {f"{s['shard']}_stats.json" for s in manifest["shards"]}
    assert not (out / "shards" / "manifest.json").exists()


def test_resume_refetches_only_the_unfinished_shard(small_corpus, tmp_path):
    settings = settings_for(small_corpus)
    first = download_dataset(settings, tmp_path)
    shards = tmp_path / "shards"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards.glob("*.tar")}
    # a job killed while writing shard 00001: tar cut short, stats never written
    (shards / "00001_stats.json").unlink()
    (shards / "00001.tar").write_bytes(before["00001.tar"][1][:700])
    second = download_dataset(settings, tmp_path)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shards.glob("*.tar")}
    for name in ("00000.tar", "00002.tar", "00003.tar"):
        assert after[name] == before[name]  # finished shards never redone
    assert after["00001.tar"][0] != before["00001.tar"][0]
    # the refetched shard holds the same samples (tar headers carry write times, so compare members)
    assert shard_content(shards / "00001.tar") == shard_content_from(before["00001.tar"][1], tmp_path)
    fetched = sum(second["loopback_requests"].values())
    assert fetched == first["shards"][1]["count"]  # only shard 1's URLs were requested
    assert second["samples"] == first["samples"]


def shard_content(tar):
    # img2dataset writes samples in download-completion order: compare by key
    return sorted((s["__key__"], s["jpg"], s["txt"]) for s in iter_samples(tar))


def shard_content_from(data, tmp_path):
    copy = tmp_path / "before.tar"
    copy.write_bytes(data)
    return shard_content(copy)


def test_corrupt_stats_marker_is_redone(tmp_path):
    (tmp_path / "00000.tar").write_bytes(b"x")
    (tmp_path / "00000_stats.json").write_text('{"successes": 3}')
    (tmp_path / "00001.tar").write_bytes(b"x")
    (tmp_path / "00001_stats.json").write_text('{"succ')       # killed mid-write
    (tmp_path / "00002_stats.json").write_text('{"successes": 1}')  # tar lost
    assert repair_partial_shards(tmp_path) == ["00001", "00002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.tar", "00000_stats.json"]


def test_low_success_rate_fails_with_reasons(small_corpus, tmp_path):
    with pytest.raises(DownloadError) as error:
        download_dataset(settings_for(small_corpus, min_success_rate=0.95), tmp_path)
    message = str(error.value)
    assert "success rate 0.882" in message and "min_success_rate=0.95" in message
    assert "http_404: 1 (e.g. 'HTTP Error 404: File not found')" in message
    assert not (tmp_path / "manifest.json").exists()
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 4  # kept for the resumed run


def test_clean_rows_drops_and_truncates():
    frame = pd.DataFrame({
        "url": ["https://a.org/1.jpg", "file:///etc/passwd", None, "img/2.png", "http://b.org/3.jpg", "ftp://c/4"],
        "caption": ["ok", "secret", "no url", "relative", None, "ftp"],
    })
    settings = DownloadSettings(name="x", url_list="-", max_caption_chars=16)
    cleaned, counts = clean_rows(frame, settings, base_url=None)
    assert list(cleaned.url) == ["https://a.org/1.jpg"]
    assert counts == {"rows": 6, "kept": 1, "dropped_missing_url": 1, "dropped_disallowed_scheme": 3,
                      "dropped_missing_caption": 1, "truncated_caption": 0}
    long = pd.DataFrame({"url": ["a.png"], "caption": ["x" * 5000]})
    cleaned, counts = clean_rows(long, settings, base_url="http://127.0.0.1:1/")
    assert cleaned.url.item() == "http://127.0.0.1:1/a.png"
    assert cleaned.caption.item() == "x" * 16 and counts["truncated_caption"] == 1


def test_prepare_reads_csv_and_tsv_folders(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    pd.DataFrame({"URL": ["http://x/1.jpg", "http://x/2.jpg"], "TEXT": ["a", "b"]}).to_csv(folder / "a.tsv", sep="\t", index=False)
    pd.DataFrame({"URL": ["http://x/3.jpg"], "TEXT": ["c"]}).to_csv(folder / "b.tsv", sep="\t", index=False)
    settings = DownloadSettings(name="x", url_list=str(folder), input_format="tsv", url_col="URL", caption_col="TEXT")
    report = prepare_url_list(settings, tmp_path / "out", tmp_path / "prepare.json")
    assert report["rows"] == 3 and report["outputs"] == ["00000.parquet", "00001.parquet"]
    again = prepare_url_list(settings, tmp_path / "out", tmp_path / "prepare.json")
    assert again == report  # fingerprint unchanged: not rescanned


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "URL list not found"),
        (lambda d: pd.DataFrame({"link": ["http://x"], "caption": ["c"]}).to_parquet(d / "urls.parquet"), "missing column(s) ['url']"),
        (lambda d: (d / "urls.parquet").write_bytes(b"PAR1 not really"), "cannot read as parquet"),
    ],
)
def test_bad_url_list_names_the_file(tmp_path, setup, message):
    setup(tmp_path)
    settings = DownloadSettings(name="x", url_list=str(tmp_path / "urls.parquet"))
    with pytest.raises(DownloadError) as error:
        download_dataset(settings, tmp_path / "out")
    assert message in str(error.value) and "urls.parquet" in str(error.value)


def test_loopback_server_refuses_to_leave_its_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    with LoopbackServer(root) as server:
        assert urllib.request.urlopen(server.base_url + "a.txt").read() == b"inside"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.base_url + "../secret.txt")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.base_url + "%2e%2e/secret.txt")
    assert server.base_url.startswith("http://127.0.0.1:")


# ------------------------------------------------------------------ failure categories (issue 18)
# The texts img2dataset 1.47 records for each case (its parquet's error_message, its stats' status_dict).
@pytest.mark.parametrize("text, category", [
    ("HTTP Error 404: Not Found", "http_404"),
    ("HTTP Error 500: Internal Server Error", "http_500"),
    ("HTTP Error 403: Forbidden", "http_403"),
    ("<urlopen error [Errno 111] Connection refused>", "connection"),
    ("<urlopen error [Errno -2] Name or service not known>", "connection"),
    ("Remote end closed connection without response", "connection"),
    ("timed out", "timeout"),
    ("<urlopen error timed out>", "timeout"),
    ("IncompleteRead(10 bytes read, 990 more expected)", "incomplete_body"),
    ("<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed>", "tls"),
    ("URL can't contain control characters. '/a b.jpg' (found at least ' ')", "bad_url"),
    ("Use of image disallowed by X-Robots-Tag directive", "opted_out"),
    ("OpenCV(4.14.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:1310: error: (-215:Assertion failed) "
     "!buf.empty() in function 'imdecode_'", "empty_body"),
    ("OpenCV(4.14.0) /io/opencv/modules/imgcodecs/src/loadsave.cpp:79: error: (-215:Assertion failed) "
     "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'", "pixel_limit"),
    ("image area too large", "pixel_limit"),
    ("Image decoding error", "undecodable_image"),
    ("not_an_image: Image decoding error", "not_an_image"),
    ("truncated_image: Image decoding error", "truncated_image"),
    ("something new", "other"),
])
def test_failure_texts_map_to_stable_categories(text, category):
    assert failure_category(text) == category


def _image(fmt, size=(32, 32)):
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_undecodable_bodies_are_told_apart():
    from edsam.demo.corpus import bomb_png

    jpg, png = _image("JPEG", (64, 64)), _image("PNG")
    assert diagnose_body(b"", 1 << 20) == "empty_body"
    assert diagnose_body(b"<html><body>Not found</body></html>", 1 << 20) == "not_an_image"
    assert diagnose_body(jpg[: len(jpg) // 2], 1 << 20) == "truncated_image"
    assert diagnose_body(png[:40] + bytes(200), 1 << 20) == "corrupt_image"  # a PNG signature, garbage after it
    assert diagnose_body(bomb_png(), 1 << 20) == "pixel_limit"
    assert diagnose_body(_image("GIF"), 1 << 20) == "unsupported_format"  # Pillow reads it, OpenCV may not


class _HostileServer(http.server.BaseHTTPRequestHandler):
    """Every way a URL can fail, on 127.0.0.1."""

    bodies: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/slow":
            time.sleep(3)  # past the download's 1 s timeout
        if self.path == "/short":  # promises 1000 bytes, sends 10
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x89PNG\r\n\x1a\n..")
            self.close_connection = True
        elif self.path in self.bodies:
            body = self.bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(500 if self.path == "/error" else 404)


def test_every_failure_kind_is_counted_under_its_category(tmp_path):
    from edsam.demo.corpus import bomb_png

    jpg = _image("JPEG", (64, 64))
    _HostileServer.bodies = {"/ok.jpg": jpg, "/empty": b"", "/html": b"<html>an error page</html>",
                             "/cut.jpg": jpg[: len(jpg) // 2], "/bomb.png": bomb_png(), "/slow": jpg}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}{p}" for p in ("/ok.jpg", "/empty", "/html", "/cut.jpg", "/bomb.png", "/slow", "/short",
                                   "/error", "/gone")] + [f"http://127.0.0.1:{dead}/x.jpg"]
    pd.DataFrame({"url": urls, "caption": [f"caption {i}" for i in range(len(urls))]}).to_parquet(tmp_path / "u.parquet")
    settings = DownloadSettings(name="hostile", url_list=str(tmp_path / "u.parquet"), image_size=32, resize_mode="no",
                                processes_count=1, thread_count=4, timeout=1, min_success_rate=0.0,
                                max_image_pixels=1 << 20)
    try:
        manifest = download_dataset(settings, tmp_path / "out")
    finally:
        server.shutdown()
    assert manifest["samples"] == 1
    assert manifest["failures"] == {category: 1 for category in (
        "connection", "empty_body", "http_404", "http_500", "incomplete_body", "not_an_image", "pixel_limit",
        "timeout", "truncated_image")}
    # the raw text stays, as detail; the per-sample parquet carries the diagnosis too
    assert "!buf.empty()" in next(iter(manifest["failure_details"]["empty_body"]))
    errors = pd.read_parquet(next((tmp_path / "out" / "shards").glob("*.parquet"))).error_message.dropna()
    assert sorted(failure_category(e) for e in errors) == sorted(manifest["failures"])


def test_under_log_the_error_line_reaches_stderr_and_the_log(tmp_path):
    """`python -m edsam --log FILE ...` (what the download rules run): output to FILE, the error line on the
    job's stderr as well, which is Snakemake's console for a local job."""
    import subprocess
    import sys

    settings = {"dataset": {"url_list": str(tmp_path / "nowhere.parquet")}, "download": {}}
    log = tmp_path / "logs" / "download.log"
    result = subprocess.run([sys.executable, "-m", "edsam", "--log", str(log), "download", "--dataset", "x",
                             "--settings", json.dumps(settings), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    line = f"edsam download: error: {tmp_path / 'nowhere.parquet'}: URL list not found (datasets.*.url_list)"
    assert result.returncode == 1
    assert result.stderr.strip() == line and result.stdout == ""
    assert line in log.read_text()
