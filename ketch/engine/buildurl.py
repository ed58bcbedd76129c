"""ADD of an http(s) URL: the daemon downloads the file for the step, as Docker's builders do.

The remote side is hostile: the body is bounded (`max_bytes`, `$KETCH_BUILD_URL_MAX`, 1 GiB by
default; more is an error naming the cap), redirects are followed by hand (at most 10, only to
http or https), the connection (30 s) and each read (`$KETCH_BUILD_URL_TIMEOUT` s of silence, 120
by default) time out, and nothing of the answer but its body,
its status and `Last-Modified` is used. The file is written 0600 (Docker's classic builder's mode
for remote files; `--chmod` changes it later), its mtime from `Last-Modified` when the server
gives one, and it is not unpacked (but with `--unpack=true`). `--checksum=sha256:<hex>` is checked against what came.

git URLs (`https://host/repo.git`, `git@...`, `git://...`) are BuildKit's git sources: refused.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

from ketch.errors import InvalidArgument, NotImplementedYet

MAX_REDIRECTS = 10
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0
DEFAULT_MAX_BYTES = 1 << 30

_GIT_RE = re.compile(r"^(git@|git://|ssh://|git\+)", re.IGNORECASE)
_HTTP_RE = re.compile(r"^https?://", re.IGNORECASE)


def max_bytes() -> int:
    """The cap on one downloaded file: `$KETCH_BUILD_URL_MAX` (bytes) of ketchd's environment, else 1 GiB."""
    raw = os.environ.get("KETCH_BUILD_URL_MAX", "")
    try:
        return int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        return DEFAULT_MAX_BYTES


def silence_timeout() -> float:
    """How long a server may stay silent: `$KETCH_BUILD_URL_TIMEOUT` (seconds) of ketchd's environment, else 120."""
    raw = os.environ.get("KETCH_BUILD_URL_TIMEOUT", "")
    try:
        return float(raw) if raw and float(raw) > 0 else READ_TIMEOUT
    except ValueError:
        return READ_TIMEOUT


def is_http(source: str) -> bool:
    return bool(_HTTP_RE.match(source))


def is_git(source: str) -> bool:
    """BuildKit's git sources: git@/git:// /ssh:// transports, or an http(s) URL of a `.git` path."""
    if _GIT_RE.match(source):
        return True
    if is_http(source):
        path = urlsplit(source).path
        return path.endswith(".git") or path.endswith(".git/")
    return False


def file_name(url: str) -> str:
    """The name a URL's file gets under a destination directory: its path's last element."""
    return posixpath.basename(unquote(urlsplit(url).path).rstrip("/"))


def parse_checksum(spec: str) -> str:
    """`--checksum=sha256:<64 hex>` as the hex digest; anything else is refused by name."""
    algo, _, hexd = spec.partition(":")
    if algo != "sha256":
        raise InvalidArgument(f"ADD --checksum={spec}: only sha256:<hex> checksums are supported")
    if not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise InvalidArgument(f"ADD --checksum={spec}: invalid sha256 digest")
    return hexd


class FetchError(Exception):
    """A download that failed: the message names the URL and why."""


@dataclass
class Fetched:
    path: str
    sha256: str
    size: int


async def download(url: str, dest: str, *, checksum: str = "", limit: int | None = None,
                   connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float | None = None) -> Fetched:
    """Download ``url`` to ``dest`` (created 0600, mtime from Last-Modified); FetchError on failure
    (status, too big, bad redirect, timeout, unreachable, checksum mismatch), ``dest`` then removed."""
    import asyncio

    import aiohttp
    cap = max_bytes() if limit is None else limit
    read_timeout = read_timeout or silence_timeout()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
    current = url
    try:
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False, auto_decompress=False) as s:
            for _ in range(MAX_REDIRECTS + 1):
                async with s.get(current, allow_redirects=False,
                                 headers={"Accept-Encoding": "identity"}) as r:
                    if r.status in (301, 302, 303, 307, 308):
                        loc = r.headers.get("Location", "")
                        if not loc:
                            raise FetchError(f"ADD {url}: redirect {r.status} without a Location")
                        nxt = urljoin(current, loc)
                        if not is_http(nxt):
                            raise FetchError(f"ADD {url}: redirect to {nxt!r} refused: only http and https")
                        current = nxt
                        continue
                    if r.status != 200:
                        raise FetchError(f"ADD {url}: the server answered {r.status} {r.reason or ''}".rstrip())
                    length = r.content_length
                    if length is not None and length > cap:
                        raise FetchError(f"ADD {url}: the file is {length} bytes, more than the {cap} bytes "
                                         f"a build downloads (KETCH_BUILD_URL_MAX)")
                    h = hashlib.sha256()
                    size = 0
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    try:
                        async for chunk in r.content.iter_chunked(1 << 20):
                            size += len(chunk)
                            if size > cap:
                                raise FetchError(f"ADD {url}: more than the {cap} bytes a build downloads "
                                                 f"(KETCH_BUILD_URL_MAX)")
                            h.update(chunk)
                            mv = memoryview(chunk)
                            while mv:
                                mv = mv[os.write(fd, mv):]
                        os.fchmod(fd, 0o600)
                    finally:
                        os.close(fd)
                    if length is not None and size != length:
                        raise FetchError(f"ADD {url}: the connection closed after {size} of {length} bytes")
                    got = h.hexdigest()
                    if checksum and got != checksum:
                        raise FetchError(f"ADD {url}: checksum mismatch: expected sha256:{checksum}, "
                                         f"got sha256:{got}")
                    lm = r.headers.get("Last-Modified")
                    if lm:
                        try:
                            t = email.utils.parsedate_to_datetime(lm).timestamp()
                            os.utime(dest, (t, t))
                        except (TypeError, ValueError, OverflowError):
                            pass
                    return Fetched(dest, got, size)
            raise FetchError(f"ADD {url}: more than {MAX_REDIRECTS} redirects")
    except FetchError:
        _unlink(dest)
        raise
    except asyncio.TimeoutError:
        _unlink(dest)
        raise FetchError(f"ADD {url}: timed out (connect {connect_timeout:g} s, read {read_timeout:g} s)") from None
    except aiohttp.InvalidURL as e:
        _unlink(dest)
        raise FetchError(f"ADD {url}: invalid URL: {e}") from None
    except (aiohttp.ClientError, OSError) as e:
        _unlink(dest)
        raise FetchError(f"ADD {url}: cannot download: {e}") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def refuse_git(source: str) -> None:
    if is_git(source):
        raise NotImplementedYet(f"ADD {source}: git sources are not supported by this builder")
