"""Container logs: conmon writes k8s-file lines, the API serves Docker's json-file semantics.

conmon writes one line per chunk of output, ``<RFC3339Nano local time> <stdout|stderr>
<F|P> <text>``, where ``P`` marks a piece of a line not yet ended by a newline. Reading
turns each run of P pieces and its F end back into the exact bytes the container wrote,
with Docker's UTC RFC3339Nano timestamps; ``since``, ``until`` and ``tail`` work on
those entries as they do on Docker's json-file records.

Rotation (``--log-opt max-size``/``max-file``, capped by default: daemon.json's log-opts)
is shared: conmon cuts the live file at max-size (``--log-size-max``: a new file renamed over
the name), and ketchd keeps the cut file by a hard link and renames it ``.1`` (older ones
shift up, the oldest is dropped); see ``rotate_if_needed``. Reading goes across the files,
oldest first.
"""

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone

from ketch.errors import InvalidArgument


@dataclass
class Entry:
    stream: str      # "stdout" | "stderr"
    time: str        # Docker's RFC3339Nano, UTC
    ns: int          # unix time in nanoseconds, exact
    data: bytes


def convert_timestamp(ts: str) -> tuple[str, int]:
    """conmon's "2026-01-02T03:04:05.123456789+01:00" to ("...Z" in UTC, unix nanoseconds)."""
    base, frac, offset = ts[:19], "", ts[19:]
    if offset.startswith("."):
        i = 1
        while i < len(offset) and offset[i].isdigit():
            i += 1
        frac, offset = offset[1:i], offset[i:]
    if offset in ("Z", ""):
        offset = "+00:00"
    dt = datetime.fromisoformat(base + offset).astimezone(timezone.utc)
    ns = int(dt.timestamp()) * 10**9 + (int(frac.ljust(9, "0")[:9]) if frac else 0)
    frac = frac.rstrip("0")
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"
    return text, ns


def parse_line(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """One k8s-file line (without its newline) to (timestamp, stream, partial, text)."""
    try:
        ts, stream, tag, text = line.split(b" ", 3)
    except ValueError:
        parts = line.split(b" ")
        if len(parts) == 3:  # an empty piece: "TS stream F"
            ts, stream, tag = parts
            text = b""
        else:
            return None
    return ts.decode(), stream.decode(), tag == b"P", text


def files_of(log_path: str) -> list[str]:
    """The rotated files, oldest first, then the file conmon cut last (``.pending``, until ketchd
    makes it ``.1``), then the live file."""
    rotated = []
    n = 1
    while os.path.exists(f"{log_path}.{n}"):
        rotated.append(f"{log_path}.{n}")
        n += 1
    held = _ino(f"{log_path}.pending")
    if held is not None and held != _ino(log_path):
        rotated.insert(0, f"{log_path}.pending")
    return list(reversed(rotated)) + [log_path]


class _Assembler:
    """Join P pieces to their F end, per stream."""

    def __init__(self):
        self.pending: dict[str, tuple[str, int, bytes]] = {}

    def feed(self, line: bytes) -> Entry | None:
        parsed = parse_line(line)
        if parsed is None:
            return None
        ts, stream, partial, text = parsed
        if stream not in ("stdout", "stderr"):
            return None
        if stream in self.pending:
            t, e, data = self.pending.pop(stream)
            data += text
        else:
            t, e = convert_timestamp(ts)
            data = text
        if partial:
            self.pending[stream] = (t, e, data)
            return None
        return Entry(stream, t, e, data + b"\n")

    def flush(self) -> list[Entry]:
        out = [Entry(s, t, e, d) for s, (t, e, d) in self.pending.items()]
        self.pending.clear()
        return out


def read_entries(log_path: str) -> list[Entry]:
    asm = _Assembler()
    out: list[Entry] = []
    for path in files_of(log_path):
        try:
            with open(path, "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):
                        e = asm.feed(line[:-1])
                        if e:
                            out.append(e)
        except FileNotFoundError:
            continue
    out.extend(asm.flush())
    return out


def parse_time(value: str | None) -> int | None:
    """Docker's since/until (unix seconds with an optional fraction, or RFC 3339) in nanoseconds."""
    if value in (None, "", "0"):
        return None
    m = re.fullmatch(r"(-?\d+)(?:\.(\d{1,9}))?", value.strip())
    if m:
        return int(m.group(1)) * 10**9 + int((m.group(2) or "0").ljust(9, "0"))
    m = re.fullmatch(r"(.{19})(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?", value.strip())
    try:
        if not m:
            raise ValueError(value)
        base = datetime.fromisoformat(m.group(1) + (m.group(3) or "Z").replace("Z", "+00:00"))
        return int(base.timestamp()) * 10**9 + int((m.group(2) or "0").ljust(9, "0"))
    except ValueError:
        raise InvalidArgument(f"invalid value for \"since\": failed to parse value as time or "
                              f"duration: \"{value}\"") from None


def _within(e: Entry, since: int | None, until: int | None) -> bool:
    return (since is None or e.ns >= since) and (until is None or e.ns <= until)


async def stream(log_path: str, *, follow: bool, tail: int | None, since: int | None,
                 until: int | None, running) -> AsyncIterator[Entry]:
    """Yield entries; with follow, keep going until `running()` is false and all is read.

    The live file is opened before anything is read and followed from the very byte where
    the history ends, so no line written meanwhile is lost or repeated.
    """
    try:
        f = open(log_path, "rb")
    except FileNotFoundError:
        f = None
    try:
        asm = _Assembler()
        entries: list[Entry] = []
        for path in files_of(log_path)[:-1]:
            try:
                with open(path, "rb") as rf:
                    for line in rf:
                        if line.endswith(b"\n"):
                            e = asm.feed(line[:-1])
                            if e:
                                entries.append(e)
            except FileNotFoundError:
                continue
        buf = b""
        if f is not None:
            *lines, buf = f.read().split(b"\n")
            for line in lines:
                e = asm.feed(line)
                if e:
                    entries.append(e)
        if not follow:
            entries.extend(asm.flush())
        if since is not None:
            entries = [e for e in entries if e.ns >= since]  # Docker keeps what is not before since
        if until is not None:
            entries = [e for e in entries if e.ns <= until]
        if tail is not None and tail >= 0:
            entries = entries[-tail:] if tail else []
        for e in entries:
            yield e
        if not follow:
            return
        # follow; a rotation shows as a new inode at log_path: drain the old file, then switch
        while True:
            got = False
            if f is not None:
                chunk = f.read(65536)
                if chunk:
                    got = True
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        e = asm.feed(line)
                        if e and _within(e, since, until):
                            yield e
            if got:
                continue
            try:
                st = os.stat(log_path)
            except FileNotFoundError:
                st = None
            if st is not None and (f is None or os.fstat(f.fileno()).st_ino != st.st_ino):
                if f is not None:
                    f.close()
                f = open(log_path, "rb")
                buf = b""
                continue
            if not running():
                for e in asm.flush():
                    if _within(e, since, until):
                        yield e
                return
            await asyncio.sleep(0.1)
    finally:
        if f is not None:
            f.close()


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _shift(log_path: str, max_file: int) -> None:
    """Make room for a new ``.1``: drop the oldest, move ``.n`` to ``.n+1``."""
    oldest = f"{log_path}.{max_file - 1}"
    if max_file > 1 and os.path.exists(oldest):
        os.unlink(oldest)
    for n in range(max_file - 2, 0, -1):
        if os.path.exists(f"{log_path}.{n}"):
            os.rename(f"{log_path}.{n}", f"{log_path}.{n + 1}")


def rotate_if_needed(log_path: str, max_size: int, max_file: int) -> tuple[bool, bool]:
    """One round of rotation: (the monitor must reopen its log, a file was rotated).

    conmon cuts the live file at max-size itself (``--log-size-max``): it writes on in a new
    file that it renames over the old name, so nothing waits for this round to come. What it
    would drop, the old file, ketchd keeps by a hard link, ``<log>.pending``, made on the round
    after each cut: here it becomes ``.1`` (older ones shift up, beyond max-file they go).
    A live file that grew past max-size without a cut (a new conmon counts from zero on a file
    it appends to) is rotated here, and conmon told to reopen."""
    if max_size <= 0:
        return False, False
    max_file = max(1, max_file)
    pending = f"{log_path}.pending"
    live, held = _ino(log_path), _ino(pending)
    rotated = False
    if held is not None and held != live:  # conmon cut the file: the old one becomes .1
        if max_file > 1:
            _shift(log_path, max_file)
            os.rename(pending, f"{log_path}.1")
        else:
            os.unlink(pending)
        held, rotated = None, True
    try:
        size = os.path.getsize(log_path)
    except FileNotFoundError:
        return False, rotated
    if size >= max_size + max_size // 2:
        _shift(log_path, max_file)
        if max_file > 1:
            os.rename(log_path, f"{log_path}.1")
        else:
            os.unlink(log_path)
        if held is not None:
            os.unlink(pending)
        return True, True
    if held is None and max_file > 1:
        try:
            os.link(log_path, pending)
        except FileNotFoundError:
            pass
    return False, rotated


def parse_size(value: str) -> int:
    """Docker's max-size: "10k", "1m", "2g" (base 1024), or bytes."""
    v = value.strip().lower()
    mult = 1
    for suffix, m in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3), ("k", 1024), ("m", 1024**2),
                      ("g", 1024**3), ("b", 1)):
        if v.endswith(suffix):
            v, mult = v[: -len(suffix)], m
            break
    try:
        n = float(v)
    except ValueError:
        raise InvalidArgument(f"invalid max-size: {value}") from None
    if n <= 0:
        raise InvalidArgument(f"invalid max-size: {value}")
    return int(n * mult)


def check_attribute_opts(cfg: dict) -> None:
    """At create: labels-regex and env-regex must compile (dockerd fails the logger on them)."""
    for key in ("labels-regex", "env-regex"):
        if cfg.get(key):
            try:
                re.compile(cfg[key])
            except re.error as e:
                raise InvalidArgument(f"invalid log opt '{key}': {cfg[key]!r}: {e}") from None


def attributes(cfg: dict, labels: dict, env: list[str]) -> dict[str, str]:
    """The extra attributes a log line carries (dockerd's loginfo.ExtraAttributes): the container
    labels named by the log opt ``labels`` or matching ``labels-regex``, and the environment
    variables named by ``env`` or matching ``env-regex``."""
    variables = dict(e.split("=", 1) for e in env if "=" in e)
    return {**_picked(cfg, "labels", labels), **_picked(cfg, "env", variables)}


def _picked(cfg: dict, opt: str, values: dict[str, str]) -> dict[str, str]:
    """The entries of ``values`` named by the log opt ``opt`` (a comma list) or matching ``opt-regex``."""
    out = {k: values[k] for k in (cfg.get(opt) or "").split(",") if k in values}
    if cfg.get(f"{opt}-regex"):
        rx = re.compile(cfg[f"{opt}-regex"])
        out.update((k, v) for k, v in values.items() if rx.search(k))
    return out


def details_prefix(attrs: dict[str, str]) -> bytes:
    """What ``logs --details`` puts before each line, as dockerd writes it: the attributes sorted
    by key, each ``key=value`` query-escaped, joined by commas, then one space (a lone space
    when there are none)."""
    from urllib.parse import quote_plus
    return (",".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}"
                     for k, v in sorted(attrs.items())) + " ").encode()



# --- the default cap ---------------------------------------------------------------------

# what a container of a log-file driver gets when neither it nor daemon.json's log-opts say
# otherwise, so that logs no longer grow without bound by default
DEFAULT_LOG_OPTS = {"max-size": "20m", "max-file": "3"}
FILE_DRIVERS = ("json-file", "k8s-file")


def with_defaults(lc: dict, daemon_opts: dict) -> dict:
    """A container's LogConfig with the daemon's log opts (dockerd's merge: each opt the
    container does not set itself), for the file drivers, whose cap they are."""
    if lc.get("Type") not in FILE_DRIVERS:
        return lc
    return {**lc, "Config": {**daemon_opts, **(lc.get("Config") or {})}}


def monitor_bound(cfg: dict) -> int:
    """conmon's cut of the live file (``--log-size-max``): max-size; 0 (none) without one."""
    return parse_size(str(cfg["max-size"])) if cfg.get("max-size") else 0
