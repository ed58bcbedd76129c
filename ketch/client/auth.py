"""Registry credentials on the client side, as the docker CLI keeps and sends them.

The daemon keeps no credentials of its users: ``ketch login`` asks the daemon to check them
(``POST /auth``) and then stores them here, in ``$DOCKER_CONFIG/config.json`` (default
``~/.docker/config.json``; ``auths`` maps ``host[:port]``, or ``https://index.docker.io/v1/``
for Docker Hub, to ``{"auth": base64("user:password")}`` or ``{"identitytoken": ...}``);
``pull`` and ``push`` read them back and send them in ``X-Registry-Auth``. The same file and
layout as the docker CLI, so either one's login serves both. Credential helpers (credsStore,
credHelpers) are not run. Standard library only (the CLI's start-up).
"""

import base64
import os

from ketch import _json as json
from ketch import errors

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def config_path() -> str:
    d = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(d, "config.json")


def domain_of(server: str) -> str:
    """A registry address ("https://index.docker.io/v1/", "host:port", "http://host/path") -> its domain."""
    s = (server or "").strip()
    for pre in ("https://", "http://"):
        if s.startswith(pre):
            s = s[len(pre):]
    s = s.split("/", 1)[0]
    return "docker.io" if s in ("", "index.docker.io", "registry-1.docker.io") else s


def image_domain(name: str) -> str:
    """The registry domain of an image reference (docker's rule: a first component with '.', ':'
    or 'localhost' is a registry, else Docker Hub)."""
    first, sep, _ = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return domain_of(first)
    return "docker.io"


def _key(domain: str) -> str:
    return DOCKER_HUB_KEY if domain == "docker.io" else domain


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise errors.PermissionDenied(f"read docker config {path}: permission denied") from None
    try:
        doc = json.loads(raw or b"{}")
    except ValueError as e:
        raise errors.InvalidArgument(f"read docker config {path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument(f"read docker config {path}: not a JSON object")
    return doc


def _write(path: str, doc: dict) -> None:
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent="\t") + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _entries(auths: dict, domain: str) -> list[str]:
    return [k for k in auths if domain_of(k) == domain]


def load(domain: str, path: str | None = None) -> dict | None:
    """The stored auth config for ``domain`` ({"username", "password", "serveraddress"} or
    {"identitytoken", "serveraddress"}), or None."""
    path = path or config_path()
    auths = _read(path).get("auths")
    if not isinstance(auths, dict):
        return None
    for key in _entries(auths, domain):
        entry = auths[key]
        if not isinstance(entry, dict):
            continue
        out = {"serveraddress": domain}
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, pw = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise errors.InvalidArgument(f"read docker config {path}: bad auth value for {key!r}") from None
            if not sep:
                raise errors.InvalidArgument(f"read docker config {path}: auth for {key!r} is not user:password")
            out.update(username=user, password=pw)
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            out["identitytoken"] = entry["identitytoken"]
        if len(out) > 1:
            return out
    return None


def save(domain: str, username: str, password: str = "", identity_token: str = "", path: str | None = None) -> str:
    """Store credentials for ``domain`` (other entries and keys of the file kept); return the file's path.
    With an identity token the password is not stored (as the docker CLI does)."""
    path = path or config_path()
    doc = _read(path)
    found = doc.get("auths")
    auths: dict = found if isinstance(found, dict) else {}
    for k in _entries(auths, domain):
        del auths[k]
    entry = {"auth": base64.b64encode(f"{username}:{'' if identity_token else password}".encode()).decode()}
    if identity_token:
        entry["identitytoken"] = identity_token
    auths[_key(domain)] = entry
    doc["auths"] = auths
    _write(path, doc)
    return path


def remove(domain: str, path: str | None = None) -> bool:
    """Forget the credentials of ``domain``; True if there were some."""
    path = path or config_path()
    doc = _read(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return False
    keys = _entries(auths, domain)
    if not keys:
        return False
    for k in keys:
        del auths[k]
    _write(path, doc)
    return True


def header(auth: dict | None) -> str | None:
    """The X-Registry-Auth value of an auth config (base64url JSON), or None."""
    if not auth:
        return None
    return base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()


def header_for(image: str, path: str | None = None) -> str | None:
    """X-Registry-Auth for pulling or pushing ``image`` with the stored credentials, or None."""
    return header(load(image_domain(image), path))
