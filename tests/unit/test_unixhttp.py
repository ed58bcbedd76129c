"""The CLI's own HTTP/1.1 client, against a server that writes exactly the bytes each case needs."""

import os
import shutil
import socket
import tempfile
import threading

import pytest

from ketch.client import unixhttp


def serve_once(reply: bytes, split=(), close=True):
    """A Unix socket server that reads one request head and answers with `reply`, sent in pieces
    cut at the offsets in `split`. Returns (socket path, thread, list that gets the request)."""
    d = tempfile.mkdtemp(prefix="ketch-http-")
    path = os.path.join(d, "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got = []

    def run():
        c, _ = srv.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(65536)
        got.append(data)
        last = 0
        for cut in list(split) + [len(reply)]:
            c.sendall(reply[last:cut])
            last = cut
        if close:
            c.close()
        srv.close()
        shutil.rmtree(d, ignore_errors=True)   # the test's own socket dir: nothing left in /tmp
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return path, t, got


def roundtrip(reply, split=(), method="GET", body=None):
    path, t, got = serve_once(reply, split)
    s = unixhttp.connect(path, timeout=5)
    unixhttp.send_request(s, method, "/v1.43/x?a=1", {"Content-Type": "application/json"}, body)
    r = unixhttp.Response(s, method)
    out = r.read()
    r.close()
    t.join(5)
    return r, out, got[0]


def test_content_length_body_and_request_head():
    r, out, req = roundtrip(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", method="POST", body=b"{}")
    assert r.status == 200 and out == b"hello" and r.getheader("x-a") == "b"
    assert req.startswith(b"POST /v1.43/x?a=1 HTTP/1.1\r\n") and b"Content-Length: 2" in req


def test_chunked_split_at_awkward_places():
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    for cut in range(40, len(body)):
        r, out, _ = roundtrip(body, split=(cut,))
        assert out == b"hello world", cut


def test_close_delimited_body():
    r, out, _ = roundtrip(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    assert out == b"until the end"


def test_truncated_bodies_are_errors():
    with pytest.raises(unixhttp.ConnectionLost):
        roundtrip(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(unixhttp.ConnectionLost):
        roundtrip(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    with pytest.raises(unixhttp.ConnectionLost):
        roundtrip(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")


def test_not_http_is_an_error():
    with pytest.raises(unixhttp.ConnectionLost):
        roundtrip(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_quote_and_urlencode_match_urllib():
    from urllib.parse import quote, urlencode
    for s in ["abc", "a b/c", "ü?&=#%", "x:y@z"]:
        assert unixhttp.quote(s) == quote(s, safe=""), s
    pairs = [("filters", '{"a": ["b c"]}'), ("all", "1"), ("x", "ü&=")]
    assert unixhttp.urlencode(pairs) == urlencode(pairs)
