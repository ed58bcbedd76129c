"""Challenge parsing, Docker config credentials, transport choice (no network)."""

import base64
import json

import pytest

from ketch.errors import InvalidArgument
from ketch.registry import (
    Credentials,
    RegistryClient,
    is_loopback,
    load_credentials,
    remove_credentials,
    save_credentials,
)
from ketch.registry.auth import parse_challenges


def test_parse_challenges():
    chs = parse_challenges('Bearer realm="https://auth.example/token",service="registry.example",'
                           'scope="repository:a/b:pull,push"')
    assert len(chs) == 1 and chs[0].scheme == "bearer"
    assert chs[0].params == {"realm": "https://auth.example/token", "service": "registry.example",
                             "scope": "repository:a/b:pull,push"}
    chs = parse_challenges('Basic realm="with \\"quotes\\", and comma", Bearer realm=tok')
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].params["realm"] == 'with "quotes", and comma' and chs[1].params["realm"] == "tok"
    assert parse_challenges("") == []


def test_docker_config_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    path = tmp_path / "cfg" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "http://old.example:5000/v2/": {"auth": base64.b64encode(b"o:p:with:colons").decode()},
    }, "credsStore": "", "psFormat": "table"}))
    assert load_credentials("docker.io") == Credentials("hub", "pw")
    assert load_credentials("old.example:5000") == Credentials("o", "p:with:colons")
    assert load_credentials("other.example") is None
    save_credentials("old.example:5000", Credentials("new", "pw2"))
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "table"                          # other settings kept
    assert "http://old.example:5000/v2/" not in doc["auths"]   # replaced, not duplicated
    assert load_credentials("old.example:5000") == Credentials("new", "pw2")
    assert remove_credentials("docker.io") and load_credentials("docker.io") is None
    path.write_text('{"auths": {"x.example": {"auth": "!!!"}}}')
    with pytest.raises(InvalidArgument, match="bad auth value"):
        load_credentials("x.example")


@pytest.mark.parametrize("domain,loop", [("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
                                         ("127.9.8.7", True), ("[::1]:5000", True), ("10.0.0.1:5000", False),
                                         ("example.com", False)])
def test_loopback(domain, loop):
    assert is_loopback(domain) is loop


def test_base_url():
    c = RegistryClient(insecure=("reg.lan:5000",))
    assert c.base_url("docker.io") == "https://registry-1.docker.io"
    assert c.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert c.base_url("reg.lan:5000") == "http://reg.lan:5000"
    assert c.base_url("quay.io") == "https://quay.io"
