"""ADD of an http(s) URL (ketch/engine/buildurl.py): the daemon downloads it from the test's own
HTTP server on 127.0.0.1 (nothing else is ever contacted), writes it 0600 with the server's
Last-Modified as its mtime, never unpacks it, checks --checksum, and keys the cache on what came."""

from __future__ import annotations

import email.utils
import hashlib
import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.build.conftest import api_build, built_id, stream_text, write_tree
from tests.build.test_copy_links import _layer
from tests.engine.daemon import KetchDaemon
from tests.storage.conftest import _make_base

CAP = 1 << 20          # the module's daemon downloads at most 1 MiB (KETCH_BUILD_URL_MAX)
MTIME = 1_600_000_000  # 2020-09-13, the served Last-Modified


@pytest.fixture(scope="module")
def ketchd(tmp_path_factory):
    """The build suite's daemon, started with a small download cap and a 2 s read timeout in its environment."""
    if os.geteuid() != 0:
        pytest.skip("ketchd needs root")
    d = KetchDaemon(str(tmp_path_factory.mktemp("ketchd")), "ketch.images.async_service:AsyncImageService")
    _make_base(d)
    env = {"KETCH_BUILD_URL_MAX": str(CAP), "KETCH_BUILD_URL_TIMEOUT": "2"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d.start()
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    yield d
    d.cleanup()


class _Server:
    """http.server on 127.0.0.1 in a thread: ``files`` path -> (status, body, headers); ``hits`` counts GETs."""

    def __init__(self):
        self.files: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.hits: dict[str, int] = {}
        self.release = threading.Event()   # /stall answers nothing until the test ends
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
                if self.path == "/stall":
                    srv.release.wait(30)
                    return
                status, body, headers = srv.files.get(self.path, (404, b"not here\n", {}))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("inner.txt")
        ti.size = 6
        tf.addfile(ti, io.BytesIO(b"inner\n"))
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _error(msgs) -> str:
    errs = [m["error"] for m in msgs if "error" in m]
    assert errs, msgs
    return errs[-1]


def _images(d) -> set[str]:
    return {i["Id"] for i in d.json("GET", "/images/json?all=1", expect=200)[1]}


def test_add_url_file_mode_mtime_not_unpacked(ketchd, server, tmp_path):
    hello = b"hello from the server\n"
    tar = _tar_bytes()
    lm = {"Last-Modified": email.utils.formatdate(MTIME, usegmt=True)}
    server.files["/files/hello.txt"] = (200, hello, lm)
    server.files["/files/a.tar"] = (200, tar, {})
    server.files["/go"] = (302, b"", {"Location": "/files/hello.txt"})
    u = server.url
    write_tree(tmp_path, {"Dockerfile": f"FROM busybox\n"
                                        f"ADD {u}/files/hello.txt /dl/\n"
                                        f"ADD {u}/files/a.tar /dl/a.tar\n"
                                        f"ADD --chown=12:34 --chmod=0640 {u}/files/hello.txt /named.txt\n"
                                        f"ADD --checksum=sha256:{_sha(hello)} {u}/go /sum.txt\n"
                                        f"ADD --unpack=true {u}/files/a.tar /unp/\n"
                                        f"ADD {u}/files/hello.txt Dockerfile /mix/\n"})
    _, msgs = api_build(ketchd, tmp_path, t="addurl:1")
    iid = built_id(msgs)
    _, dl = _layer(ketchd, iid, -6)
    assert dl["dl"][0][:4] == (tarfile.DIRTYPE, 0o755, 0, 0)          # a made destination directory
    head, digest = dl["dl/hello.txt"]
    assert head[:6] == (tarfile.REGTYPE, 0o600, 0, 0, len(hello), MTIME) and digest == _sha(hello)
    _, t = _layer(ketchd, iid, -5)
    assert t["dl/a.tar"][0][:2] == (tarfile.REGTYPE, 0o600) and t["dl/a.tar"][1] == _sha(tar)
    assert not any("inner" in name for name in t)                       # a tar from a URL is not unpacked
    _, named = _layer(ketchd, iid, -4)
    assert named["named.txt"][0][:4] == (tarfile.REGTYPE, 0o640, 12, 34) and named["named.txt"][1] == _sha(hello)
    _, summed = _layer(ketchd, iid, -3)                                  # through the redirect, checksum matched
    assert summed["sum.txt"][1] == _sha(hello)
    _, unpacked = _layer(ketchd, iid, -2)                                # BuildKit's --unpack=true: unpacked
    assert unpacked["unp/inner.txt"][1] == _sha(b"inner\n") and "unp/a.tar" not in unpacked
    _, mixed = _layer(ketchd, iid, -1)                                   # a URL and a context file in one ADD
    assert mixed["mix/hello.txt"][0][1] == 0o600 and mixed["mix/Dockerfile"][1] == _sha((tmp_path / "Dockerfile")
                                                                                       .read_bytes())


def test_add_url_failures(ketchd, server, tmp_path):
    body = b"the real content\n"
    server.files["/f"] = (200, body, {})
    server.files["/big"] = (200, b"x" * (CAP + 1), {})
    server.files["/to-file"] = (302, b"", {"Location": "file:///etc/passwd"})
    u = server.url
    wrong = "0" * 64
    before = _images(ketchd)
    cases = [(f"ADD --checksum=sha256:{wrong} {u}/f /f", {},
              [f"checksum mismatch: expected sha256:{wrong}, got sha256:{_sha(body)}", f"{u}/f"]),
             (f"ADD {u}/missing /m", {}, [f"ADD {u}/missing", "404"]),
             (f"ADD {u}/big /big", {}, [f"ADD {u}/big", f"{CAP} bytes", "KETCH_BUILD_URL_MAX"]),
             (f"ADD {u}/to-file /x", {}, ["redirect to 'file:///etc/passwd' refused"]),
             (f"ADD {u}/stall /x", {}, [f"ADD {u}/stall: timed out", "read 2 s"]),
             (f"ADD {u}/f /f", {"networkmode": "none"},
              [f"ADD {u}/f: network is disabled for this build (--network none)"]),
             (f"ADD --checksum=md5:abc {u}/f /f", {}, ["only sha256:<hex> checksums"]),
             ("ADD --checksum=sha256:" + wrong + " Dockerfile /f", {}, ["only for a single http(s) URL source"]),
             (f"ADD --parents {u}/f /p/", {}, ["--parents is only for local sources"]),
             (f"ADD --keep-git-dir=true {u}/r.git /r", {}, ["--keep-git-dir"]),
             (f"ADD {u}/r.git /r", {}, ["git sources are not supported"])]
    hits_f = 0
    for line, query, words in cases:
        write_tree(tmp_path, {"Dockerfile": f"FROM busybox\n{line}\n"})
        _, msgs = api_build(ketchd, tmp_path, **query)
        err = _error(msgs)
        for w in words:
            assert w in err, (line, err)
        if query.get("networkmode") == "none":
            assert server.hits.get("/f", 0) == hits_f     # nothing was asked of the server
        hits_f = server.hits.get("/f", 0)
    assert _images(ketchd) == before                      # no failed ADD committed anything
    assert "/r.git" not in server.hits


def test_add_url_cache(ketchd, server, tmp_path):
    server.files["/data.txt"] = (200, b"version 1\n", {})
    write_tree(tmp_path, {"Dockerfile": f"FROM busybox\nADD {server.url}/data.txt /data.txt\n"})
    _, first = api_build(ketchd, tmp_path)
    a = built_id(first)
    _, again = api_build(ketchd, tmp_path)
    assert built_id(again) == a and "Using cache" in stream_text(again)   # unchanged: a hit (downloaded to know)
    assert server.hits["/data.txt"] == 2
    server.files["/data.txt"] = (200, b"version 2\n", {})
    _, changed = api_build(ketchd, tmp_path)
    b = built_id(changed)
    assert b != a and "Using cache" not in stream_text(changed)
    assert _layer(ketchd, b, -1)[1]["data.txt"][1] == _sha(b"version 2\n")
    # with --checksum the key is the checksum: a rebuild does not download at all
    write_tree(tmp_path, {"Dockerfile": f"FROM busybox\nADD --checksum=sha256:{_sha(b'version 2' + chr(10).encode())} "
                                        f"{server.url}/data.txt /data.txt\n"})
    _, c1 = api_build(ketchd, tmp_path)
    c = built_id(c1)
    hits = server.hits["/data.txt"]
    _, c2 = api_build(ketchd, tmp_path)
    assert built_id(c2) == c and "Using cache" in stream_text(c2) and server.hits["/data.txt"] == hits
