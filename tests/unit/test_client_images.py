"""The client's image methods added for the CLI-through-the-daemon (import, prune, search, auth,
system check, save formats, all-tags pull) against a recording server, and ketch.client.auth
(the Docker config file as the docker CLI writes it). No root, no daemon."""

import base64
import json
import os
import shutil
import socket
import tempfile
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from ketch import errors
from ketch.client import Client, DaemonPermissionDenied
from ketch.client import auth as cauth


class Recorder:
    """A Unix socket HTTP server answering every request with one canned response; keeps the requests."""

    def __init__(self, status=200, body=b"{}", ctype="application/json"):
        self.dir = tempfile.mkdtemp(prefix="ketch-client-")
        self.path = os.path.join(self.dir, "s")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(4)
        self.reply = (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                      f"Connection: close\r\n\r\n").encode() + body
        self.requests = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
            if "content-length" in headers:
                while len(body) < int(headers["content-length"]):
                    body += c.recv(65536)
            elif headers.get("transfer-encoding") == "chunked":
                while not body.endswith(b"0\r\n\r\n"):
                    body += c.recv(65536)
                raw, body = body, b""
                while True:
                    size, _, rest = raw.partition(b"\r\n")
                    n = int(size, 16)
                    if n == 0:
                        break
                    body, raw = body + rest[:n], rest[n + 2:]
            u = urlsplit(target)
            self.requests.append({"method": method, "path": u.path, "query": parse_qs(u.query), "headers": headers,
                                  "body": body})
            c.sendall(self.reply)
            c.close()

    def client(self):
        return Client(f"unix://{self.path}", timeout=5)

    def close(self):
        self.srv.close()
        shutil.rmtree(self.dir, ignore_errors=True)   # nothing of the test left in /tmp


@pytest.fixture
def rec():
    servers = []

    def make(**kw):
        r = Recorder(**kw)
        servers.append(r)
        return r
    yield make
    for s in servers:
        s.close()


def test_image_import_sends_the_body_and_docker_params(rec):
    r = rec(body=b'{"status":"Importing"}\r\n{"status":"sha256:abc"}\r\n')
    msgs = list(r.client().image_import(b"TARBYTES", "x/y", "1", "hi", ['CMD ["sh"]', "ENV A=1"], "linux/amd64"))
    assert msgs[-1] == {"status": "sha256:abc"}
    q = r.requests[0]
    assert q["method"] == "POST" and q["path"] == "/v1.43/images/create" and q["body"] == b"TARBYTES"
    assert q["query"] == {"fromSrc": ["-"], "repo": ["x/y"], "tag": ["1"], "message": ["hi"],
                          "platform": ["linux/amd64"], "changes": ['CMD ["sh"]', "ENV A=1"]}
    assert q["headers"]["content-type"] == "application/x-tar"


def test_image_import_streams_a_file(rec, tmp_path):
    p = tmp_path / "root.tar"
    p.write_bytes(b"x" * 300_000)
    r = rec(body=b'{"status":"sha256:abc"}')
    with open(p, "rb") as f:
        list(r.client().image_import(f))
    assert r.requests[0]["body"] == b"x" * 300_000 and r.requests[0]["query"] == {"fromSrc": ["-"]}


def test_image_prune_filters_are_docker_json(rec):
    r = rec(body=b'{"ImagesDeleted":[{"Deleted":"sha256:1"}],"SpaceReclaimed":5}')
    res = r.client().image_prune([("dangling", "false"), ("label", "a=b"), ("label", "c")])
    assert res["SpaceReclaimed"] == 5
    q = r.requests[0]
    assert q["method"] == "POST" and q["path"] == "/v1.43/images/prune"
    assert json.loads(q["query"]["filters"][0]) == {"dangling": ["false"], "label": ["a=b", "c"]}


def test_auth_posts_docker_auth_config(rec):
    r = rec(body=b'{"Status":"Login Succeeded","IdentityToken":""}')
    assert r.client().auth("alice", "pw", "127.0.0.1:5000")["Status"] == "Login Succeeded"
    q = r.requests[0]
    assert q["method"] == "POST" and q["path"] == "/v1.43/auth"
    assert json.loads(q["body"]) == {"username": "alice", "password": "pw", "serveraddress": "127.0.0.1:5000"}


def test_search_error_is_the_daemons_message(rec):
    r = rec(status=501, body=b'{"message":"search is not available: no index configured"}')
    with pytest.raises(errors.NotImplementedYet) as e:
        r.client().image_search("busybox", limit=3)
    assert "no index configured" in str(e.value) and e.value.status == 501
    assert r.requests[0]["query"] == {"term": ["busybox"], "limit": ["3"]}


def test_system_check_and_save_format(rec):
    r = rec(body=b'{"Problems":[],"Blobs":3}')
    assert r.client().system_check(repair=True)["Blobs"] == 3
    assert r.requests[0]["path"] == "/v1.43/ketch/system/check" and r.requests[0]["query"] == {"repair": ["1"]}
    r2 = rec(body=b"TAR", ctype="application/x-tar")
    with r2.client().image_save(["a:1", "b"], "oci-archive") as resp:
        assert resp.read() == b"TAR"
    with r2.client().image_save(["a:1"]) as resp:
        resp.read()
    assert r2.requests[0]["query"] == {"names": ["a:1", "b"], "format": ["oci-archive"]}
    assert r2.requests[1]["query"] == {"names": ["a:1"]}          # docker-archive: dockerd's own request


def test_pull_without_tag_and_with_auth(rec):
    r = rec(body=b'{"status":"Pulling from x","id":"a"}\r\n')
    hdr = cauth.header({"username": "u", "password": "p"})
    list(r.client().image_pull("127.0.0.1:5000/x", None, None, hdr))
    q = r.requests[0]
    assert q["query"] == {"fromImage": ["127.0.0.1:5000/x"]}           # no tag: every tag (dockerd's rule)
    got = json.loads(base64.urlsafe_b64decode(q["headers"]["x-registry-auth"]))
    assert got == {"username": "u", "password": "p"}


def test_permission_denied_names_the_socket(tmp_path, monkeypatch):
    import ketch.client as kc

    def refuse(path, timeout=None):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(kc, "connect", refuse)
    with pytest.raises(DaemonPermissionDenied) as e:
        Client("unix:///run/x.sock").image_list()
    assert "permission denied while trying to connect to the Ketch daemon socket at unix:///run/x.sock" in str(e.value)


# ------------------------------------------------------------------------------ ketch.client.auth

def test_auth_file_round_trip_in_dockers_layout(tmp_path):
    path = str(tmp_path / "cfg" / "config.json")
    os.makedirs(tmp_path / "cfg")
    with open(path, "w") as f:
        json.dump({"auths": {"http://127.0.0.1:5000/v2/": {"auth": "b2xkOm9sZA=="}}, "credsStore": "", "x": 1}, f)
    cauth.save("127.0.0.1:5000", "alice", "s3cret", path=path)
    doc = json.load(open(path))
    assert doc["x"] == 1 and list(doc["auths"]) == ["127.0.0.1:5000"]          # the old spelling replaced
    assert base64.b64decode(doc["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:s3cret"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert cauth.load("127.0.0.1:5000", path) == {"username": "alice", "password": "s3cret",
                                                  "serveraddress": "127.0.0.1:5000"}
    cauth.save("docker.io", "bob", "pw", path=path)
    assert "https://index.docker.io/v1/" in json.load(open(path))["auths"]
    assert cauth.load("docker.io", path)["username"] == "bob"
    hdr = cauth.header_for("busybox", path)
    assert json.loads(base64.urlsafe_b64decode(hdr))["username"] == "bob"
    assert cauth.header_for("127.0.0.1:5000/a/b:1", path) is not None
    assert cauth.header_for("other.example:1/a", path) is None
    assert cauth.remove("127.0.0.1:5000", path) and not cauth.remove("127.0.0.1:5000", path)
    assert cauth.load("127.0.0.1:5000", path) is None


def test_identity_token_is_kept_instead_of_the_password(tmp_path):
    path = str(tmp_path / "config.json")
    cauth.save("reg.example", "alice", "s3cret", identity_token="tok", path=path)
    entry = json.load(open(path))["auths"]["reg.example"]
    assert entry["identitytoken"] == "tok" and base64.b64decode(entry["auth"]) == b"alice:"
    assert cauth.load("reg.example", path)["identitytoken"] == "tok"


@pytest.mark.parametrize("name,domain", [("busybox", "docker.io"), ("library/busybox:1", "docker.io"),
                                         ("localhost/x", "localhost"), ("127.0.0.1:5000/a/b", "127.0.0.1:5000"),
                                         ("quay.io/a/b@sha256:" + "0" * 64, "quay.io"),
                                         ("index.docker.io/library/x", "docker.io")])
def test_image_domain(name, domain):
    assert cauth.image_domain(name) == domain


def test_bad_config_file_is_an_error_not_a_traceback(tmp_path):
    path = str(tmp_path / "config.json")
    open(path, "w").write("{not json")
    with pytest.raises(errors.InvalidArgument):
        cauth.load("docker.io", path)
