"""An async client for the OCI distribution API (and Docker Registry HTTP API v2).

One RegistryClient per process (or per pull/push); it is safe to use from many
asyncio tasks at once: layers download in parallel, each through its own
BlobReader. Each request names the scopes it needs ("repository:<path>:pull" or
":pull,push"); on a 401 the client reads the WWW-Authenticate challenge, gets a Bearer
token from the realm (anonymously or with the stored credentials; `token` or
`access_token`; cached per realm, service and scope set until it expires) or uses
Basic auth, and retries once. A second 401/403 is PermissionDenied.

Everything that comes back is checked: manifests against their digest and the
Docker-Content-Digest header and the 4 MiB limit, blobs against size and digest
(when read from offset 0), registry error bodies are parsed for their message.
Dropped connections, 429 and 5xx are retried with doubling back-off; a blob read
that breaks half way resumes with `Range: bytes=<pos>-`.

http is used only for localhost, 127.0.0.0/8, ::1 and the domains given as insecure, unless a
certs.d directory configures TLS for them; everything else is https, verified against the
system's CAs plus those in certs.d (/etc/ketch/certs.d, /etc/docker/certs.d, or $KETCH_CERTS_D).

Kept as one module because auth challenges, retries, resume and verification all wrap the
same request loop and share its session and token cache; the pieces that stand alone (the
auth parsers and credentials) are in ketch/registry/auth.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, NoReturn
from urllib.parse import quote, urlencode, urljoin, urlsplit

from ketch.errors import (
    Conflict,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from ketch.oci import image as oci_image
from ketch.oci.reference import Reference, parse, parse_repository, validate_digest
from ketch.registry import auth as _auth

DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_ERROR_BODY = 64 * 1024
_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as received: raw bytes (what the digest covers) and the parse."""

    ref: Reference                    # the asked reference, with the digest filled in
    digest: str
    media_type: str
    data: bytes
    manifest: oci_image.Manifest | oci_image.Index

    def descriptor(self) -> oci_image.Descriptor:
        return oci_image.Descriptor(self.media_type, self.digest, len(self.data))


def _as_ref(ref: Reference | str) -> Reference:
    return parse(ref) if isinstance(ref, str) else ref


def _as_repo(ref: Reference | str) -> Reference:
    return parse_repository(ref) if isinstance(ref, str) else ref


def _host_of(domain: str) -> str:
    if domain.startswith("["):
        return domain[1:domain.index("]")]
    return domain.rsplit(":", 1)[0] if ":" in domain else domain


def mirror_url(value: str, insecure: tuple[str, ...] | list[str] = ()) -> str:
    """A registry mirror as dockerd normalizes it (``scheme://host[:port][/path]/``), or
    InvalidArgument in dockerd's words. Without a scheme (``host:port``, Ketch's leniency) the
    mirror is reached as a registry of that name would be: http when it is a loopback address or
    one of the insecure registries, else https."""
    v = str(value).strip()
    if "://" not in v:
        host = v.split("/", 1)[0]
        plain = is_loopback(host) or host in insecure
        v = ("http://" if plain else "https://") + v
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"invalid mirror: unsupported scheme {parts.scheme!r} in {value!r}: must use "
                              "either 'https://' or 'http://'")
    if parts.query or parts.fragment:
        raise InvalidArgument(f"invalid mirror: query or fragment at end of the URI {value!r}")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(f"invalid mirror: username/password not allowed in URI {parts.hostname!r}")
    if not parts.hostname:
        raise InvalidArgument(f"invalid mirror: {value!r} is not a valid URI")
    try:
        _ = parts.port
    except ValueError:
        raise InvalidArgument(f"invalid mirror: {value!r} is not a valid URI: bad port") from None
    return v.rstrip("/") + "/"


def is_loopback(domain: str) -> bool:
    host = _host_of(domain)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_limited(resp, limit: int, what: str) -> bytes:
    cl = resp.headers.get("Content-Length")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        raise InvalidArgument(f"{what}: {cl} bytes exceeds the {limit} byte limit")
    buf = bytearray()
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise InvalidArgument(f"{what}: response exceeds the {limit} byte limit")


def _registry_message(body: bytes) -> str:
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:200]
    errs = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errs, list):
        parts = []
        for e in errs[:5]:
            if not isinstance(e, dict):
                continue
            msg = str(e.get("message") or e.get("code") or "").strip()
            detail = e.get("detail")
            if isinstance(detail, (str, int)) and str(detail) and str(detail) != msg:
                msg += f" ({detail})"
            elif isinstance(detail, (dict, list)) and detail:
                msg += f" ({json.dumps(detail, separators=(',', ':'))[:200]})"
            parts.append(msg)
        if parts:
            return "; ".join(parts)
    if isinstance(doc, dict) and isinstance(doc.get("details"), str):
        return doc["details"]
    return ""


class BlobReader:
    """A blob being read from a registry: `async for chunk in reader`, or `await reader.read()`.

    Resumes with Range after a dropped connection (up to the client's retry count per
    break). If opened at offset 0 it hashes what it yields and raises FailedPrecondition
    at the end if the digest does not match (unless opened with `verify=False`: the caller hashes
    the bytes itself, e.g. a content Writer whose commit checks the digest, and the same bytes
    are not hashed twice); if `size` was given, a longer or shorter blob is refused. `size`
    (total length) is known after open when the server said it.
    Always close it (`async with` or `await reader.close()`).
    """

    def __init__(self, client: RegistryClient, source: str, digest: str, offset: int, size: int | None,
                 opener: Callable, verify: bool = True):
        self._client = client
        self._source = source      # for messages: the repository or URL
        self._opener = opener      # async (position) -> open 200/206 response
        self.digest = digest
        self.offset = offset
        self.position = offset
        self.size = size
        self._resp: Any = None     # the open aiohttp response, None between responses
        self._hasher = hashlib.new(digest.partition(":")[0]) if offset == 0 and verify else None
        self._done = False
        self.resumes = 0

    async def _open(self) -> None:
        resp = await self._opener(self.position)
        total = None
        if resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != self.position:
                resp.release()
                raise FailedPrecondition(f"blob {self.digest}: server answered range {self.position}- with "
                                         f"{resp.headers.get('Content-Range')!r}")
            if m.group(3) != "*":
                total = int(m.group(3))
        else:  # 200: a whole body; skip what we already have
            cl = resp.headers.get("Content-Length")
            if cl is not None and cl.isdigit():
                total = int(cl)
            skip = self.position
            while skip > 0:
                chunk = await resp.content.read(min(skip, 1 << 20))
                if not chunk:
                    resp.release()
                    raise FailedPrecondition(f"blob {self.digest}: shorter than offset {self.position}")
                skip -= len(chunk)
        if total is not None:
            if self.size is not None and total != self.size:
                resp.release()
                raise FailedPrecondition(f"blob {self.digest}: registry says {total} bytes, expected {self.size}")
            self.size = total
        self._resp = resp

    async def read(self, n: int = 1 << 16) -> bytes:
        """Up to n bytes; b"" at the verified end."""
        if self._done:
            return b""
        breaks = 0
        while True:
            if self._resp is None:
                await self._open()
            try:
                chunk = await self._resp.content.read(n)
            except Exception as e:  # noqa: BLE001 - narrowed below
                if not self._client._is_transient(e):
                    raise
                self._resp.release()
                self._resp = None
                breaks += 1
                self.resumes += 1
                if breaks > self._client.retries or (isinstance(e, asyncio.TimeoutError) and breaks > 1):
                    raise Unavailable(f"download blob {self.digest} from {self._source}: "
                                      f"connection broken at byte {self.position}: "
                                      f"{self._client.describe(e)}") from None
                await asyncio.sleep(self._client.backoff * (2 ** (breaks - 1)))
                continue
            if chunk:
                if self.size is not None and self.position + len(chunk) > self.size:
                    raise FailedPrecondition(f"blob {self.digest} from {self._source}: "
                                             f"longer than its size {self.size}")
                self.position += len(chunk)
                if self._hasher:
                    self._hasher.update(chunk)
                return chunk
            # end of this response body
            if self.size is not None and self.position < self.size:
                # the server closed cleanly but early: resume
                self._resp.release()
                self._resp = None
                breaks += 1
                self.resumes += 1
                if breaks > self._client.retries:
                    raise Unavailable(f"download blob {self.digest} from {self._source}: "
                                      f"ended at byte {self.position} of {self.size}")
                continue
            self._done = True
            self._resp.release()
            self._resp = None
            if self._hasher:
                got = self._hasher.name + ":" + self._hasher.hexdigest()
                if got != self.digest:
                    raise FailedPrecondition(f"blob {self.digest} from {self._source}: "
                                             f"digest mismatch: content is {got}")
            return b""

    async def readall(self) -> bytes:
        buf = bytearray()
        while chunk := await self.read(1 << 20):
            buf += chunk
        return bytes(buf)

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def close(self) -> None:
        if self._resp is not None:
            self._resp.release()
            self._resp = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


def default_certs_dirs() -> tuple[str, ...]:
    """Where registries' CAs and client certificates live: $KETCH_CERTS_D (colon-separated) or
    /etc/ketch/certs.d then Docker's /etc/docker/certs.d, one directory per HOST[:PORT]."""
    env = os.environ.get("KETCH_CERTS_D")
    if env is not None:
        return tuple(p for p in env.split(":") if p)
    return ("/etc/ketch/certs.d", "/etc/docker/certs.d")


class RegistryClient:
    """Async distribution client. Use `async with RegistryClient() as c:` or call close().

    credentials: None reads the Docker config file (`docker_config` path, default
    $DOCKER_CONFIG/config.json or ~/.docker/config.json) per domain; a dict maps
    domain -> Credentials; a callable domain -> Credentials | None.
    insecure: domains (host[:port]) to reach over plain http besides the loopback ones.
    endpoints: domain -> base URL that serves that domain's repositories instead (a registry
    mirror for docker.io: ``{"docker.io": "http://127.0.0.1:5000/"}``; a path is kept as a prefix).
    """

    def __init__(self, *, credentials: dict | Callable | None = None, docker_config: str | None = None,
                 insecure: tuple[str, ...] | list[str] = (), retries: int = 4, backoff: float = 0.25,
                 user_agent: str = "ketch/0.1", connect_timeout: float = 30, read_timeout: float = 120,
                 certs_dirs: tuple[str, ...] | list[str] | None = None, endpoints: dict[str, str] | None = None):
        self._credentials = credentials
        self._endpoints = {d: u.rstrip("/") for d, u in (endpoints or {}).items()}
        self._certs_dirs = tuple(certs_dirs) if certs_dirs is not None else default_certs_dirs()
        self._ssl_contexts: dict[str, object] = {}
        self._docker_config = docker_config
        self._insecure = set(insecure)
        self.retries = retries
        self.backoff = backoff
        self._user_agent = user_agent
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._session = None
        self._challenges: dict[str, _auth.Challenge] = {}
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self._token_locks: dict[tuple, asyncio.Lock] = {}
        self.token_requests = 0   # how many times a token endpoint was asked (for tests and stats)

    # ---- plumbing -------------------------------------------------------------------------
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self):
        if self._session is None:
            import aiohttp
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout,
                                              sock_read=self._read_timeout),
                auto_decompress=False,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"})
        return self._session

    def describe(self, e: BaseException) -> str:
        """A transport error in words; a timeout says which one and how long it waited."""
        import aiohttp
        if isinstance(e, asyncio.TimeoutError):
            if type(e).__name__ == "ConnectionTimeoutError" or "connect" in str(e).lower():
                return f"no connection within {self._connect_timeout:g}s (connect timeout)"
            return f"the registry did not answer within {self._read_timeout:g}s (read timeout)"
        if isinstance(e, aiohttp.ClientConnectorError):
            return f"cannot connect: {e.os_error.strerror or e}" if e.os_error else str(e)
        return str(e) or type(e).__name__

    def _is_transient(self, e: BaseException) -> bool:
        import aiohttp
        return isinstance(e, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                              asyncio.TimeoutError, ConnectionError))

    def tls_dir(self, hostport: str) -> str | None:
        """The certs.d directory of a registry (Docker's layout: *.crt CAs, client.cert and
        client.key), or None."""
        for d in self._certs_dirs:
            p = os.path.join(d, hostport.replace("/", "_"))
            if os.path.isdir(p):
                return p
        return None

    def _ssl_for(self, url: str):
        """True (the system's CAs) or a context that also trusts the registry's own CAs."""
        hostport = urlsplit(url).netloc
        if hostport in self._ssl_contexts:
            return self._ssl_contexts[hostport]
        ctx: object = True
        d = self.tls_dir(hostport) if urlsplit(url).scheme == "https" else None
        if d:
            import ssl
            sctx = ssl.create_default_context()
            for name in sorted(os.listdir(d)):
                path = os.path.join(d, name)
                if name.endswith(".crt"):
                    try:
                        sctx.load_verify_locations(cafile=path)
                    except (ssl.SSLError, OSError) as e:
                        raise InvalidArgument(f"registry CA `{path}`: {e}") from None
            cert, key = os.path.join(d, "client.cert"), os.path.join(d, "client.key")
            if os.path.exists(cert) and os.path.exists(key):
                try:
                    sctx.load_cert_chain(cert, key)
                except (ssl.SSLError, OSError) as e:
                    raise InvalidArgument(f"registry client certificate `{cert}`: {e}") from None
            ctx = sctx
        self._ssl_contexts[hostport] = ctx
        return ctx

    def base_url(self, domain: str) -> str:
        if domain in self._endpoints:
            return self._endpoints[domain]
        # http for loopback and insecure registries, unless TLS is configured for them in certs.d
        plain = (is_loopback(domain) or domain in self._insecure) and not self.tls_dir(domain)
        scheme = "http" if plain else "https"
        host = DOCKER_HUB_ENDPOINT if domain in ("docker.io", "index.docker.io") else domain
        return f"{scheme}://{host}"

    def _creds(self, domain: str) -> _auth.Credentials | None:
        c = self._credentials
        if c is None:
            return _auth.load_credentials(domain, self._docker_config)
        if callable(c):
            return c(domain)
        return c.get(domain)

    async def _token(self, domain: str, ch: _auth.Challenge, scopes: tuple[str, ...], renew: bool,
                     stale: str | None = None) -> str:
        """A token for these scopes: cached unless `renew`; when renewing, a cached token other
        than `stale` (the one that was refused) was fetched meanwhile by another task and is used."""
        realm = ch.params.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise PermissionDenied(f"authenticate to {domain}: bearer challenge without a usable realm {realm!r}")
        service = ch.params.get("service", "")
        all_scopes = set(scopes)
        if ch.params.get("scope"):
            all_scopes.update(ch.params["scope"].split(" "))
        key = (realm, service, tuple(sorted(all_scopes)))
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic() and (not renew or cached[0] != stale):
                return cached[0]
            query = [("service", service)] if service else []
            query += [("scope", s) for s in sorted(all_scopes)]
            url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
            headers = {}
            creds = self._creds(domain)
            if creds:
                headers["Authorization"] = creds.basic_header()
            self.token_requests += 1
            for attempt in range(self.retries + 1):
                try:
                    async with self._sess().get(url, headers=headers, allow_redirects=True,
                                                ssl=self._ssl_for(url)) as resp:
                        body = await _read_limited(resp, 1 << 20, f"token from {realm}")
                        status = resp.status
                except Exception as e:  # noqa: BLE001
                    if not self._is_transient(e) or attempt == self.retries:
                        if self._is_transient(e):
                            raise Unavailable(f"get token from {realm} for {domain}: {e}") from None
                        raise
                    await asyncio.sleep(self.backoff * 2 ** attempt)
                    continue
                if status in _RETRY_STATUS and attempt < self.retries:
                    await asyncio.sleep(self.backoff * 2 ** attempt)
                    continue
                break
            if status in (401, 403):
                raise PermissionDenied(f"get token from {realm} for {domain}: {status}: "
                                       f"{_registry_message(body) or 'unauthorized'}")
            if status != 200:
                raise Unavailable(f"get token from {realm} for {domain}: status {status}: {_registry_message(body)}")
            try:
                doc = json.loads(body)
            except ValueError:
                raise InvalidArgument(f"get token from {realm}: response is not JSON") from None
            tok = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
            if not isinstance(tok, str) or not tok or any(c in tok for c in "\r\n"):
                raise InvalidArgument(f"get token from {realm}: response has no token")
            exp = doc.get("expires_in", 60)
            if type(exp) is not int or exp < 60:
                exp = 60
            self._tokens[key] = (tok, time.monotonic() + exp - 10)
            return tok

    async def _auth_header(self, domain: str, scopes: tuple[str, ...], renew: bool) -> str | None:
        ch = self._challenges.get(domain)
        if ch is None:
            return None
        if ch.scheme == "bearer":
            return "Bearer " + await self._token(domain, ch, scopes, renew)
        if ch.scheme == "basic":
            creds = self._creds(domain)
            if creds is None:
                raise PermissionDenied(f"{domain}: authentication required and no credentials stored "
                                       f"(log in first)")
            return creds.basic_header()
        raise PermissionDenied(f"{domain}: unsupported authentication scheme {ch.scheme!r}")

    async def _request(self, method: str, domain: str, path_or_url: str, *, scopes: tuple[str, ...] = (),
                       headers: dict | None = None, body: Callable | None = None, retry: bool = True,
                       what: str = ""):
        """Send a request with auth, redirects and retries; return the open response (caller releases).

        `body` is a callable returning a fresh request body for each attempt.
        """
        url = path_or_url if "://" in path_or_url else self.base_url(domain) + path_or_url
        start_host = urlsplit(url).netloc
        renewed = False
        attempt = 0
        redirects = 0
        while True:
            hdrs = dict(headers or {})
            if urlsplit(url).netloc == start_host:
                ah = await self._auth_header(domain, scopes, renew=False)
                if ah:
                    hdrs["Authorization"] = ah
            try:
                resp = await self._sess().request(method, url, headers=hdrs, data=body() if body else None,
                                                  allow_redirects=False, ssl=self._ssl_for(url))
            except Exception as e:  # noqa: BLE001
                if not self._is_transient(e):
                    raise
                # a registry that does not answer is asked once more, not `retries` times over
                timed_out = isinstance(e, asyncio.TimeoutError)
                if not retry or attempt >= self.retries or (timed_out and attempt >= 1):
                    raise Unavailable(f"{what or method + ' ' + url}: {domain}: {self.describe(e)}") from None
                await asyncio.sleep(self.backoff * 2 ** attempt)
                attempt += 1
                continue
            if resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") and "Location" in resp.headers:
                loc = urljoin(url, resp.headers["Location"])
                resp.release()
                redirects += 1
                if redirects > _MAX_REDIRECTS or urlsplit(loc).scheme not in ("http", "https"):
                    raise Unavailable(f"{what}: {domain}: too many or bad redirects")
                url = loc
                continue
            if resp.status == 401 and not renewed and urlsplit(url).netloc == start_host:
                chs = _auth.parse_challenges(resp.headers.get("WWW-Authenticate", ""))
                resp.release()
                ch = next((c for c in chs if c.scheme == "bearer"), None) or \
                    next((c for c in chs if c.scheme == "basic"), None)
                if ch is None:
                    raise PermissionDenied(f"{what}: {domain}: unauthorized and no usable challenge")
                self._challenges[domain] = ch
                renewed = True
                if ch.scheme == "bearer":
                    sent = hdrs.get("Authorization", "")
                    await self._token(domain, ch, scopes, renew=True,
                                      stale=sent[7:] if sent.startswith("Bearer ") else None)
                continue
            if resp.status in _RETRY_STATUS and retry and attempt < self.retries:
                ra = resp.headers.get("Retry-After", "")
                resp.release()
                delay = self.backoff * 2 ** attempt
                if ra.isdigit():
                    delay = max(delay, min(int(ra), 30))
                await asyncio.sleep(delay)
                attempt += 1
                continue
            return resp

    async def _fail(self, resp, what: str, not_found: str | None = None) -> NoReturn:
        """Raise the error kind for a failed response, with the registry's message."""
        try:
            body = await _read_limited(resp, _MAX_ERROR_BODY, what)
        except Exception:  # noqa: BLE001 - best effort for the message
            body = b""
        finally:
            resp.release()
        msg = _registry_message(body)
        tail = f": {msg}" if msg else ""
        s = resp.status
        if s == 404:
            raise NotFound(f"{not_found or what}{tail}")
        if s in (401, 403):
            raise PermissionDenied(f"{what}: {'unauthorized' if s == 401 else 'denied'}{tail}")
        if s in (400, 413, 416):
            raise InvalidArgument(f"{what}: status {s}{tail}")
        if s == 405:
            raise FailedPrecondition(f"{what}: operation not supported by the registry{tail}")
        if s == 409:
            raise Conflict(f"{what}{tail}")
        if s in _RETRY_STATUS:
            raise Unavailable(f"{what}: status {s}{tail}")
        raise Internal(f"{what}: unexpected status {s}{tail}")

    @staticmethod
    def _pull(ref: Reference) -> tuple[str, ...]:
        return (f"repository:{ref.path}:pull",)

    @staticmethod
    def _push(ref: Reference) -> tuple[str, ...]:
        return (f"repository:{ref.path}:pull,push",)

    # ---- API ------------------------------------------------------------------------------
    async def ping(self, domain: str) -> None:
        """GET /v2/: check the registry speaks the API (an auth challenge counts as yes)."""
        resp = await self._request("GET", domain, "/v2/", what=f"ping {domain}")
        if resp.status == 200:
            resp.release()
            return
        await self._fail(resp, f"ping {domain}")

    async def login(self, domain: str, username: str, password: str, config: str | None = None) -> str:
        """Check credentials against the registry, then store them in the Docker config; return its path."""
        creds = _auth.Credentials(username, password)
        probe = RegistryClient(credentials={domain: creds}, insecure=tuple(self._insecure),
                               retries=self.retries, backoff=self.backoff)
        try:
            await probe.ping(domain)
            ch = probe._challenges.get(domain)
            if ch is not None and ch.scheme == "bearer":
                await probe._token(domain, ch, (), renew=True)
        finally:
            await probe.close()
        return _auth.save_credentials(domain, creds, config or self._docker_config)

    async def get_manifest(self, ref: Reference | str,
                           accept: tuple[str, ...] = oci_image.ALL_MANIFEST_TYPES) -> FetchedManifest:
        """Fetch a manifest or index by tag or digest, verify its digest, parse it strictly."""
        ref = _as_ref(ref)
        what = f"get manifest {ref}"
        resp = await self._request("GET", ref.domain, f"/v2/{ref.path}/manifests/{ref.object}",
                                   scopes=self._pull(ref), headers={"Accept": ", ".join(accept)}, what=what)
        if resp.status != 200:
            await self._fail(resp, what, not_found=f"manifest unknown: {ref.familiar()}")
        try:
            data = await _read_limited(resp, oci_image.MAX_MANIFEST_SIZE, what)
        except Exception as e:  # noqa: BLE001
            resp.release()
            if self._is_transient(e):
                raise Unavailable(f"{what}: {e}") from None
            raise
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
        header_digest = resp.headers.get("Docker-Content-Digest")
        resp.release()
        if ref.digest:
            got = oci_image.digest_of(data, ref.digest)
            if got != ref.digest:
                raise FailedPrecondition(f"{what}: digest mismatch: content is {got}")
            digest = ref.digest
        else:
            digest = oci_image.sha256_digest(data)
        if header_digest:
            try:
                validate_digest(header_digest)
            except InvalidArgument:
                raise FailedPrecondition(f"{what}: malformed Docker-Content-Digest {header_digest!r}") from None
            if oci_image.digest_of(data, header_digest) != header_digest:
                raise FailedPrecondition(f"{what}: content does not match Docker-Content-Digest {header_digest}")
        m = oci_image.parse_manifest(data, ctype or None)
        if m.media_type not in accept:
            raise FailedPrecondition(f"{what}: registry sent {m.media_type}, which was not asked for")
        return FetchedManifest(Reference(ref.domain, ref.path, ref.tag, digest), digest, m.media_type, data, m)

    async def head_manifest(self, ref: Reference | str,
                            accept: tuple[str, ...] = oci_image.ALL_MANIFEST_TYPES) -> oci_image.Descriptor:
        """HEAD a manifest: its descriptor (media type, digest from the header, size)."""
        ref = _as_ref(ref)
        what = f"head manifest {ref}"
        resp = await self._request("HEAD", ref.domain, f"/v2/{ref.path}/manifests/{ref.object}",
                                   scopes=self._pull(ref), headers={"Accept": ", ".join(accept)}, what=what)
        if resp.status != 200:
            await self._fail(resp, what, not_found=f"manifest unknown: {ref.familiar()}")
        h = resp.headers
        resp.release()
        dg = h.get("Docker-Content-Digest")
        if not dg:
            raise FailedPrecondition(f"{what}: registry sent no Docker-Content-Digest")
        validate_digest(dg)
        if ref.digest and dg != ref.digest:
            raise FailedPrecondition(f"{what}: registry answered for {dg}")
        size = h.get("Content-Length", "")
        return oci_image.Descriptor(h.get("Content-Type", "").split(";")[0].strip(), dg,
                                    int(size) if size.isdigit() else 0)

    async def _blob_response(self, ref: Reference, digest: str, offset: int):
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        what = f"get blob {ref.name}@{digest}"
        resp = await self._request("GET", ref.domain, f"/v2/{ref.path}/blobs/{digest}",
                                   scopes=self._pull(ref), headers=headers, what=what)
        if resp.status not in (200, 206):
            await self._fail(resp, what, not_found=f"blob unknown: {ref.name}@{digest}")
        return resp

    async def open_blob(self, ref: Reference | str, digest: str, offset: int = 0,
                        size: int | None = None, verify: bool = True) -> BlobReader:
        """Open a blob for streaming from `offset` (Range); see BlobReader (and its `verify`)."""
        ref = _as_repo(ref) if isinstance(ref, str) else ref
        validate_digest(digest)
        if offset < 0 or (size is not None and offset > size):
            raise InvalidArgument(f"open blob {digest}: bad offset {offset}")
        r = BlobReader(self, ref.name, digest, offset, size,
                       lambda pos: self._blob_response(ref, digest, pos), verify)
        if size is not None and offset == size:
            r._done = True
            return r
        await r._open()
        return r

    async def _url_response(self, url: str, digest: str, offset: int):
        what = f"get foreign layer {digest} from {url}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        # no registry credentials go to foreign hosts: the domain key is the URL's own host
        resp = await self._request("GET", "foreign:" + urlsplit(url).netloc, url, headers=headers, what=what)
        if resp.status not in (200, 206):
            await self._fail(resp, what)
        return resp

    async def open_layer(self, ref: Reference | str, desc: oci_image.Descriptor, offset: int = 0,
                         verify: bool = True) -> BlobReader:
        """Open a layer by its descriptor. Non-distributable (foreign) layers with `urls` are
        fetched from those URLs first, as Docker does (digest and size verified the same way),
        then from the registry; other layers come from the registry."""
        ref = _as_ref(ref)
        errors = []
        if desc.foreign:
            for url in desc.urls:
                if urlsplit(url).scheme not in ("http", "https"):
                    continue
                r = BlobReader(self, url, desc.digest, offset, desc.size,
                               lambda pos, u=url: self._url_response(u, desc.digest, pos), verify)
                try:
                    await r._open()
                    return r
                except (NotFound, PermissionDenied, Unavailable, FailedPrecondition, InvalidArgument,
                        Internal) as e:
                    errors.append(str(e))
        try:
            return await self.open_blob(ref, desc.digest, offset, desc.size, verify)
        except NotFound as e:
            if errors:
                raise NotFound(f"{e}; foreign urls failed: {'; '.join(errors)}") from None
            raise

    async def blob_exists(self, ref: Reference | str, digest: str) -> int | None:
        """HEAD a blob: its size if the repository has it, else None."""
        ref = _as_ref(ref)
        validate_digest(digest)
        what = f"head blob {ref.name}@{digest}"
        resp = await self._request("HEAD", ref.domain, f"/v2/{ref.path}/blobs/{digest}",
                                   scopes=self._push(ref), what=what)
        resp.release()
        if resp.status == 200:
            cl = resp.headers.get("Content-Length", "")
            return int(cl) if cl.isdigit() else 0
        if resp.status == 404:
            return None
        await self._fail(resp, what)

    async def _cancel_upload(self, ref: Reference, location: str) -> None:
        try:
            resp = await self._request("DELETE", ref.domain, location, scopes=self._push(ref), retry=False)
            resp.release()
        except Unavailable:
            pass

    def _location(self, ref: Reference, resp, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise Internal(f"{what}: registry sent no Location")
        url = urljoin(self.base_url(ref.domain) + "/", loc)
        if urlsplit(url).scheme not in ("http", "https"):
            raise Internal(f"{what}: bad Location {loc!r}")
        return url

    async def mount_blob(self, ref: Reference | str, digest: str, from_repo: Reference | str) -> bool:
        """Cross-repository mount; True if the registry mounted it (201), False if not (upload needed)."""
        ref = _as_ref(ref)
        src = _as_ref(from_repo)
        validate_digest(digest)
        if src.domain != ref.domain:
            return False
        what = f"mount blob {digest} from {src.name} into {ref.name}"
        q = urlencode([("mount", digest), ("from", src.path)])
        resp = await self._request("POST", ref.domain, f"/v2/{ref.path}/blobs/uploads/?{q}",
                                   scopes=self._push(ref) + (f"repository:{src.path}:pull",), what=what)
        if resp.status == 201:
            resp.release()
            return True
        if resp.status == 202:
            loc = self._location(ref, resp, what)
            resp.release()
            await self._cancel_upload(ref, loc)
            return False
        await self._fail(resp, what)

    async def push_blob(self, ref: Reference | str, digest: str, size: int, data, *,
                        chunk_size: int | None = None, mount_from: Reference | str | None = None) -> str:
        """Upload a blob unless it is there; returns "exists", "mounted" or "uploaded".

        data: bytes, or a seekable binary file object positioned anywhere (read from its start).
        chunk_size: None for a monolithic upload (POST then PUT with the body), else PATCH
        chunks of that many bytes with Content-Range, then PUT ?digest=.
        """
        ref = _as_ref(ref)
        validate_digest(digest)
        if await self.blob_exists(ref, digest) is not None:
            return "exists"
        if mount_from is not None and await self.mount_blob(ref, digest, mount_from):
            return "mounted"
        what = f"upload blob {digest} to {ref.name}"
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
            if len(raw) != size:
                raise InvalidArgument(f"{what}: have {len(raw)} bytes, descriptor says {size}")

            def read_at(off: int, n: int) -> bytes:
                return raw[off:off + n]

            def whole():
                return raw
        else:
            f = data

            def read_at(off: int, n: int) -> bytes:
                f.seek(off)
                return f.read(n)

            def whole():
                f.seek(0)
                return f
        resp = await self._request("POST", ref.domain, f"/v2/{ref.path}/blobs/uploads/",
                                   scopes=self._push(ref), headers={"Content-Length": "0"}, what=what)
        if resp.status != 202:
            await self._fail(resp, what)
        loc = self._location(ref, resp, what)
        resp.release()
        try:
            if chunk_size:
                off = 0
                while off < size:
                    chunk = read_at(off, min(chunk_size, size - off))
                    if not chunk:
                        raise InvalidArgument(f"{what}: source ended at {off} of {size} bytes")
                    hdrs = {"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                            "Content-Range": f"{off}-{off + len(chunk) - 1}"}
                    resp = await self._request("PATCH", ref.domain, loc, scopes=self._push(ref), headers=hdrs,
                                               body=lambda c=chunk: c, retry=False, what=what)
                    if resp.status != 202:
                        await self._fail(resp, what)
                    loc = self._location(ref, resp, what)
                    resp.release()
                    off += len(chunk)
                put_body, put_len = None, "0"
            else:
                put_body, put_len = whole, str(size)
            url = loc + ("&" if "?" in loc else "?") + "digest=" + quote(digest, safe="")
            hdrs = {"Content-Type": "application/octet-stream", "Content-Length": put_len}
            resp = await self._request("PUT", ref.domain, url, scopes=self._push(ref), headers=hdrs,
                                       body=put_body, what=what)
            if resp.status != 201:
                await self._fail(resp, what)
            got = resp.headers.get("Docker-Content-Digest")
            resp.release()
            if got and got != digest:
                raise FailedPrecondition(f"{what}: registry stored it as {got}")
        except BaseException:
            await self._cancel_upload(ref, loc)
            raise
        return "uploaded"

    async def put_manifest(self, ref: Reference | str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index under ref's tag (or digest); returns its digest.

        The bytes are parsed first (the registry stores exactly these bytes)."""
        ref = _as_ref(ref)
        oci_image.parse_manifest(data, media_type)
        digest = oci_image.sha256_digest(data)
        if ref.digest and oci_image.digest_of(data, ref.digest) != ref.digest:
            raise InvalidArgument(f"put manifest {ref}: content digest does not match the reference")
        what = f"put manifest {ref}"
        target = ref.tag or ref.digest
        resp = await self._request("PUT", ref.domain, f"/v2/{ref.path}/manifests/{target}",
                                   scopes=self._push(ref),
                                   headers={"Content-Type": media_type}, body=lambda: data, what=what)
        if resp.status not in (200, 201):
            await self._fail(resp, what)
        got = resp.headers.get("Docker-Content-Digest")
        resp.release()
        if got and got != digest and not (ref.digest and got == ref.digest):
            raise FailedPrecondition(f"{what}: registry stored it as {got}, expected {digest}")
        return ref.digest or digest

    async def list_tags(self, ref: Reference | str, page_size: int | None = None) -> list[str]:
        """All tags of a repository (follows Link: rel="next" pagination)."""
        ref = _as_repo(ref) if isinstance(ref, str) else ref
        what = f"list tags of {ref.name}"
        path = f"/v2/{ref.path}/tags/list" + (f"?n={page_size}" if page_size else "")
        tags: list[str] = []
        for _ in range(10000):
            resp = await self._request("GET", ref.domain, path, scopes=self._pull(ref), what=what)
            if resp.status != 200:
                await self._fail(resp, what, not_found=f"repository unknown: {ref.name}")
            body = await _read_limited(resp, 16 << 20, what)
            link = resp.headers.get("Link", "")
            resp.release()
            try:
                doc = json.loads(body)
            except ValueError:
                raise InvalidArgument(f"{what}: response is not JSON") from None
            page = doc.get("tags") if isinstance(doc, dict) else None
            if page is None:
                page = []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise InvalidArgument(f"{what}: tags must be a list of strings")
            tags += page
            m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
            if not m:
                return tags
            nxt = urljoin(self.base_url(ref.domain) + path, m.group(1))
            if urlsplit(nxt).netloc != urlsplit(self.base_url(ref.domain)).netloc:
                raise InvalidArgument(f"{what}: pagination link leaves the registry")
            path = nxt
        raise InvalidArgument(f"{what}: too many pages")

    async def delete_manifest(self, ref: Reference | str) -> None:
        """DELETE a manifest by digest (registries refuse tags)."""
        ref = _as_ref(ref)
        if not ref.digest:
            raise InvalidArgument(f"delete manifest {ref}: a digest is required")
        what = f"delete manifest {ref}"
        resp = await self._request("DELETE", ref.domain, f"/v2/{ref.path}/manifests/{ref.digest}",
                                   scopes=(f"repository:{ref.path}:delete",) + self._push(ref), what=what)
        if resp.status not in (200, 202):
            await self._fail(resp, what, not_found=f"manifest unknown: {ref.familiar()}")
        resp.release()


def logout(domain: str, config: str | None = None) -> bool:
    """Forget stored credentials for `domain`; True if there were some."""
    return _auth.remove_credentials(domain, config)
