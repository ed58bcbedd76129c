"""Auth against a real docker-registry: htpasswd Basic, and Bearer tokens from a token server we run."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import time
import uuid

import pytest

from ketch.errors import PermissionDenied
from ketch.oci.reference import parse
from ketch.registry import Credentials, RegistryClient, load_credentials, logout

from .conftest import htpasswd_line, make_image, start_registry
from .test_client import push_image


@pytest.fixture
def basic_registry(tmp_path):
    pw = tmp_path / "htpasswd"
    pw.write_text(htpasswd_line("alice", "s3cret"))
    reg = start_registry(tmp_path, auth={"htpasswd": {"realm": "ketch-test", "path": str(pw)}})
    yield reg
    reg.stop()


def test_basic_auth_login_push_pull_logout(basic_registry, tmp_path, monkeypatch):
    dom = basic_registry.domain
    cfgdir = tmp_path / "dockercfg"
    monkeypatch.setenv("DOCKER_CONFIG", str(cfgdir))
    img = make_image(seed="basic")
    ref = parse(f"{dom}/team/app:1")

    async def main():
        async with RegistryClient() as c:
            with pytest.raises(PermissionDenied, match="no credentials"):
                await c.get_manifest(ref)
            with pytest.raises(PermissionDenied):
                await c.login(dom, "alice", "wrong")
            assert not (cfgdir / "config.json").exists()
            path = await c.login(dom, "alice", "s3cret")
        assert path == str(cfgdir / "config.json")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        doc = json.loads(open(path).read())
        assert base64.b64decode(doc["auths"][dom]["auth"]) == b"alice:s3cret"
        assert load_credentials(dom) == Credentials("alice", "s3cret")

        async with RegistryClient() as c:     # credentials come from $DOCKER_CONFIG/config.json
            await push_image(c, ref, img)
            got = await c.get_manifest(ref)
            assert got.digest == img.digest
            r = await c.open_blob(ref, img.layers[0].digest)
            assert await r.readall() == img.layers[0].data
        assert logout(dom) is True
        assert logout(dom) is False
        async with RegistryClient() as c:
            with pytest.raises(PermissionDenied):
                await c.get_manifest(ref)

    asyncio.run(main())


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """Issues RS256 JWTs with an x5c header, as the registry's token auth verifies them.

    Anonymous callers get `pull` only; alice:s3cret gets what she asks. Anonymous answers
    use the `token` field, authenticated ones `access_token`, to exercise both."""

    def __init__(self, tmp_path, service: str, issuer: str):
        self.dir = tmp_path / "tokens"
        self.dir.mkdir()
        self.key = self.dir / "key.pem"
        self.cert = self.dir / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=ketch-test-token-issuer"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.service, self.issuer = service, issuer
        self.requests: list[dict] = []
        self.runner = None
        self.port = None

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"

    async def handle(self, request):
        from aiohttp import web
        user = None
        authz = request.headers.get("Authorization", "")
        if authz:
            if not authz.startswith("Basic ") or base64.b64decode(authz[6:]) != b"alice:s3cret":
                return web.json_response({"details": "bad credentials"}, status=401)
            user = "alice"
        scopes = request.query.getall("scope", [])
        self.requests.append({"user": user, "scopes": scopes, "service": request.query.get("service")})
        access = []
        for s in scopes:
            typ, name, actions = s.split(":")
            acts = actions.split(",")
            if user is None:
                acts = [a for a in acts if a == "pull"]
            access.append({"type": typ, "name": name, "actions": acts})
        now = int(time.time())
        tok = self.sign({"iss": self.issuer, "sub": user or "", "aud": request.query.get("service"),
                         "exp": now + 300, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                         "access": access})
        field = "access_token" if user else "token"
        return web.json_response({field: tok, "expires_in": 300})

    async def start(self):
        from aiohttp import web
        app = web.Application()
        app.router.add_get("/token", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()

    async def stop(self):
        await self.runner.cleanup()


def test_bearer_token_auth(tmp_path, monkeypatch):
    from .conftest import free_port
    ts = TokenServer(tmp_path, "ketch-registry", "ketch-issuer")
    ts.port = free_port()
    reg = start_registry(tmp_path, auth={"token": {
        "realm": f"http://127.0.0.1:{ts.port}/token", "service": "ketch-registry",
        "issuer": "ketch-issuer", "rootcertbundle": str(ts.cert)}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nocfg"))
    img = make_image(seed="token")
    ref = parse(f"{reg.domain}/team/tok:1")
    other = parse(f"{reg.domain}/team/other:1")

    async def main():
        await ts.start()
        try:
            async with RegistryClient() as anon:
                # anonymous tokens carry pull only: the registry refuses the push
                with pytest.raises(PermissionDenied):
                    await anon.push_blob(ref, img.config.digest, len(img.config.data), img.config.data)
            async with RegistryClient() as c:
                with pytest.raises(PermissionDenied, match="bad credentials"):
                    await c.login(reg.domain, "alice", "wrong")
                await c.login(reg.domain, "alice", "s3cret")
            assert load_credentials(reg.domain) == Credentials("alice", "s3cret")
            async with RegistryClient() as c:
                await push_image(c, ref, img)
                n = c.token_requests
                # same scopes again: cached tokens, no new token request
                await push_image(c, ref, img)
                assert c.token_requests == n
                # mount needs pull on the source too: one more token, and the mount happens
                assert await c.mount_blob(other, img.layers[1].digest, ref) is True
                assert any(set(r["scopes"]) == {"repository:team/other:pull,push", "repository:team/tok:pull"}
                           for r in ts.requests)
            assert logout(reg.domain)
            async with RegistryClient() as anon:
                # anonymous pull works via a `token` field; parallel first requests share one token
                gots = await asyncio.gather(*(anon.get_manifest(ref) for _ in range(4)))
                assert {g.digest for g in gots} == {img.digest}
                assert anon.token_requests == 1
                r = await anon.open_blob(ref, img.layers[1].digest, size=len(img.layers[1].data))
                assert await r.readall() == img.layers[1].data
            assert all(r["service"] == "ketch-registry" for r in ts.requests)
            assert {r["user"] for r in ts.requests} == {None, "alice"}
        finally:
            await ts.stop()

    try:
        asyncio.run(main())
    finally:
        reg.stop()
