"""The ketchd client: one method per Docker Engine API endpoint, over the Unix socket.

Standard library only (``http.client``, ``socket``): the ``ketch`` CLI starts with
``python3 -I -S`` and every command pays for what it imports.

    from ketch.client import Client
    c = Client()                      # --host / $KETCH_HOST / unix:///run/ketch/ketch.sock
    cid = c.container_create({"Image": "busybox", "Cmd": ["true"]}, name="x")["Id"]
    c.container_start(cid)
    c.container_wait(cid)             # {"StatusCode": 0, "Error": None}

Errors are ``ketch.errors`` kinds chosen by the HTTP status (404 NotFound, 409 Conflict,
400 InvalidArgument, ...), carrying the daemon's message and ``.status``; a daemon that is
not there raises ``DaemonNotRunning`` (an ``Unavailable``). Streams (logs, events, stats,
pull progress) are iterators; attach and exec start hijack the connection and return a
``Hijacked`` duplex socket (``ketch.client.streams``).
"""

import json
import os
import socket
import sys
from urllib.parse import quote, urlencode

if "ssl" not in sys.modules:  # http.client's optional TLS: not used on a Unix socket, ~5 ms to import
    sys.modules["ssl"] = None
    try:
        import http.client
    finally:
        del sys.modules["ssl"]
else:
    import http.client

from ketch import errors

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"
API_VERSION = "1.43"


class DaemonNotRunning(errors.Unavailable):
    pass


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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout=None):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def _qs(params: dict | None) -> str:
    if not params:
        return ""
    items = []
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "1" if v else "0"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v)
        items.append((k, str(v)))
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
        self._conn: _UnixConnection | None = None

    # --- plumbing --------------------------------------------------------------------
    def _unavailable(self, e: OSError):
        return DaemonNotRunning(f"Cannot connect to the Ketch daemon at unix://{self.path}. Is ketchd running?")

    def _url(self, path: str, params=None) -> str:
        return f"/v{API_VERSION}{path}{_qs(params)}"

    def _send(self, method, path, params=None, body=None, raw=None, headers=None, conn=None):
        """Send a request; return (connection, response) with the head read."""
        own = conn is not None
        c = conn or self._conn or _UnixConnection(self.path, self.timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"User-Agent": "ketch-cli"}
        if body is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        url = self._url(path, params)
        for attempt in (0, 1):
            try:
                c.request(method, url, body=data, headers=h)
                return c, c.getresponse()
            except (FileNotFoundError, ConnectionRefusedError, PermissionError) as e:
                if isinstance(e, PermissionError):
                    raise errors.PermissionDenied(f"permission denied while trying to connect to the Ketch daemon "
                                                  f"socket at unix://{self.path}") from None
                raise self._unavailable(e) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # a kept-alive connection the daemon closed: retry once on a fresh one
                c.close()
                if attempt or own or not hasattr(data, "__len__") and data is not None:
                    raise
                c = _UnixConnection(self.path, self.timeout)
        raise AssertionError("unreachable")

    def request(self, method, path, params=None, body=None, raw=None, headers=None, ok=(200, 201, 204, 304)):
        """A whole request/response on the kept-alive connection; returns (status, body bytes)."""
        c, r = self._send(method, path, params, body, raw, headers)
        content = r.read()
        if r.will_close:
            c.close()
            self._conn = None
        else:
            self._conn = c
        if r.status not in ok:
            raise api_error(r.status, content)
        return r.status, content

    def json(self, method, path, params=None, body=None, **kw):
        status, content = self.request(method, path, params, body, **kw)
        return json.loads(content) if content.strip() else None

    def stream(self, method, path, params=None, body=None, raw=None, headers=None):
        """Open a streaming response on its own connection; returns the HTTPResponse."""
        c = _UnixConnection(self.path, None)
        c, r = self._send(method, path, params, body, raw, headers, conn=c)
        if r.status >= 300:
            content = r.read()
            c.close()
            raise api_error(r.status, content)
        r._ketch_conn = c
        return r

    def json_stream(self, method, path, params=None, body=None, raw=None, headers=None):
        """Iterate the JSON objects of a streaming answer (one per line)."""
        r = self.stream(method, path, params, body, raw, headers)
        try:
            buf = b""
            while True:
                chunk = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        finally:
            r.close()
            r._ketch_conn.close()

    def hijack(self, path, params=None, body=None):
        """POST with ``Upgrade: tcp``; return a streams.Hijacked over the raw connection."""
        from ketch.client.streams import Hijacked
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            s.close()
            raise self._unavailable(e) from None
        data = json.dumps(body).encode() if body is not None else b""
        head = (f"POST {self._url(path, params)} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ketch-cli\r\n"
                f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        s.sendall(head + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                s.close()
                raise errors.Internal("attach: the daemon closed the connection before answering")
            buf += chunk
        head_b, rest = buf.split(b"\r\n\r\n", 1)
        lines = head_b.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status not in (101, 200):
            n = int(hdrs.get("content-length", "0") or 0)
            while len(rest) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            s.close()
            raise api_error(status, rest)
        multiplexed = "multiplexed" in hdrs.get("content-type", "")
        return Hijacked(s, rest, multiplexed)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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
        return self.json("GET", f"/containers/{quote(ref, safe='')}/json", {"size": size or None})

    def container_start(self, ref: str, detach_keys: str | None = None) -> bool:
        """True if it was started, False if it was already running (304)."""
        return self.request("POST", f"/containers/{quote(ref, safe='')}/start",
                            {"detachKeys": detach_keys})[0] == 204

    def container_stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> bool:
        return self.request("POST", f"/containers/{quote(ref, safe='')}/stop", {"t": timeout, "signal": signal})[0] == 204

    def container_restart(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        self.request("POST", f"/containers/{quote(ref, safe='')}/restart", {"t": timeout, "signal": signal})

    def container_kill(self, ref: str, signal: str | None = None) -> None:
        self.request("POST", f"/containers/{quote(ref, safe='')}/kill", {"signal": signal})

    def container_wait_start(self, ref: str, condition: str = "not-running"):
        """Register a waiter (the head arrives once the daemon holds it); .result() gives the answer."""
        r = self.stream("POST", f"/containers/{quote(ref, safe='')}/wait", {"condition": condition})
        return _Waiter(r)

    def container_wait(self, ref: str, condition: str = "not-running") -> dict:
        return self.container_wait_start(ref, condition).result()

    def container_remove(self, ref: str, force=False, volumes=False) -> None:
        self.request("DELETE", f"/containers/{quote(ref, safe='')}", {"force": force or None, "v": volumes or None})

    def container_logs(self, ref: str, stdout=True, stderr=True, follow=False, timestamps=False, tail=None,
                       since=None, until=None):
        """The HTTPResponse of the log stream (raw for a tty container, else stdcopy frames)."""
        return self.stream("GET", f"/containers/{quote(ref, safe='')}/logs",
                           {"stdout": stdout, "stderr": stderr, "follow": follow or None,
                            "timestamps": timestamps or None, "tail": tail, "since": since, "until": until})

    def container_attach(self, ref: str, stdin=False, stdout=True, stderr=True, stream=True, logs=False,
                         detach_keys: str | None = None):
        return self.hijack(f"/containers/{quote(ref, safe='')}/attach",
                           {"stdin": stdin, "stdout": stdout, "stderr": stderr, "stream": stream,
                            "logs": logs or None, "detachKeys": detach_keys})

    def container_resize(self, ref: str, height: int, width: int) -> None:
        self.request("POST", f"/containers/{quote(ref, safe='')}/resize", {"h": height, "w": width})

    def container_top(self, ref: str, ps_args: str | None = None) -> dict:
        return self.json("GET", f"/containers/{quote(ref, safe='')}/top", {"ps_args": ps_args})

    def container_stats(self, ref: str, stream=True, one_shot=False):
        if not stream:
            return self.json("GET", f"/containers/{quote(ref, safe='')}/stats",
                             {"stream": False, "one-shot": one_shot or None})
        return self.json_stream("GET", f"/containers/{quote(ref, safe='')}/stats", {"stream": True})

    def container_pause(self, ref: str) -> None:
        self.request("POST", f"/containers/{quote(ref, safe='')}/pause")

    def container_unpause(self, ref: str) -> None:
        self.request("POST", f"/containers/{quote(ref, safe='')}/unpause")

    def container_rename(self, ref: str, name: str) -> None:
        self.request("POST", f"/containers/{quote(ref, safe='')}/rename", {"name": name})

    def container_update(self, ref: str, body: dict) -> dict:
        return self.json("POST", f"/containers/{quote(ref, safe='')}/update", None, body)

    def container_prune(self, filters=None) -> dict:
        return self.json("POST", "/containers/prune", {"filters": _filters(filters)})

    def archive_stat(self, ref: str, path: str) -> dict:
        import base64
        c, r = self._send("HEAD", f"/containers/{quote(ref, safe='')}/archive", {"path": path},
                          conn=_UnixConnection(self.path, self.timeout))
        r.read()
        c.close()
        if r.status != 200:
            raise api_error(r.status, b"") if r.status != 404 else errors.NotFound(
                f"Could not find the file {path} in container {ref}")
        return json.loads(base64.b64decode(r.getheader("X-Docker-Container-Path-Stat") or "e30="))

    def archive_get(self, ref: str, path: str):
        """(stat dict, HTTPResponse streaming the tar)."""
        import base64
        r = self.stream("GET", f"/containers/{quote(ref, safe='')}/archive", {"path": path})
        st = json.loads(base64.b64decode(r.getheader("X-Docker-Container-Path-Stat") or "e30="))
        return st, r

    def archive_put(self, ref: str, path: str, data, no_overwrite_dir_non_dir=False) -> None:
        """``data``: bytes or a binary file object (sent in chunks)."""
        self.request("PUT", f"/containers/{quote(ref, safe='')}/archive",
                     {"path": path, "noOverwriteDirNonDir": no_overwrite_dir_non_dir or None}, raw=data,
                     headers={"Content-Type": "application/x-tar"})

    # --- exec ------------------------------------------------------------------------
    def exec_create(self, ref: str, config: dict) -> dict:
        return self.json("POST", f"/containers/{quote(ref, safe='')}/exec", None, config)

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
        """Iterate the pull's progress messages (an ``error`` message last on failure)."""
        return self.json_stream("POST", "/images/create", {"fromImage": image, "tag": tag, "platform": platform},
                                headers={"X-Registry-Auth": auth} if auth else None)

    def image_push(self, name: str, tag: str | None = None, auth: str | None = None):
        return self.json_stream("POST", f"/images/{name}/push", {"tag": tag},
                                headers={"X-Registry-Auth": auth or "e30="})

    def image_save(self, names: list):
        """The HTTPResponse streaming a docker-archive tar of ``names``."""
        return self._save(names)

    def _save(self, names):
        c = _UnixConnection(self.path, None)
        url = f"/v{API_VERSION}/images/get?" + urlencode([("names", n) for n in names])
        try:
            c.request("GET", url)
            r = c.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise self._unavailable(e) from None
        if r.status != 200:
            raise api_error(r.status, r.read())
        return r

    def image_load(self, data, quiet=False):
        return self.json_stream("POST", "/images/load", {"quiet": quiet or None}, raw=data,
                                headers={"Content-Type": "application/x-tar"})


class _Waiter:
    def __init__(self, resp):
        self.resp = resp

    def result(self) -> dict:
        try:
            body = self.resp.read()
        finally:
            self.resp.close()
            self.resp._ketch_conn.close()
        try:
            return json.loads(body)
        except ValueError:
            raise errors.Internal("wait: the daemon's answer is not JSON") from None

    def close(self):
        self.resp.close()
        self.resp._ketch_conn.close()
