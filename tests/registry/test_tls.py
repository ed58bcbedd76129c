"""A registry over https with its own CA (Docker's certs.d layout), against the real docker-registry."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time

import pytest

from ketch.errors import KetchError
from ketch.oci.reference import parse
from ketch.registry import RegistryClient

from .conftest import REGISTRY_BIN, free_port, make_image
from .test_client import push_image


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server_cert(d):
    """ca.crt, and server.crt/server.key for IP 127.0.0.1 signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=ketch test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)


@pytest.fixture
def tls_registry(tmp_path):
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca_and_server_cert(pki)
    port = free_port()
    cfg = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
           "storage": {"filesystem": {"rootdirectory": str(tmp_path / "storage")}},
           "http": {"addr": f"127.0.0.1:{port}",
                    "tls": {"certificate": str(pki / "server.crt"), "key": str(pki / "server.key")}}}
    (tmp_path / "config.yml").write_text(json.dumps(cfg))
    with open(tmp_path / "registry.log", "wb") as lf:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(tmp_path / "config.yml")], stdout=lf, stderr=lf,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (tmp_path / "registry.log").read_text()
                raise RuntimeError("registry did not start: " + log[-2000:]) from None
            time.sleep(0.05)
    yield f"127.0.0.1:{port}", pki
    proc.terminate()
    proc.wait(10)


def certs_d_with(tmp_path, domain, ca_file):
    d = tmp_path / "certs.d" / domain
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(open(ca_file, "rb").read())
    return str(tmp_path / "certs.d")


def test_https_with_the_registry_ca_in_certs_d(tls_registry, tmp_path):
    domain, pki = tls_registry
    certs = certs_d_with(tmp_path, domain, pki / "ca.crt")
    img = make_image(seed="tls")
    ref = parse(f"{domain}/ketch/tls:v1")

    async def main():
        async with RegistryClient(certs_dirs=[certs]) as c:
            assert c.base_url(domain).startswith("https://")
            _, digest = await push_image(c, ref, img)
            got = await c.get_manifest(ref)
            assert got.digest == digest == img.digest
    asyncio.run(main())


def test_https_with_an_unknown_ca_is_refused(tls_registry, tmp_path):
    domain, _ = tls_registry
    other = tmp_path / "other"
    other.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "o.key", "-out", "o.crt", "-days", "1",
             "-subj", "/CN=someone else", cwd=other)
    certs = certs_d_with(tmp_path, domain, other / "o.crt")

    async def main():
        async with RegistryClient(certs_dirs=[certs], retries=0) as c:
            await c.get_manifest(parse(f"{domain}/ketch/tls:v1"))
    with pytest.raises(KetchError) as e:
        asyncio.run(main())
    assert "certificate" in str(e.value).lower()


def test_loopback_without_certs_d_stays_http(tmp_path):
    c = RegistryClient(certs_dirs=[str(tmp_path / "none")])
    assert c.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert c.base_url("registry.example:5000") == "https://registry.example:5000"
