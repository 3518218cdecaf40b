"""The downloader's guarantees, against a loopback HTTP server (no real network).

After every failure the cache holds exactly the good file or nothing, and never
a ``.partial``. A second call is a pure cache hit (the server's request count
does not change), and a cached file keeps working offline.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import pathlib
import signal
import subprocess
import socket
import sys
import threading
import warnings

import pytest

from npxception import download, pretrained
from npxception.download import DownloadError, file_hash, get_file

GOOD = bytes(range(256)) * 3000  # 768 kB: several reads, so the progress bar redraws
OTHER = b"not the file you asked for " * 1000
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()
GOOD_SHA256 = hashlib.sha256(GOOD).hexdigest()
OTHER_MD5 = hashlib.md5(OTHER).hexdigest()
OTHER_SHA256 = hashlib.sha256(OTHER).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        with server.lock:
            server.requests[self.path] = server.requests.get(self.path, 0) + 1
        name = self.path.rsplit("/", 1)[-1]
        if name == "good.bin" or self.path.startswith("/good/"):
            self._send(GOOD)
        elif name == "wrong.bin" or self.path.startswith("/mirror/"):
            self._send(OTHER)
        elif name == "truncated.bin":
            self._send(GOOD[: len(GOOD) // 2], length=len(GOOD))  # then the connection closes
        elif name == "slow.bin":
            self._send(GOOD[:100], length=len(GOOD))
            server.release.wait(5)  # hang until the client has timed out (or teardown)
        elif name == "drip.bin":  # a byte at a time, for ever: no single read ever times out
            self._drip(length=len(GOOD))
        elif self.path.startswith("/huge/"):  # announces 1.9 GB (under the generic 2 GB cap), sends 1 kB
            self._send(b"\0" * 1000, length=1_900_000_000)
        elif name == "endless.bin":  # no Content-Length, a body that never ends
            self._drip(length=None, chunk=b"\0" * 65536, pause=0)
        elif name == "error.bin":
            self.send_error(500)
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int | None = None):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def _drip(self, length, chunk=b"x", pause=0.05):
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.close_connection = True
        self.server.dripping.set()
        try:
            while not self.server.release.is_set():
                self.wfile.write(chunk)
                self.wfile.flush()
                if pause:
                    self.server.release.wait(pause)
        except OSError:  # the client hung up: what it should do
            pass

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.requests, srv.lock, srv.release = {}, threading.Lock(), threading.Event()
    srv.dripping = threading.Event()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.total = lambda: sum(srv.requests.values())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test reads the user's cache or environment."""
    monkeypatch.setenv("NPXCEPTION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NPXCEPTION_OFFLINE", raising=False)
    monkeypatch.delenv("NPXCEPTION_WEIGHTS_URL", raising=False)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def files_under(folder):
    """Every file below ``folder``, as names relative to it (sorted)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def dead_url():
    """A URL on a port that was bound and then closed: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/good.bin"


# ---------------------------------------------------------------------------
# the good path and the cache


def test_good_file_then_pure_cache_hit(server, cache):
    path = get_file(f"{server.url}/good.bin", md5=GOOD_MD5, sha256=GOOD_SHA256, cache_dir=cache, progress=False)
    assert path == cache / "good.bin"
    assert path.read_bytes() == GOOD
    assert files_under(cache) == ["good.bin"]
    assert server.total() == 1

    again = get_file(f"{server.url}/good.bin", md5=GOOD_MD5, sha256=GOOD_SHA256, cache_dir=cache, progress=False)
    assert again == path
    assert server.total() == 1, "the second call must not touch the network"


def test_fname_and_default_cache_dir(server, tmp_path):
    path = get_file(f"{server.url}/good.bin", md5=GOOD_MD5, fname="renamed.bin", progress=False)
    assert path == tmp_path / "home" / "downloads" / "renamed.bin"
    assert path == download.default_cache_dir() / "renamed.bin"


def test_works_offline_once_cached(server, cache, monkeypatch):
    url = f"{server.url}/good.bin"
    get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)

    def no_network(*args, **kwargs):
        raise AssertionError("offline mode opened a connection")

    monkeypatch.setattr(download, "_open", no_network)
    assert get_file(url, md5=GOOD_MD5, cache_dir=cache, offline=True) == cache / "good.bin"
    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    assert get_file(url, md5=GOOD_MD5, cache_dir=cache) == cache / "good.bin"
    assert server.total() == 1


@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_not_cached_names_path_and_url(server, cache, monkeypatch, how):
    url = f"{server.url}/good.bin"
    if how == "env":
        monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline") as info:
        get_file(url, md5=GOOD_MD5, cache_dir=cache, offline=True if how == "argument" else None)
    msg = str(info.value)
    assert "offline" in msg and str(cache / "good.bin") in msg and url in msg and GOOD_MD5 in msg
    assert "by hand" in msg
    assert server.total() == 0
    assert files_under(cache) == []


def test_offline_false_overrides_env(server, cache, monkeypatch):
    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False, offline=False)
    assert server.total() == 1


def test_corrupt_cached_file_detected_on_load(server, cache):
    url = f"{server.url}/good.bin"
    path = get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)
    path.write_bytes(GOOD[:1000])  # e.g. a disk error, or a hand copy cut short

    with pytest.raises(DownloadError, match="not the one expected") as info:
        get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)
    msg = str(info.value)
    assert str(path) in msg and "downloaded again" in msg
    assert GOOD_MD5 in msg and hashlib.md5(GOOD[:1000]).hexdigest() in msg
    assert server.total() == 1, "detecting corruption must not download"
    # Review 17, finding 2: it may be a file placed by hand, which we did not download: moved aside, not deleted
    assert files_under(cache) == ["good.bin.rejected"]
    assert f"moved aside to {path}.rejected (kept, not deleted)" in msg
    assert (cache / "good.bin.rejected").read_bytes() == GOOD[:1000]

    assert get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False).read_bytes() == GOOD
    assert server.total() == 2


def test_corrupt_cached_file_offline_is_kept(server, cache):
    url = f"{server.url}/good.bin"
    path = get_file(url, sha256=GOOD_SHA256, cache_dir=cache, progress=False)
    path.write_bytes(b"junk")
    with pytest.raises(DownloadError, match="not the one expected") as info:
        get_file(url, sha256=GOOD_SHA256, cache_dir=cache, offline=True)
    # offline, no download is promised (review 17, finding 2)
    assert str(path) in str(info.value) and "re-run with network access to download it" in str(info.value)
    assert "downloaded again" not in str(info.value)
    assert files_under(cache) == ["good.bin"]  # offline: the user replaces it


# ---------------------------------------------------------------------------
# failures leave the cache untouched


def test_wrong_md5_refused(server, cache):
    url = f"{server.url}/wrong.bin"
    with pytest.raises(DownloadError, match="md5 expected") as info:
        get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)
    msg = str(info.value)
    assert f"md5 expected {GOOD_MD5}, found {OTHER_MD5}" in msg and url in msg
    assert files_under(cache) == []


def test_wrong_sha256_refused_even_if_md5_matches(server, cache):
    url = f"{server.url}/wrong.bin"
    with pytest.raises(DownloadError, match="sha256 expected") as info:
        get_file(url, md5=OTHER_MD5, sha256=GOOD_SHA256, cache_dir=cache, progress=False)
    msg = str(info.value)
    assert f"sha256 expected {GOOD_SHA256}, found {OTHER_SHA256}" in msg and "md5 expected" not in msg
    assert files_under(cache) == []


def test_wrong_file_does_not_disturb_a_good_cached_one(server, cache):
    get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    with pytest.raises(DownloadError, match="md5 expected"):
        get_file(f"{server.url}/wrong.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    assert files_under(cache) == ["good.bin"]
    assert (cache / "good.bin").read_bytes() == GOOD


def test_truncated_body_refused(server, cache):
    url = f"{server.url}/truncated.bin"
    with pytest.raises(DownloadError, match="truncated|IncompleteRead") as info:
        get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)
    msg = str(info.value)
    assert url in msg and ("truncated" in msg or "IncompleteRead" in msg)
    assert files_under(cache) == []


def test_truncated_body_refused_without_hash(server, cache):
    """The Content-Length check holds on its own, even when no hash is pinned."""
    with pytest.raises(DownloadError, match="truncated"):
        get_file(f"{server.url}/truncated.bin", cache_dir=cache, progress=False)
    assert files_under(cache) == []


@pytest.mark.parametrize("name, code", [("missing.bin", 404), ("error.bin", 500)])
def test_http_error(server, cache, name, code):
    url = f"{server.url}/{name}"
    with pytest.raises(DownloadError, match=f"HTTP {code}") as info:
        get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)
    msg = str(info.value)
    assert url in msg and f"HTTP {code}" in msg and str(cache / name) in msg and "by hand" in msg
    assert files_under(cache) == []


def test_dead_server(cache):
    url = dead_url()
    with pytest.raises(DownloadError, match="by hand") as info:
        get_file(url, md5=GOOD_MD5, cache_dir=cache, progress=False)
    msg = str(info.value)
    assert url in msg and "by hand" in msg and str(cache / "good.bin") in msg
    assert isinstance(info.value, OSError)
    assert files_under(cache) == []


def test_timeout(server, cache):
    url = f"{server.url}/slow.bin"
    with pytest.raises(DownloadError, match="timed out") as info:
        get_file(url, cache_dir=cache, progress=False, timeout=0.3)
    assert url in str(info.value) and "timed out" in str(info.value)
    assert files_under(cache) == []


def test_keyboard_interrupt_leaves_no_partial(server, cache, monkeypatch):
    real_open = download._open
    seen = []

    class Interrupting:
        def __init__(self, response):
            self.response, self.headers, self.reads = response, response.headers, 0

        def read(self, n):
            self.reads += 1
            if self.reads == 2:
                seen.extend(files_under(cache))  # the partial exists mid-stream
                raise KeyboardInterrupt
            return self.response.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

    monkeypatch.setattr(download, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(download, "_open", lambda url, timeout: Interrupting(real_open(url, timeout)))
    with pytest.raises(KeyboardInterrupt, match="^$"):
        get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    assert len(seen) == 1 and seen[0].startswith("good.bin.") and seen[0].endswith(".partial")
    assert files_under(cache) == []


# ---------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/good.bin", "/etc/passwd", "data:,x", "javascript:x"])
def test_refuses_other_schemes(cache, url):
    with pytest.raises(ValueError, match="url"):
        get_file(url, cache_dir=cache)


def test_refuses_malformed_hashes_and_names(cache):
    with pytest.raises(ValueError, match="md5"):
        get_file("http://127.0.0.1/x.bin", md5="abc", cache_dir=cache)
    with pytest.raises(ValueError, match="sha256"):
        get_file("http://127.0.0.1/x.bin", sha256=GOOD_MD5, cache_dir=cache)
    for fname in ("../x.bin", "a/b", ".."):
        with pytest.raises(ValueError, match="fname"):
            get_file("http://127.0.0.1/x.bin", fname=fname, cache_dir=cache)
    with pytest.raises(ValueError, match="fname"):
        get_file("http://127.0.0.1/", cache_dir=cache)  # no file name in the URL


def test_file_url(tmp_path, cache):
    src = tmp_path / "mirror" / "good.bin"
    src.parent.mkdir()
    src.write_bytes(GOOD)
    with pytest.raises(ValueError, match="allow_file=True"):  # only when explicitly allowed
        get_file(src.as_uri(), md5=GOOD_MD5, cache_dir=cache, progress=False)
    path = get_file(src.as_uri(), md5=GOOD_MD5, cache_dir=cache, progress=False, allow_file=True)
    assert path.read_bytes() == GOOD and files_under(cache) == ["good.bin"]
    with pytest.raises(DownloadError, match="could not download"):
        get_file((tmp_path / "mirror" / "absent.bin").as_uri(), cache_dir=cache, progress=False,
                 allow_file=True)
    assert files_under(cache) == ["good.bin"]


def test_file_url_to_a_device_or_fifo_is_refused(tmp_path, cache):
    """file:///dev/zero used to fill the disk at ~450 MB/s; a FIFO would block forever."""
    fifo = tmp_path / "fifo.bin"
    os.mkfifo(fifo)
    for url in ("file:///dev/zero", fifo.as_uri()):
        with pytest.raises(DownloadError, match="not a regular file"):
            get_file(url, sha256=GOOD_SHA256, cache_dir=cache, fname="x.bin", progress=False, allow_file=True)
    assert files_under(cache) == []


def test_file_hash(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(GOOD)
    assert file_hash(p, "md5") == GOOD_MD5
    assert file_hash(p) == GOOD_SHA256


# ---------------------------------------------------------------------------
# progress: stderr only, only on a terminal


def test_progress_on_stderr_when_terminal(server, cache, capsys, monkeypatch):
    monkeypatch.setattr(download, "_stderr_is_terminal", lambda: True)
    get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache)
    out, err = capsys.readouterr()
    assert out == ""
    assert "good.bin" in err and "100%" in err and "#" in err and err.endswith("\n")


def test_progress_silenced(server, cache, capsys, monkeypatch):
    monkeypatch.setattr(download, "_stderr_is_terminal", lambda: True)
    get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    assert capsys.readouterr() == ("", "")


def test_no_progress_when_not_a_terminal(server, cache, capsys):
    get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache)  # capsys' stderr is no TTY
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------------------
# pretrained.imagenet_weights through NPXCEPTION_WEIGHTS_URL


@pytest.mark.parametrize("setting, top, notop", [
    # a folder, with or without the trailing slash
    ("https://m.example/x/", "https://m.example/x/{top}", "https://m.example/x/{notop}"),
    ("https://m.example/x", "https://m.example/x/{top}", "https://m.example/x/{notop}"),
    # the URL of either official file (what a user copies from Keras' source): its folder
    ("https://m.example/x/{top}", "https://m.example/x/{top}", "https://m.example/x/{notop}"),
    ("https://m.example/x/{notop}?sig=1", "https://m.example/x/{top}?sig=1", "https://m.example/x/{notop}?sig=1"),
    # a renamed .h5 on a mirror: used as given (its MD5 is still checked)
    ("file:///srv/xception.h5", "file:///srv/xception.h5", "file:///srv/xception.h5"),
])
def test_weights_url_accepts_a_folder_or_a_file(monkeypatch, setting, top, notop):
    names = {"top": pretrained.FILES[True].fname, "notop": pretrained.FILES[False].fname}
    monkeypatch.setenv("NPXCEPTION_WEIGHTS_URL", setting.format(**names))
    assert pretrained.weights_url(True) == top.format(**names)
    assert pretrained.weights_url(False) == notop.format(**names)


def test_imagenet_wrong_file_from_mirror_refused(server, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("NPXCEPTION_WEIGHTS_URL", f"{server.url}/mirror/")
    url = f"{server.url}/mirror/{pretrained.FILES[True].fname}"
    assert pretrained.weights_url(True) == url
    with pytest.raises(DownloadError, match="md5 expected") as info:
        pretrained.imagenet_weights(include_top=True, progress=False)
    msg = str(info.value)
    assert f"md5 expected {pretrained.FILES[True].md5}, found {OTHER_MD5}" in msg and url in msg
    assert "weights=" in msg
    assert server.requests == {f"/mirror/{pretrained.FILES[True].fname}": 1}
    assert files_under(home) == [], "a refused download leaves nothing in NPXCEPTION_HOME"


def test_imagenet_offline_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    for include_top in (True, False):
        h5, npz, _ = pretrained._paths(include_top)
        with pytest.raises(DownloadError, match="weights=") as info:
            pretrained.imagenet_weights(include_top=include_top)
        msg = str(info.value)
        assert str(h5) in msg and str(npz) in msg and "weights=" in msg
        assert pretrained.weights_url(include_top) in msg and "offline" in msg
    assert str(h5).startswith(str(tmp_path / "home"))
    assert files_under(tmp_path / "home") == []


@pytest.fixture
def fake_converter(monkeypatch):
    """A stand-in for the child-process conversion (tested in test_convert_files.py) that records its calls."""
    calls = []

    def convert(src, dst):
        calls.append((src, dst))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"converted:" + src.read_bytes()[:16])

    monkeypatch.setattr(pretrained, "convert", convert)
    return calls


def test_imagenet_download_convert_then_cache_hit(server, tmp_path, monkeypatch, fake_converter):
    fname = pretrained.FILES[False].fname
    monkeypatch.setitem(pretrained.FILES, False, pretrained.WeightFile(fname, GOOD_MD5))
    monkeypatch.setenv("NPXCEPTION_WEIGHTS_URL", f"{server.url}/good")  # no trailing slash: still joined

    npz = pretrained.imagenet_weights(include_top=False, progress=False)
    h5, expected_npz, sidecar = pretrained._paths(False)
    assert npz == expected_npz and npz.suffix == ".npz"
    assert fake_converter == [(h5, npz)]
    assert files_under(tmp_path / "home") == sorted([
        f"downloads/{fname}", f"weights/{npz.name}", f"weights/{sidecar.name}"])
    assert sidecar.read_text().split()[0] == file_hash(npz, "sha256")
    # the record that it converts the MD5-checked official file: what makes it "imagenet" (review 24, F7)
    assert sidecar.read_text().splitlines()[1] == f"# converted from {fname}, md5 {GOOD_MD5}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UnverifiedWeightsWarning for our own conversion
        assert pretrained.imagenet_source(False) == f"imagenet ({npz})"

    assert pretrained.imagenet_weights(include_top=False) == npz  # cache hit: no download, no conversion
    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    assert pretrained.imagenet_weights(include_top=False) == npz
    assert server.total() == 1 and len(fake_converter) == 1

    # a damaged conversion is named, removed, and rebuilt from the cached .h5 on re-run (even offline)
    npz.write_bytes(b"damaged")
    with pytest.raises(DownloadError, match="corrupt") as info:
        pretrained.imagenet_weights(include_top=False)
    assert str(npz) in str(info.value)
    assert not npz.exists() and not sidecar.exists()
    assert pretrained.imagenet_weights(include_top=False) == npz
    assert server.total() == 1 and len(fake_converter) == 2
    assert not any(name.endswith(".partial") for name in files_under(tmp_path / "home"))


def test_imagenet_hand_placed_npz_is_used(tmp_path, monkeypatch, fake_converter):
    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    _, npz, _ = pretrained._paths(True)
    npz.parent.mkdir(parents=True)
    npz.write_bytes(b"placed by hand")  # the loader validates its content
    assert pretrained.imagenet_weights(include_top=True) == npz
    assert fake_converter == []
    # Review 24, F7: any .npz put there was called the official weights. It is used, but named unverified,
    # with a warning once per process; a sidecar (a SHA-256 alone, or another file's MD5) does not change that.
    with pytest.warns(pretrained.UnverifiedWeightsWarning, match=r"placed by hand, not verified as the official"):
        source = pretrained.imagenet_source(True)
    assert source.startswith(f"unverified ({npz}: placed by hand") and "imagenet (" not in source
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pretrained.imagenet_source(True) == source  # warned once
    other = pretrained.WeightFile(pretrained.FILES[True].fname, "0" * 32)
    pretrained._write_sidecar(npz.with_name(npz.name + ".sha256"), file_hash(npz, "sha256"), other)
    assert pretrained.imagenet_weights(include_top=True) == npz and pretrained.imagenet_source(True) == source


# ---------------------------------------------------------------------------
# nothing runs forever, nothing is left behind


def test_dripping_server_hits_the_overall_deadline(server, cache):
    """A byte every 50 ms never trips the per-read timeout; the deadline ends it."""
    url = f"{server.url}/drip.bin"
    with pytest.raises(DownloadError, match="deadline") as info:
        get_file(url, cache_dir=cache, progress=False, timeout=5, deadline=0.5)
    assert url in str(info.value)
    assert files_under(cache) == []


class FakeClock:
    """download._clock for a test: each reading is ``step`` seconds after the last (no real waiting)."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def test_dripping_server_is_cut_off_by_the_minimum_throughput(server, cache, monkeypatch):
    """Review 12, finding 4: the default deadline was the server's Content-Length at MIN_RATE (38,000 s
    for a claimed 1.9 GB). Now a drip is cut off once a RATE_WINDOW_S window holds under MIN_RATE bytes/s,
    whatever the server claims. The code's own clock is injected: 5 s per reading, so the drip (a byte
    per 50 ms) crosses the 60 s window after ~13 bytes, and nothing here depends on real time."""
    clock = FakeClock(step=5.0)
    monkeypatch.setattr(download, "_clock", clock)
    url = f"{server.url}/drip.bin"
    with pytest.raises(DownloadError, match=r"too slow: \d+ bytes/s over the last 60 s, under the minimum of "
                                            r"50,000") as info:
        get_file(url, cache_dir=cache, progress=False, timeout=5)
    assert url in str(info.value)
    assert download.RATE_WINDOW_S <= clock.now <= download.RATE_WINDOW_S + 3 * clock.step  # cut at the window
    assert files_under(cache) == []


def test_throughput_rule_rides_out_a_stall_but_not_a_trickle():
    """The rule over a window, fed (time, bytes) directly: a 30 s stall of a fast link passes, a link
    that falls under MIN_RATE for a whole window does not, and one sample per second is kept."""
    rule = download._Throughput(0.0)
    received = 0
    for t in range(1, 11):  # 10 s at 1 MB/s
        received += 1_000_000
        assert rule.too_slow(float(t), received) is None
    assert rule.too_slow(40.0, received + 1) is None  # then nothing for 30 s: a stall, not a drip
    trickle = download.MIN_RATE // 2
    for t in range(41, 200):
        received += trickle
        slow = rule.too_slow(float(t), received)
        if slow is not None:
            break
    assert slow is not None and slow < download.MIN_RATE
    assert t <= 40 + download.RATE_WINDOW_S + 11  # once the fast start has left the window
    assert len(rule.samples) <= download.RATE_WINDOW_S + 2


def test_imagenet_refuses_an_oversized_download_before_reading(server, tmp_path, monkeypatch):
    """A server announcing 1.9 GB for a ~92 MB official file: refused on its Content-Length, naming both."""
    monkeypatch.setenv("NPXCEPTION_WEIGHTS_URL", f"{server.url}/huge/")
    with pytest.raises(DownloadError, match=r"announces 1,900,000,000 bytes, over the 100,000,000-byte cap"):
        pretrained.imagenet_weights(include_top=True, progress=False)
    assert server.total() == 1
    assert files_under(tmp_path / "home") == []


def test_size_cap(server, cache):
    with pytest.raises(DownloadError, match="announces 768,000 bytes, over the 1,000-byte cap"):
        get_file(f"{server.url}/good.bin", cache_dir=cache, progress=False, max_bytes=1000)
    with pytest.raises(DownloadError, match="exceeds the 1,000,000-byte cap"):
        get_file(f"{server.url}/endless.bin", cache_dir=cache, progress=False, max_bytes=1_000_000)
    assert files_under(cache) == []


CHILD = """
import sys
from npxception.download import get_file
get_file(sys.argv[1], cache_dir=sys.argv[2], progress=False)
"""


def test_sigterm_during_a_download_leaves_no_partial(server, cache):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-c", CHILD, f"{server.url}/drip.bin", str(cache)], env=env,
                             stderr=subprocess.PIPE)
    try:
        assert server.dripping.wait(60), "the child never connected"
        while not files_under(cache):  # the partial appears once the body starts
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            server.release.wait(0.02)
        assert files_under(cache)[0].endswith(".partial")
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 128 + signal.SIGTERM
    finally:
        child.kill()
        child.wait()
    assert files_under(cache) == []


def test_stale_partials_are_swept_and_fresh_ones_kept(server, cache):
    cache.mkdir(parents=True)
    stale = cache / "good.bin.0123456789abcdef0123456789abcdef.partial"
    fresh = cache / "good.bin.fedcba9876543210fedcba9876543210.partial"
    other = cache / "good.bin.notmine.partial"
    for p in (stale, fresh, other):
        p.write_bytes(b"x")
    old = os.stat(stale).st_mtime - 2 * 24 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    assert files_under(cache) == sorted(["good.bin", fresh.name, other.name])


# ---------------------------------------------------------------------------
# review 12: what the messages say is true


def _undeletable(monkeypatch, *paths):
    """Path.unlink fails with EACCES for ``paths``, as in a cache owned by another user (root runs CI)."""
    import errno
    import pathlib

    real = pathlib.Path.unlink
    locked = {str(p) for p in paths}

    def unlink(self, missing_ok=False):
        if str(self) in locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", unlink)


def test_corrupt_cache_that_cannot_be_deleted_says_so(server, cache, tmp_path, monkeypatch, fake_converter):
    """Review 12, finding 5: a read-only shared cache with a corrupt .npz said "they have been deleted:
    re-run", and every re-run repeated it. Both the .npz and the download now say what is true."""
    fname = pretrained.FILES[False].fname
    monkeypatch.setitem(pretrained.FILES, False, pretrained.WeightFile(fname, GOOD_MD5))
    monkeypatch.setenv("NPXCEPTION_WEIGHTS_URL", f"{server.url}/good/")
    npz = pretrained.imagenet_weights(include_top=False, progress=False)
    _, _, sidecar = pretrained._paths(False)
    with open(npz, "ab") as f:
        f.write(b"x")
    _undeletable(monkeypatch, npz)
    for _ in range(2):
        with pytest.raises(DownloadError, match="corrupt") as info:
            pretrained.imagenet_weights(include_top=False)
        msg = str(info.value)
        assert f"could not delete {npz} (Permission denied): delete it, or set NPXCEPTION_HOME" in msg, msg
        assert "been deleted" not in msg and npz.exists()

    path = get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    path.write_bytes(b"junk")
    real_replace = pathlib.Path.replace

    def replace(self, target):
        if str(self) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_replace(self, target)

    monkeypatch.setattr(pathlib.Path, "replace", replace)
    with pytest.raises(DownloadError, match="not the one expected") as info:
        get_file(f"{server.url}/good.bin", md5=GOOD_MD5, cache_dir=cache, progress=False)
    assert "could not move it aside (Permission denied): move or delete it, or set NPXCEPTION_HOME" in str(info.value)
    assert path.read_bytes() == b"junk"


def test_bad_weights_url_names_the_variable(monkeypatch):
    """Review 12, finding 7b: the error quoted the URL as "url:" without saying where it came from."""
    monkeypatch.setenv("NPXCEPTION_WEIGHTS_URL", "not a url")
    with pytest.raises(ValueError, match=r"NPXCEPTION_WEIGHTS_URL='not a url': expected an http://, https:// "
                                         r"or file:// URL"):
        pretrained.imagenet_weights(include_top=True)


def test_offline_advice_command_works_when_pasted(tmp_path, monkeypatch):
    """Review 12, finding 7c: the advice's `convert -o ~/.cache/npxception/weights/...npz` failed when pasted
    (the folder did not exist yet, and convert makes none). Pasted into a shell now, it gets past the
    output folder: this stand-in .h5 is not HDF5, so the converter fails on reading it, not on the folder."""
    import re
    import shlex

    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")
    _, npz, _ = pretrained._paths(True)
    with pytest.raises(DownloadError, match="offline") as info:
        pretrained.imagenet_weights(include_top=True)
    command = re.search(r"`(mkdir -p [^`]*)`", str(info.value)).group(1)
    assert not npz.parent.exists()
    (tmp_path / pretrained.FILES[True].fname).write_bytes(b"not an HDF5 file")
    command = command.replace("python -m", f"{shlex.quote(sys.executable)} -m")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert npz.parent.is_dir()
    assert proc.returncode == 1 and "HDF5" in proc.stderr and "does not exist" not in proc.stderr, proc.stderr


def test_disk_full_names_the_path(tmp_path, monkeypatch):
    """Review 12, finding 6: atomic_write's ENOSPC reached the user as "[Errno 28] No space left on device"
    with no path. The failure is injected where the disk reports it (the write), and at the rename."""
    import errno

    from npxception.untrusted import atomic_write

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out.npz"
    with pytest.raises(OSError, match=rf"^{out}: cannot write \(No space left on device\)$") as info:
        atomic_write(out, full)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(
        PermissionError(errno.EROFS, "Read-only file system")))
    with pytest.raises(PermissionError, match=rf"^{out}: cannot write \(Read-only file system\)$"):
        atomic_write(out, lambda f: f.write(b"x"))
    assert os.listdir(tmp_path) == []
