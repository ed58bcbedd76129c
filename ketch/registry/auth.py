"""Registry credentials and challenges.

- `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`): `auths` maps a registry
  key to `{"auth": base64("user:password")}`. Docker Hub's key is
  `https://index.docker.io/v1/`; other keys are `host[:port]`, possibly written with a
  scheme or path by older clients, so lookups compare the bare host. Credential
  helpers (`credsStore`, `credHelpers`) are not run.
- `WWW-Authenticate` challenges (RFC 7235): `Bearer realm="...",service="...",scope="..."`
  or `Basic realm="..."`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from dataclasses import dataclass

from ketch.errors import InvalidArgument

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str          # lower case: "bearer" or "basic"
    params: dict         # lower-case keys


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))\s*(?:,|$)')
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into challenges (several may share one header)."""
    out: list[Challenge] = []
    pos = 0
    n = len(header)
    while pos < n:
        while pos < n and header[pos] in " ,":
            pos += 1
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict = {}
        while pos < n:
            pm = _PARAM_RE.match(header, pos)
            if not pm:
                break
            val = pm.group(2)
            if val is not None:
                val = re.sub(r"\\(.)", r"\1", val)
            else:
                val = pm.group(3)
            params[pm.group(1).lower()] = val
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


def config_path() -> str:
    """The Docker client config file: $DOCKER_CONFIG/config.json or ~/.docker/config.json."""
    d = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(d, "config.json")


def auth_key(domain: str) -> str:
    """The `auths` key Docker writes for a registry domain."""
    if domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return DOCKER_HUB_AUTH_KEY
    return domain


def _bare(key: str) -> str:
    k = key
    for prefix in ("https://", "http://"):
        if k.startswith(prefix):
            k = k[len(prefix):]
    return k.split("/", 1)[0]


def _read_config(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"read docker config {path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"read docker config {path}: not a JSON object")
    return doc


def load_credentials(domain: str, path: str | None = None) -> Credentials | None:
    """Credentials stored for `domain`, or None."""
    path = path or config_path()
    auths = _read_config(path).get("auths")
    if not isinstance(auths, dict):
        return None
    want = _bare(auth_key(domain))
    for key, entry in auths.items():
        if _bare(key) != want or not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, pw = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(f"read docker config {path}: bad auth value for {key!r}") from None
            if not sep:
                raise InvalidArgument(f"read docker config {path}: auth for {key!r} is not user:password")
            return Credentials(user, pw)
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"])
    return None


def _write_config(path: str, doc: dict) -> None:
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_credentials(domain: str, creds: Credentials, path: str | None = None) -> str:
    """Store credentials for `domain` (other keys of the file are kept); return the file path."""
    path = path or config_path()
    doc = _read_config(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    want = _bare(auth_key(domain))
    for key in [k for k in auths if _bare(k) == want]:
        del auths[key]
    auths[auth_key(domain)] = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    doc["auths"] = auths
    _write_config(path, doc)
    return path


def remove_credentials(domain: str, path: str | None = None) -> bool:
    """Forget credentials for `domain`; True if some were stored."""
    path = path or config_path()
    doc = _read_config(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return False
    want = _bare(auth_key(domain))
    keys = [k for k in auths if _bare(k) == want]
    if not keys:
        return False
    for k in keys:
        del auths[k]
    _write_config(path, doc)
    return True
