"""The ketchd client: one method per Docker Engine API endpoint, over the Unix socket.

Standard library only, and little of it: HTTP/1.1 is ``ketch.client.unixhttp`` on ``_socket``
(``http.client`` alone took ~10 ms to import); the ``ketch`` CLI starts with ``python3 -I -S``
and every command pays for what it imports.

    from ketch.client import Client
    c = Client()                      # --host / $KETCH_HOST / unix:///run/ketch/ketch.sock
    cid = c.container_create({"Image": "busybox", "Cmd": ["true"]}, name="x")["Id"]
    c.container_start(cid)
    c.container_wait(cid)             # {"StatusCode": 0, "Error": None}

Errors are ``ketch.errors`` kinds chosen by the HTTP status (404 NotFound, 409 Conflict,
400 InvalidArgument, ...), carrying the daemon's message and ``.status``; a daemon that is
not there raises ``DaemonNotRunning`` (an ``Unavailable``), one this user may not open
``DaemonPermissionDenied`` (a ``PermissionDenied``). Streams (logs, events, stats,
pull progress) are iterators; attach and exec start hijack the connection and return a
``Hijacked`` duplex socket (``ketch.client.streams``).
"""

import os

from ketch import _json as json
from ketch import errors
from ketch.client.unixhttp import (  # noqa: F401
    ConnectionLost,
    Response,
    connect,
    quote,
    send_request,
    urlencode,
)

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"
API_VERSION = "1.43"


class DaemonNotRunning(errors.Unavailable):
    pass


class DaemonPermissionDenied(errors.PermissionDenied):
    """The socket is there but this user may not connect to it (not root, not in its group)."""


_KINDS = {400: errors.InvalidArgument, 403: errors.PermissionDenied, 404: errors.NotFound,
          409: errors.Conflict, 501: errors.NotImplementedYet, 503: errors.Unavailable}


def api_error(status: int, body: bytes):
    try:
        msg = json.loads(body).get("message") or ""
    except (ValueError, AttributeError):
        msg = body.decode("utf-8", "replace").strip()
    e = _KINDS.get(status, errors.Internal)(msg or f"daemon answered {status}")
    e.status = status
    return e


def resolve_host(host: str | None = None) -> str:
    return host or os.environ.get("KETCH_HOST") or DEFAULT_HOST


def socket_path(host: str) -> str:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise errors.InvalidArgument(f"host {host}: only unix:// sockets are supported (no TCP without TLS)")


def _qs(params) -> str:
    """A dict (None values left out; bools 1/0; dicts and lists as JSON) or pairs -> "?query"."""
    if not params:
        return ""
    items = []
    for k, v in (params.items() if isinstance(params, dict) else params):
        if v is None:
            continue
        if isinstance(v, bool):
            v = "1" if v else "0"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v)
        items.append((k, v))
    return "?" + urlencode(items) if items else ""


def _filters(f) -> str | None:
    """{"status": ["running"]} or [("status", "running"), ...] -> Docker's filters JSON."""
    if not f:
        return None
    if isinstance(f, dict):
        return json.dumps({k: (v if isinstance(v, list) else [v]) for k, v in f.items()})
    out: dict = {}
    for k, v in f:
        out.setdefault(k, []).append(v)
    return json.dumps(out)


class Client:
    def __init__(self, host: str | None = None, timeout: float | None = None):
        self.host = resolve_host(host)
        self.path = socket_path(self.host)
        self.timeout = timeout

    # --- plumbing --------------------------------------------------------------------
    def _unavailable(self, e: OSError):
        return DaemonNotRunning(f"Cannot connect to the Ketch daemon at unix://{self.path}. Is ketchd running?")

    def _url(self, path: str, params=None) -> str:
        return f"/v{API_VERSION}{path}{_qs(params)}"

    def _send(self, method, path, params=None, body=None, raw=None, headers=None, timeout=None,
              extra=None) -> Response:
        """Connect, send a request and read the answer's head (one connection per request)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"User-Agent": "ketch-cli"}
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(extra or {"Connection": "close"})
        h.update(headers or {})
        try:
            s = connect(self.path, timeout)
        except PermissionError:
            raise DaemonPermissionDenied(f"permission denied while trying to connect to the Ketch daemon "
                                         f"socket at unix://{self.path} (run as root or as a member of "
                                         f"the socket's group)") from None
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise self._unavailable(e) from None
        try:
            try:
                send_request(s, method, self._url(path, params), h, data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon may have answered (an error) before reading the whole body
            return Response(s, method)
        except BaseException:
            s.close()
            raise

    def request(self, method, path, params=None, body=None, raw=None, headers=None, ok=(200, 201, 204, 304)):
        """A whole request/response; returns (status, body bytes)."""
        with self._send(method, path, params, body, raw, headers, self.timeout) as r:
            content = r.read()
        if r.status not in ok:
            raise api_error(r.status, content)
        return r.status, content

    def json(self, method, path, params=None, body=None, **kw):
        status, content = self.request(method, path, params, body, **kw)
        return json.loads(content) if content.strip() else None

    def stream(self, method, path, params=None, body=None, raw=None, headers=None) -> Response:
        """Open a streaming response on its own connection (no timeout); the caller closes it."""
        r = self._send(method, path, params, body, raw, headers)
        if r.status >= 300:
            with r:
                content = r.read()
            raise api_error(r.status, content)
        return r

    def json_stream(self, method, path, params=None, body=None, raw=None, headers=None, output=None):
        """Iterate the JSON objects of a streaming answer (one per line). ``output``: a writable for
        the raw bytes that follow a message `{"aux": {"Output": ...}}` to the end (a build's --output)."""
        r = self.stream(method, path, params, body, raw, headers)
        try:
            buf = b""
            while True:
                chunk = r.read1(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        msg = json.loads(line)
                        yield msg
                        if output is not None and isinstance(msg.get("aux"), dict) and "Output" in msg["aux"]:
                            output.write(buf)
                            while chunk := r.read1(1 << 20):
                                output.write(chunk)
                            return
            if buf.strip():
                yield json.loads(buf)
        finally:
            r.close()

    def hijack(self, path, params=None, body=None):
        """POST with ``Upgrade: tcp``; return a streams.Hijacked over the raw connection."""
        from ketch.client.streams import Hijacked
        r = self._send("POST", path, params, body, b"" if body is None else None,
                       {"Content-Type": "application/json"}, extra={"Connection": "Upgrade", "Upgrade": "tcp"})
        if r.status not in (101, 200):
            with r:
                content = r.read()
            raise api_error(r.status, content)
        multiplexed = "multiplexed" in r.getheader("content-type", "")
        return Hijacked(r.sock, r.take_buffered(), multiplexed)

    def close(self):
        """Nothing to do: each request has its own connection, closed with its answer."""

    # --- system ----------------------------------------------------------------------
    def ping(self) -> str:
        return self.request("GET", "/_ping")[1].decode()

    def version(self) -> dict:
        return self.json("GET", "/version")

    def info(self) -> dict:
        return self.json("GET", "/info")

    def df(self) -> dict:
        return self.json("GET", "/system/df")

    def events(self, since=None, until=None, filters=None):
        return self.json_stream("GET", "/events", {"since": since, "until": until, "filters": _filters(filters)})

    # --- containers ------------------------------------------------------------------
    def container_create(self, config: dict, name: str | None = None, platform: str | None = None) -> dict:
        return self.json("POST", "/containers/create", {"name": name, "platform": platform}, config)

    def container_list(self, all=False, limit=None, size=False, filters=None) -> list:
        return self.json("GET", "/containers/json", {"all": all or None, "limit": limit, "size": size or None,
                                                      "filters": _filters(filters)})

    def container_inspect(self, ref: str, size=False) -> dict:
        return self.json("GET", f"/containers/{quote(ref)}/json", {"size": size or None})

    def container_start(self, ref: str, detach_keys: str | None = None) -> bool:
        """True if it was started, False if it was already running (304)."""
        return self.request("POST", f"/containers/{quote(ref)}/start",
                            {"detachKeys": detach_keys})[0] == 204

    def container_stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> bool:
        return self.request("POST", f"/containers/{quote(ref)}/stop", {"t": timeout, "signal": signal})[0] == 204

    def container_restart(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        self.request("POST", f"/containers/{quote(ref)}/restart", {"t": timeout, "signal": signal})

    def container_kill(self, ref: str, signal: str | None = None) -> None:
        self.request("POST", f"/containers/{quote(ref)}/kill", {"signal": signal})

    def container_wait_start(self, ref: str, condition: str = "not-running"):
        """Register a waiter (the head arrives once the daemon holds it); .result() gives the answer."""
        r = self.stream("POST", f"/containers/{quote(ref)}/wait", {"condition": condition})
        return _Waiter(r)

    def container_wait(self, ref: str, condition: str = "not-running") -> dict:
        return self.container_wait_start(ref, condition).result()

    def container_remove(self, ref: str, force=False, volumes=False) -> None:
        self.request("DELETE", f"/containers/{quote(ref)}", {"force": force or None, "v": volumes or None})

    def container_logs(self, ref: str, stdout=True, stderr=True, follow=False, timestamps=False, tail=None,
                       since=None, until=None, details=False):
        """The Response of the log stream (raw for a tty container, else stdcopy frames)."""
        return self.stream("GET", f"/containers/{quote(ref)}/logs",
                           {"stdout": stdout, "stderr": stderr, "follow": follow or None,
                            "timestamps": timestamps or None, "tail": tail, "since": since, "until": until,
                            "details": details or None})

    def container_attach(self, ref: str, stdin=False, stdout=True, stderr=True, stream=True, logs=False,
                         detach_keys: str | None = None):
        return self.hijack(f"/containers/{quote(ref)}/attach",
                           {"stdin": stdin, "stdout": stdout, "stderr": stderr, "stream": stream,
                            "logs": logs or None, "detachKeys": detach_keys})

    def container_resize(self, ref: str, height: int, width: int) -> None:
        self.request("POST", f"/containers/{quote(ref)}/resize", {"h": height, "w": width})

    def container_top(self, ref: str, ps_args: str | None = None) -> dict:
        return self.json("GET", f"/containers/{quote(ref)}/top", {"ps_args": ps_args})

    def container_stats(self, ref: str, stream=True, one_shot=False):
        if not stream:
            return self.json("GET", f"/containers/{quote(ref)}/stats",
                             {"stream": False, "one-shot": one_shot or None})
        return self.json_stream("GET", f"/containers/{quote(ref)}/stats", {"stream": True})

    def container_pause(self, ref: str) -> None:
        self.request("POST", f"/containers/{quote(ref)}/pause")

    def container_unpause(self, ref: str) -> None:
        self.request("POST", f"/containers/{quote(ref)}/unpause")

    def container_rename(self, ref: str, name: str) -> None:
        self.request("POST", f"/containers/{quote(ref)}/rename", {"name": name})

    def container_update(self, ref: str, body: dict) -> dict:
        return self.json("POST", f"/containers/{quote(ref)}/update", None, body)

    def container_prune(self, filters=None) -> dict:
        return self.json("POST", "/containers/prune", {"filters": _filters(filters)})

    def archive_stat(self, ref: str, path: str) -> dict:
        import base64
        with self._send("HEAD", f"/containers/{quote(ref)}/archive", {"path": path}, timeout=self.timeout) as r:
            r.read()
        if r.status != 200:
            raise api_error(r.status, b"") if r.status != 404 else errors.NotFound(
                f"Could not find the file {path} in container {ref}")
        return json.loads(base64.b64decode(r.getheader("X-Docker-Container-Path-Stat") or "e30="))

    def archive_get(self, ref: str, path: str):
        """(stat dict, Response streaming the tar)."""
        import base64
        r = self.stream("GET", f"/containers/{quote(ref)}/archive", {"path": path})
        st = json.loads(base64.b64decode(r.getheader("X-Docker-Container-Path-Stat") or "e30="))
        return st, r

    def archive_put(self, ref: str, path: str, data, no_overwrite_dir_non_dir=False) -> None:
        """``data``: bytes or a binary file object (sent in chunks)."""
        self.request("PUT", f"/containers/{quote(ref)}/archive",
                     {"path": path, "noOverwriteDirNonDir": no_overwrite_dir_non_dir or None}, raw=data,
                     headers={"Content-Type": "application/x-tar"})

    # --- copy-on-write: diff, commit, export -------------------------------------------
    def container_changes(self, ref: str) -> list:
        return self.json("GET", f"/containers/{quote(ref)}/changes") or []

    def container_commit(self, ref: str, repo: str | None = None, tag: str | None = None, comment: str | None = None,
                         author: str | None = None, pause: bool = True, changes=(), config: dict | None = None) -> dict:
        """POST /commit: {"Id": image ID}; ``changes`` are Dockerfile instructions, one per item."""
        params = [("container", ref), ("repo", repo), ("tag", tag), ("comment", comment), ("author", author),
                  ("pause", bool(pause))] + [("changes", c) for c in changes]
        return self.json("POST", "/commit", params, config)

    def container_export(self, ref: str):
        """The Response streaming the container's flattened root file system as a tar."""
        return self.stream("GET", f"/containers/{quote(ref)}/export")

    # --- exec ------------------------------------------------------------------------
    def exec_create(self, ref: str, config: dict) -> dict:
        return self.json("POST", f"/containers/{quote(ref)}/exec", None, config)

    def exec_start(self, eid: str, detach=False, tty=False, console_size=None):
        body = {"Detach": detach, "Tty": tty}
        if console_size:
            body["ConsoleSize"] = list(console_size)
        if detach:
            self.request("POST", f"/exec/{eid}/start", None, body)
            return None
        return self.hijack(f"/exec/{eid}/start", None, body)

    def exec_resize(self, eid: str, height: int, width: int) -> None:
        self.request("POST", f"/exec/{eid}/resize", {"h": height, "w": width})

    def exec_inspect(self, eid: str) -> dict:
        return self.json("GET", f"/exec/{eid}/json")

    # --- images ----------------------------------------------------------------------
    def image_list(self, all=False, filters=None) -> list:
        return self.json("GET", "/images/json", {"all": all or None, "filters": _filters(filters)})

    def image_inspect(self, name: str) -> dict:
        return self.json("GET", f"/images/{name}/json")

    def image_history(self, name: str) -> list:
        return self.json("GET", f"/images/{name}/history")

    def image_tag(self, name: str, repo: str, tag: str | None = None) -> None:
        self.request("POST", f"/images/{name}/tag", {"repo": repo, "tag": tag})

    def image_remove(self, name: str, force=False, noprune=False) -> list:
        return self.json("DELETE", f"/images/{name}", {"force": force or None, "noprune": noprune or None})

    def image_pull(self, image: str, tag: str | None = None, platform: str | None = None, auth: str | None = None):
        """Iterate the pull's progress messages (an ``error`` message last on failure). No ``tag``
        and a name without one pulls every tag of the repository (dockerd's rule). ``auth``: an
        X-Registry-Auth value (``ketch.client.auth.header``)."""
        return self.json_stream("POST", "/images/create", {"fromImage": image, "tag": tag, "platform": platform},
                                headers={"X-Registry-Auth": auth} if auth else None)

    def image_push(self, name: str, tag: str | None = None, auth: str | None = None):
        return self.json_stream("POST", f"/images/{name}/push", {"tag": tag},
                                headers={"X-Registry-Auth": auth or "e30="})

    def image_save(self, names: list, format: str | None = None):
        """The Response streaming a tar of ``names``: docker-archive, or with ``format="oci-archive"``
        an OCI layout (a Ketch extension of GET /images/get; dockerd ignores it)."""
        params = [("names", n) for n in names]
        if format and format != "docker-archive":
            params.append(("format", format))
        return self.stream("GET", "/images/get", params)

    def image_load(self, data, quiet=False):
        """Iterate the load's messages; ``data``: bytes, a binary file or an iterable of bytes."""
        return self.json_stream("POST", "/images/load", {"quiet": quiet or None}, raw=data,
                                headers={"Content-Type": "application/x-tar"})

    def image_build(self, data, params, output=None):
        """Iterate POST /build's messages; ``data``: the context (a tar or a Dockerfile), bytes or a file.
        ``output`` (with an `outputs` param, `--output type=local|tar`): a writable that receives the
        final root's tar, which follows the message `{"aux": {"Output": ...}}` to the end of the answer."""
        return self.json_stream("POST", "/build", params, raw=data, headers={"Content-Type": "application/x-tar"},
                                output=output)

    def build_prune(self, all_: bool = False, filters=None, keep_storage: int = 0) -> dict:
        """POST /build/prune: {"CachesDeleted": [...], "SpaceReclaimed": bytes}; filters: until, id, type."""
        return self.json("POST", "/build/prune", {"all": "1" if all_ else None, "filters": _filters(filters),
                                                  "keep-storage": keep_storage or None})

    def image_import(self, data, repo: str | None = None, tag: str | None = None, message: str | None = None,
                     changes=(), platform: str | None = None):
        """POST /images/create?fromSrc=-: iterate the import's messages; the last is {"status": <image ID>}."""
        params = [("fromSrc", "-"), ("repo", repo), ("tag", tag), ("message", message or None),
                  ("platform", platform)] + [("changes", c) for c in changes]
        return self.json_stream("POST", "/images/create", params, raw=data,
                                headers={"Content-Type": "application/x-tar"})

    def image_prune(self, filters=None) -> dict:
        """{"ImagesDeleted": [{"Untagged"|"Deleted": ...}], "SpaceReclaimed": bytes}; filters: dangling
        (["false"]: every unused image), until, label, label!."""
        return self.json("POST", "/images/prune", {"filters": _filters(filters)})

    def image_search(self, term: str, limit: int | None = None) -> list:
        return self.json("GET", "/images/search", {"term": term, "limit": limit})

    def auth(self, username: str, password: str, serveraddress: str = "") -> dict:
        """POST /auth: the daemon checks the credentials against the registry;
        {"Status": "Login Succeeded", "IdentityToken": ...}. Nothing is stored (see ketch.client.auth)."""
        return self.json("POST", "/auth", None, {"username": username, "password": password,
                                                 "serveraddress": serveraddress})

    # --- volumes -----------------------------------------------------------------------
    def volume_list(self, filters=None) -> dict:
        """GET /volumes: {"Volumes": [...], "Warnings": ...}; filters: dangling, driver, label, name."""
        return self.json("GET", "/volumes", {"filters": _filters(filters)})

    def volume_create(self, body: dict) -> dict:
        """POST /volumes/create with Docker's VolumeCreateBody (Name, Driver, DriverOpts, Labels)."""
        return self.json("POST", "/volumes/create", None, body)

    def volume_inspect(self, name: str) -> dict:
        return self.json("GET", f"/volumes/{quote(name)}")

    def volume_remove(self, name: str, force=False) -> None:
        self.request("DELETE", f"/volumes/{quote(name)}", {"force": force or None})

    def volume_prune(self, filters=None) -> dict:
        """POST /volumes/prune: {"VolumesDeleted", "SpaceReclaimed"}; filters: label, label!, all."""
        return self.json("POST", "/volumes/prune", {"filters": _filters(filters)})

    # --- networks ----------------------------------------------------------------------
    def network_list(self, filters=None) -> list:
        """GET /networks: network summaries; filters: dangling, driver, id, label, name, scope, type."""
        return self.json("GET", "/networks", {"filters": _filters(filters)})

    def network_inspect(self, ref: str, verbose=False, scope: str | None = None) -> dict:
        return self.json("GET", f"/networks/{quote(ref)}", {"verbose": verbose or None, "scope": scope})

    def network_create(self, body: dict) -> dict:
        """POST /networks/create with Docker's NetworkCreateRequest (Name, Driver, IPAM, EnableIPv6,
        Internal, Attachable, Labels, Options...); {"Id": ..., "Warning": ...}."""
        return self.json("POST", "/networks/create", None, body)

    def network_connect(self, ref: str, container: str, endpoint_config: dict | None = None) -> None:
        body: dict = {"Container": container}
        if endpoint_config:
            body["EndpointConfig"] = endpoint_config
        self.request("POST", f"/networks/{quote(ref)}/connect", None, body)

    def network_disconnect(self, ref: str, container: str, force=False) -> None:
        self.request("POST", f"/networks/{quote(ref)}/disconnect", None, {"Container": container, "Force": force})

    def network_remove(self, ref: str) -> None:
        self.request("DELETE", f"/networks/{quote(ref)}")

    def network_prune(self, filters=None) -> dict:
        """{"NetworksDeleted": [names]}; filters: until, label, label!."""
        return self.json("POST", "/networks/prune", {"filters": _filters(filters)})

    def system_check(self, repair=False) -> dict:
        """Ketch's own POST /ketch/system/check: {"Problems": [{"area", "what", "problem"}], "Blobs",
        "Snapshots", "Images", "Ingests", "Repaired"}."""
        return self.json("POST", "/ketch/system/check", {"repair": repair or None})


class _Waiter:
    def __init__(self, resp):
        self.resp = resp

    def result(self) -> dict:
        try:
            body = self.resp.read()
        finally:
            self.resp.close()
        try:
            return json.loads(body)
        except ValueError:
            raise errors.Internal("wait: the daemon's answer is not JSON") from None

    def close(self):
        self.resp.close()
