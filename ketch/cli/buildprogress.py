"""How `ketch build` shows a build: BuildKit's progress modes over the classic builder's stream.

The daemon answers POST /build with Docker's JSON messages (what `docker build` and docker-py read)
and adds, for its own clients, an aux message per step event, `{"aux": {"ketch": {"vertex": 3,
"event": "start", "name": "[build 2/4] RUN make"}}}` (then `done`/`cached` with `elapsed`, or
`error` with BuildKit's words), and tags every line of a step with `"vertex"` (a RUN's output, a
pull's status, also as `"log"`, without the stage prefix the classic stream gets when stages run at
once). From these:

- `plain`: a line per event as `docker buildx build --progress plain` prints them: `#3 [2/4] RUN
  make`, `#3 0.215 output`, `#3 DONE 0.3s`, `#3 CACHED`, `#3 ERROR: ...`, then the failed step's
  last lines between `------` rules and `ERROR: failed to solve: ...`;
- `tty` (and `auto` when stderr is a terminal): BuildKit's live view (`[+] Building 2.3s (5/8)`,
  each step with its time, the running steps' last lines), drawn with rich, imported only here.

Progress goes to stderr, as BuildKit's does (stdout stays free for `-q`'s ID and `-o -`'s tar);
the lines a build prints outside any step (`Successfully tagged`, a build-arg warning) too.
"""

from __future__ import annotations

import collections
import csv
import sys
import time
from dataclasses import dataclass, field

TAIL = 6   # the running step's last lines in the live view, as BuildKit shows them


@dataclass
class Vertex:
    n: int
    name: str
    started: float
    state: str = "running"          # running | done | cached | error
    elapsed: float | None = None
    error: str = ""
    lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    def seconds(self, now: float) -> float:
        return self.elapsed if self.elapsed is not None else now - self.started


class Progress:
    """The step events of a build stream; subclasses show them."""

    def __init__(self, out=None):
        self.out = out or sys.stderr
        self.vertices: dict[int, Vertex] = {}
        self.started = time.monotonic()
        self.failed: Vertex | None = None

    def message(self, msg: dict) -> None:
        aux = msg.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ketch"), dict):
            self.event(aux["ketch"])
            return
        text = msg.get("stream")
        if not text:
            return
        v = self.vertices.get(msg.get("vertex", -1))
        if v is None:
            if "vertex" not in msg:
                self.note(text)
            return
        if "log" in msg:
            for line in msg["log"].splitlines():
                v.lines.append((time.monotonic() - v.started, line))
                self.line(v, v.lines[-1][0], line)

    def event(self, ev: dict) -> None:
        n = ev.get("vertex")
        if not isinstance(n, int):
            return
        kind = ev.get("event")
        if kind == "start":
            new = self.vertices[n] = Vertex(n, str(ev.get("name", "")), time.monotonic())
            self.begin(new)
            return
        v = self.vertices.get(n)
        if v is None:
            return
        v.state = kind if kind in ("done", "cached", "error") else v.state
        v.elapsed = ev.get("elapsed") if isinstance(ev.get("elapsed"), (int, float)) else v.seconds(time.monotonic())
        if kind == "error":
            v.error = str(ev.get("error", ""))
            self.failed = v
        self.end(v)

    def fail(self, msg: dict) -> None:
        """The stream's errorDetail: the failed step's last lines, then BuildKit's closing line."""
        text = msg.get("error") or (msg.get("errorDetail") or {}).get("message") or "failed"
        v = self.failed
        self.close()
        if v is not None:
            lines = [f"{t:.3f} {line}" for t, line in list(v.lines)[-10:]]
            self.out.write("------\n > " + v.name + ":\n" + "".join(f"{x}\n" for x in lines) + "------\n")
            text = v.error or text
        self.out.write(f"ERROR: failed to solve: {text}\n")
        self.out.flush()

    # --- what a mode shows

    def begin(self, v: Vertex) -> None: ...

    def line(self, v: Vertex, t: float, text: str) -> None: ...

    def end(self, v: Vertex) -> None: ...

    def note(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def close(self) -> None: ...


class Plain(Progress):
    """`--progress plain`: BuildKit's lines, `#N` before each so interleaved stages stay apart."""

    def write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def begin(self, v: Vertex) -> None:
        self.write(f"#{v.n} {v.name}")

    def line(self, v: Vertex, t: float, text: str) -> None:
        self.write(f"#{v.n} {t:.3f} {text}")

    def end(self, v: Vertex) -> None:
        if v.state == "cached":
            self.write(f"#{v.n} CACHED")
        elif v.state == "error":
            self.write(f"#{v.n} ERROR: {v.error}")
        else:
            self.write(f"#{v.n} DONE {v.seconds(0):.1f}s")


class Live(Progress):
    """`--progress tty`: BuildKit's live view, redrawn by rich a few times a second; the last frame
    stays on the screen."""

    def __init__(self, out=None):
        super().__init__(out)
        from rich.console import Console
        from rich.live import Live as RichLive
        self.console = Console(file=self.out, force_terminal=True, highlight=False)
        self.finished = False
        self.live = RichLive(console=self.console, refresh_per_second=8, transient=False, redirect_stdout=False,
                             redirect_stderr=False, get_renderable=self.render)
        self.live.start()

    def render(self):
        from rich.table import Table
        from rich.text import Text
        now = time.monotonic()
        vs = list(self.vertices.values())
        ended = sum(1 for v in vs if v.state != "running")
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        status = " FINISHED" if self.finished and self.failed is None else ""
        grid.add_row(Text(f"[+] Building {now - self.started:.1f}s ({ended}/{len(vs)}){status}", style="bold"), "")
        for v in vs:
            word = {"cached": "CACHED ", "error": "ERROR "}.get(v.state, "")
            style = {"running": "cyan", "error": "red", "cached": "blue"}.get(v.state, "")
            grid.add_row(Text(f" => {word}{v.name}", style=style), Text(f"{v.seconds(now):.1f}s", style=style))
            if v.state == "running" or v.state == "error":
                for _t, line in list(v.lines)[-TAIL:]:
                    grid.add_row(Text(f" => => # {line}", style="dim"), "")
        return grid

    def note(self, text: str) -> None:
        self.live.console.print(text.rstrip("\n"), markup=False, highlight=False)

    def end(self, v: Vertex) -> None:
        self.live.refresh()

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self.live.refresh()
            self.live.stop()


def open_progress(mode: str) -> Progress:
    """The view `--progress` asks for (`auto`: the live view on a terminal, else plain)."""
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    return Live() if mode == "tty" else Plain()


def parse_secrets(values: list[str], environ) -> dict[str, bytes]:
    """`--secret id=ID[,src=FILE|,env=VAR][,type=file|env]` as buildx reads it: `type=env` makes `src=`
    the variable's name; `env=` wins over a file; without either, the environment variable named ID
    when it is set, else the file named ID."""
    from ketch.cli.runopts import FlagError
    out: dict[str, bytes] = {}
    for value in values:
        fields: dict[str, str] = {}
        for part in next(csv.reader([value])) if value else [""]:
            k, eq, v = part.partition("=")
            if not eq:
                raise FlagError(f"invalid --secret {value!r}: {part!r} is not KEY=VALUE")
            fields[k.strip().lower()] = v
        unknown = set(fields) - {"id", "src", "source", "env", "type"}
        if unknown:
            raise FlagError(f"invalid --secret {value!r}: unexpected key {sorted(unknown)[0]!r}")
        kind = fields.get("type", "file")
        if kind not in ("file", "env"):
            raise FlagError(f"--secret {value}: unsupported secret type {kind!r} (file or env)")
        src = fields.get("src") or fields.get("source") or ""
        env = fields.get("env") or ""
        if kind == "env" and not env:
            env, src = src, ""
        sid = fields.get("id") or (src.rsplit("/", 1)[-1] if src else env) or ""
        if not sid:
            raise FlagError(f"invalid --secret {value!r}: id= is required")
        if not env and not src:
            env, src = (sid, "") if sid in environ else ("", sid)
        if env:
            if env not in environ:
                raise FlagError(f"--secret id={sid}: environment variable {env} is not set")
            out[sid] = environ[env].encode()
        else:
            try:
                with open(src, "rb") as f:
                    out[sid] = f.read()
            except OSError as e:
                raise FlagError(f"--secret id={sid}: open {src}: {e.strerror}") from None
    return out
