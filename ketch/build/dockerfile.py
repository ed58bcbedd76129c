"""The Dockerfile language as BuildKit's dockerfile frontend reads it: text to typed stages.

The first half of `ketch build`, and pure: no kernel, no daemon, no files but the text it is
given. Three steps, cut as BuildKit cuts them (frontend/dockerfile/parser, instructions and the
stage bookkeeping of dockerfile2llb), so that a Dockerfile that does not parse never starts a
container:

1. `parse_text` reads the lines: parser directives (`# syntax=` kept and otherwise ignored,
   `# escape=`, `# check=`), comments, line continuations (with the empty-continuation-line
   warning), heredocs (`<<EOF`, `<<-EOF`, quoted delimiters, several on a line), and splits each
   instruction into its keyword, its `--flags` and its arguments, the JSON (exec) form told from
   the shell form.
2. `parse` types each instruction (`FromInstruction`... `OnbuildInstruction`) with its flags
   checked: an unknown instruction, an unknown or repeated flag, a bad `--mount`, a bad
   HEALTHCHECK duration, a wrong argument count... are a `DockerfileError` that names the file,
   the line and the column, in BuildKit's words (`dockerfile parse error on line 3: unknown
   instruction: FORM (did you mean FROM?)`). Arguments stay as written; `Instruction.expand(env)`
   gives the expanded copy, expanding exactly the words BuildKit expands for that instruction
   (RUN's command, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD are never expanded here:
   the shell of the container does that).
3. `plan` resolves the stages for a build: the global ARGs before the first FROM against the
   build args and the predefined ones (`predefined_args`: BUILDPLATFORM, TARGETPLATFORM, TARGETOS,
   TARGETARCH, TARGETVARIANT, ...), each FROM's base name and platform expanded with them, the
   dependency graph (`FROM earlier-stage`, `COPY --from=stage|index|image`,
   `RUN --mount=from=...`), cycles refused, and the stages the `--target` needs, in an order in
   which each comes after what it needs.

Why hand-written: no maintained Python library implements BuildKit's frontend. dockerfile-parse
(PyPI, containerbuildsystem) was checked: it is a line-oriented editor of Dockerfiles (regexes
over lines, for rewriting FROM and LABELs in OSBS), and it has no heredocs, no `--flags` nor
`--mount` parsing, no `# check=`, no JSON-form errors, no column positions, reports no syntax
error at all (an unknown instruction is silently another dict), and its variable substitution is
not BuildKit's (no `#`, `%`, `/` modifiers, its own quoting rules). Every one of those is what a
builder must get exactly right, so Ketch follows BuildKit's rules here instead, written anew.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ketch.build.shell import Lex, LexError
from ketch.errors import InvalidArgument
from ketch.units import ram_in_bytes

__all__ = [
    "DockerfileError", "Warning", "Heredoc", "RawInstruction", "RawDockerfile", "parse_text",
    "Instruction", "FromInstruction", "RunInstruction", "CmdInstruction", "EntrypointInstruction",
    "EnvInstruction", "ArgInstruction", "ArgDef", "LabelInstruction", "ExposeInstruction",
    "CopyInstruction", "AddInstruction", "SourceContent", "WorkdirInstruction", "UserInstruction",
    "VolumeInstruction", "ShellInstruction", "StopSignalInstruction", "HealthcheckInstruction",
    "OnbuildInstruction", "MaintainerInstruction", "Mount", "KeyValue", "Stage", "Dockerfile",
    "parse", "parse_instruction", "parse_mount", "Expander", "predefined_args", "PROXY_ARGS",
    "resolve_global_args", "Plan", "PlannedStage", "plan", "parse_triggers", "INSTRUCTIONS", "suggest", "go_duration",
]

DEFAULT_ESCAPE = "\\"
INSTRUCTIONS = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
# the args every build accepts without an ARG, and that stay out of the image's history (Docker's rule)
PROXY_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                        "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})
SCRATCH = "scratch"


# ---------------------------------------------------------------------------------------------
# errors


class DockerfileError(InvalidArgument):
    """A Dockerfile that cannot be built, found before any step runs.

    `str()` is BuildKit's sentence (`dockerfile parse error on line 3: unknown instruction: FORM
    (did you mean FROM?)`), which names the instruction's first line as BuildKit does; `.line`
    and `.column` (1-based) point at the offending word itself, `.end_line` at the instruction's
    last line, `.reason` is the sentence without the prefix, `.file` the Dockerfile's name.
    """

    def __init__(self, reason: str, *, file: str = "Dockerfile", line: int = 0, column: int = 1,
                 start_line: int | None = None, end_line: int | None = None) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        self.column = column
        self.start_line = line if start_line is None else start_line
        self.end_line = self.start_line if end_line is None else end_line
        super().__init__(f"dockerfile parse error on line {self.start_line}: {reason}")

    @property
    def where(self) -> str:
        """`Dockerfile:3:1`, as compilers name a place."""
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Warning:  # noqa: A001 - the name BuildKit's parser gives it
    message: str
    line: int
    url: str = ""


# ---------------------------------------------------------------------------------------------
# suggestions ("did you mean ...?"), as BuildKit's util/suggest


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(value: str, options: Iterable[str], *, case_sensitive: bool) -> str | None:
    """The option within two edits of `value`, the nearest first; None when none is (or one is equal)."""
    val = value if case_sensitive else value.lower()
    match, best = None, 3
    for opt in sorted(options):
        o = opt if case_sensitive else opt.lower()
        if o == val:
            return None
        d = _levenshtein(val, o)
        if d < best:
            best = d
            if case_sensitive:
                match = o
            elif value == value.lower():
                match = o.lower()
            elif value == value.upper():
                match = o.upper()
            else:
                match = o
    return match


def _with_suggestion(message: str, value: str, options: Iterable[str], *, case_sensitive: bool) -> str:
    m = suggest(value, options, case_sensitive=case_sensitive)
    return f"{message} (did you mean {m}?)" if m else message


# ---------------------------------------------------------------------------------------------
# step 1: lines to raw instructions (BuildKit's parser package)


@dataclass(frozen=True)
class Heredoc:
    name: str            # the delimiter, its quotes removed
    content: str         # the lines between the marker and the delimiter, each with its newline
    expand: bool         # False when any part of the delimiter was quoted (<<'EOF', <<"EOF", <<E"O"F)
    chomp: bool          # <<-: leading tabs are stripped from the content's lines
    fd: int = 0          # 3<<EOF (a file descriptor before the marker)

    @property
    def text(self) -> str:
        """The content as the step sees it: tabs stripped for `<<-`."""
        return _chomp(self.content) if self.chomp else self.content


@dataclass
class RawInstruction:
    keyword: str                  # as written: "from", "RUN", "Copy"
    flags: list[str]              # ["--from=build", "--chown=1:1"]
    args: list[str]               # the line parser's arguments (ENV/LABEL: key, value, delimiter triples)
    rest: str                     # the text after the flags
    original: str                 # the logical line (continuations joined)
    json: bool                    # exec (JSON array) form
    start_line: int
    end_line: int
    column: int                   # of the keyword on the first line
    heredocs: list[Heredoc] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    sub: RawInstruction | None = None             # ONBUILD's trigger
    lines: list[tuple[int, str]] = field(default_factory=list)   # the physical lines, for columns

    def locate(self, text: str) -> tuple[int, int]:
        """(line, column) of `text` in this instruction's lines; the keyword's when not found."""
        if text:
            for i, (n, s) in enumerate(self.lines):
                start = self.column - 1 + len(self.keyword) if i == 0 else 0
                k = s.find(text, start)
                if k >= 0:
                    return n, k + 1
        return self.start_line, self.column


@dataclass
class RawDockerfile:
    instructions: list[RawInstruction]
    escape: str = DEFAULT_ESCAPE
    syntax: str | None = None
    check: str | None = None
    warnings: list[Warning] = field(default_factory=list)
    file: str = "Dockerfile"


_WS = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"(\d*)<<(-?)[\t\n\f\r ]*([^<]*)")
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")


def _chomp(text: str) -> str:
    return re.sub(r"(?m)^\t+", "", text)


class _Directives:
    """Parser directives: only at the very top, each once; the first other line ends them."""

    def __init__(self) -> None:
        self.done = False
        self.seen: dict[str, str] = {}

    def parse_line(self, line: str) -> tuple[str, str] | None:
        if self.done:
            return None
        if not line.startswith("#"):
            self.done = True
            return None
        m = _DIRECTIVE.fullmatch(line[1:].lstrip())
        if not m or m.group(1).lower() not in _DIRECTIVES:
            self.done = True
            return None
        key = m.group(1).lower()
        if key in self.seen:
            raise ValueError(f"only one {key} parser directive can be used")
        self.seen[key] = m.group(2)
        return key, m.group(2)


class _LineReader:
    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.escape = DEFAULT_ESCAPE
        self._cont = self._continuation(DEFAULT_ESCAPE)
        self.directives = _Directives()

    @staticmethod
    def _continuation(esc: str) -> re.Pattern[str]:
        e = re.escape(esc)
        return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")

    def set_escape(self, value: str) -> None:
        if value not in ("`", "\\"):
            raise ValueError(f"invalid escape token '{value}' does not match ` or \\")
        self.escape = value
        self._cont = self._continuation(value)

    def process(self, raw: str, strip_left: bool) -> tuple[str, bool]:
        token = raw.rstrip("\r\n")
        if strip_left:
            token = token.lstrip()
        d = self.directives.parse_line(token)
        if d and d[0] == "escape":
            self.set_escape(d[1])
        if _is_comment(token):
            token = ""
        return token, d is not None

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        m = self._cont.search(line)
        if m:
            return line[:m.start()] + (m.group(1) or ""), False
        return line, True


def _is_comment(line: str) -> bool:
    s = line.lstrip()
    return s.startswith("#")


def parse_text(text: str | bytes, file: str = "Dockerfile") -> RawDockerfile:
    """Lines to raw instructions; a DockerfileError for what the parser itself refuses."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DockerfileError(f"file is not valid UTF-8: {e.reason}", file=file, line=1) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    phys = text.splitlines(keepends=True)
    reader = _LineReader(text, file)
    out = RawDockerfile([], file=file)
    comments: list[str] = []
    i = 0

    def fail(msg: str, line: int, end: int | None = None, column: int = 1) -> DockerfileError:
        return DockerfileError(msg, file=file, line=line, column=column, end_line=end)

    while i < len(phys):
        raw = phys[i]
        i += 1
        lineno = i
        if _is_comment(raw):
            c = raw.strip()[1:].strip()
            comments = comments + [c] if c else []
        try:
            token, is_directive = reader.process(raw, True)
        except ValueError as e:
            raise fail(str(e), lineno) from None
        if is_directive:
            comments = comments[:-1]
        start = lineno
        token, end_of_line = reader.trim_continuation(token)
        if end_of_line and not token:
            continue
        buf = [token]
        lines = [(lineno, raw.rstrip("\r\n"))]
        empty_continuation = False
        while not end_of_line and i < len(phys):
            raw2 = phys[i]
            i += 1
            tok2, _ = reader.process(raw2, False)
            if _is_comment(raw2):
                continue
            if not tok2.strip():
                empty_continuation = True
                continue
            tok2, end_of_line = reader.trim_continuation(tok2)
            buf.append(tok2)
            lines.append((i, raw2.rstrip("\r\n")))
        line = "".join(buf)
        if empty_continuation:
            out.warnings.append(Warning(f"Empty continuation line found in: {line}", i,
                                        "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"))
        first = lines[0][1]
        column = len(first) - len(first.lstrip()) + 1
        try:
            node = _node_from_line(line, reader.escape)
        except ValueError as e:
            raise fail(str(e), start, i, column) from None
        node.start_line, node.end_line, node.column, node.lines = start, i, column, lines
        node.comments = comments
        target = node.sub if node.keyword.lower() == "onbuild" and node.sub else node
        if target.keyword.lower() in _HEREDOC_INSTRUCTIONS and not target.json and "<<" in line:
            try:
                markers = _heredocs_from_line(line)
            except LexError as e:
                raise fail(str(e), start, i, column) from None
            for name, expand, chomp, fd in markers:
                content: list[str] = []
                terminated = False
                while i < len(phys):
                    body = phys[i]
                    i += 1
                    candidate = body.rstrip("\r\n")
                    if chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == name:
                        terminated = True
                        break
                    content.append(body)
                if not terminated:
                    raise fail("unterminated heredoc", start, i, column)
                node.heredocs.append(Heredoc(name, "".join(content), expand, chomp, fd))
            node.end_line = i
            if node.sub is not None:
                node.sub.heredocs = node.heredocs
        out.instructions.append(node)
        comments = []
    out.escape = reader.escape
    out.syntax = reader.directives.seen.get("syntax")
    out.check = reader.directives.seen.get("check")
    if not out.instructions:
        raise fail("file with no instructions", len(phys))
    return out


def _split_command(line: str, esc: str) -> tuple[str, list[str], str]:
    parts = _WS.split(line.strip(), maxsplit=1)
    cmd = parts[0]
    rest, flags = "", list[str]()
    if len(parts) == 2:
        rest, flags = _extract_flags(parts[1], esc)
    return cmd, flags, rest.strip()


def _extract_flags(line: str, esc: str) -> tuple[str, list[str]]:
    """The leading `--words` of an instruction's arguments (quotes and escapes as BuildKit takes them)."""
    words: list[str] = []
    buf: list[str] = []
    in_word = in_quote = blank_ok = False
    quote = ""
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if not in_word and not in_quote:
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            in_word = True
        if pos == n:
            word = "".join(buf)
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if in_quote:
            if ch == quote:
                in_quote, in_word = False, True
                pos += 1
                continue
            if ch == esc:
                if pos + 1 == n:
                    in_quote, in_word = False, True
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            buf.append(ch)
            pos += 1
            continue
        if ch.isspace():
            word = "".join(buf)
            in_word = False
            if word == "--":
                return line[pos:], words
            if blank_ok or word:
                words.append(word)
            buf, blank_ok = [], False
            pos += 1
            continue
        if ch in ("'", '"'):
            quote, blank_ok, in_quote, in_word = ch, True, True, False
            pos += 1
            continue
        if ch == esc:
            if pos + 1 == n:
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        buf.append(ch)
        pos += 1
    return "", words


def _parse_words(rest: str, esc: str) -> list[str]:
    """Space-separated words with their quotes kept (stripped later, by the expansion)."""
    words: list[str] = []
    buf: list[str] = []
    phase = 0          # 0 between words, 1 in a word, 2 in quotes
    quote = ""
    blank_ok = False
    pos, n = 0, len(rest)
    while True:
        ch = rest[pos] if pos < n else ""
        if phase == 0:
            if pos == n:
                break
            if ch.isspace():
                pos += 1
                continue
            phase = 1
        if pos == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == 1:
            if ch.isspace():
                phase = 0
                if blank_ok or buf:
                    words.append("".join(buf))
                buf, blank_ok = [], False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote, blank_ok, phase = ch, True, 2
            if ch == esc:
                if pos + 1 == n:
                    pos += 1
                    continue
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # phase 2: in quotes
        if ch == quote:
            phase = 1
        if ch == esc and quote != "'":
            if pos + 1 == n:
                phase = 1
                pos += 1
                continue
            buf.append(ch)
            pos += 1
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    return words


class _NotStrings(ValueError):
    pass


def _parse_json(rest: str) -> list[str] | None:
    """The JSON array form; None when `rest` is not one (then it is the shell form)."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None

    def no_constants(name: str) -> object:
        raise ValueError(name)

    try:
        value = json.loads(rest, parse_constant=no_constants)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _NotStrings("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _node_from_line(line: str, esc: str) -> RawInstruction:
    cmd, flags, rest = _split_command(line, esc)
    kind = cmd.lower()
    args: list[str] = []
    is_json = False
    sub = None
    if kind in ("env", "label"):
        args = _parse_name_val(rest, "ENV" if kind == "env" else "LABEL", esc)
    elif kind == "arg":
        args = _parse_words(rest, esc)
    elif kind in ("expose", "from"):
        args = _WS.split(rest) if rest else []
    elif kind in ("maintainer", "stopsignal", "user", "workdir"):
        args = [rest] if rest else []
    elif kind in ("cmd", "entrypoint", "run", "shell"):
        args, is_json = _maybe_json(rest)
    elif kind in ("add", "copy", "volume"):
        j = _parse_json(rest)
        args, is_json = (j, True) if j is not None else (_WS.split(rest) if rest else [], False)
    elif kind == "healthcheck":
        m = re.match(r"\S+", rest)
        if m:
            cmd_args, is_json = _maybe_json(rest[m.end():].lstrip())
            args = [m.group(0)] + cmd_args
    elif kind == "onbuild":
        if rest:
            sub = _node_from_line(rest, esc)
            args = [sub.keyword] + sub.args
    return RawInstruction(cmd, flags, args, rest, line, is_json, 0, 0, 1, sub=sub)


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    j = _parse_json(rest)
    if j is not None:
        return j, True
    return [rest], False


def _parse_name_val(rest: str, key: str, esc: str) -> list[str]:
    words = _parse_words(rest, esc)
    if not words:
        return []
    if "=" not in words[0]:               # the old form: KEY name value
        parts = _WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for w in words:
        if "=" not in w:
            quoted = json.dumps(w, ensure_ascii=False)
            raise ValueError(f"Syntax error - can't find = in {quoted}. Must be of the form: name=value")
        k, _, v = w.partition("=")
        out += [k, v, "="]
    return out


def _heredocs_from_line(line: str) -> list[tuple[str, bool, bool, int]]:
    lex = Lex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.process_words(line, {})
    except LexError:
        return []
    out = []
    for w in words:
        h = _parse_heredoc_marker(w)
        if h:
            out.append(h)
    return out


def _parse_heredoc_marker(word: str) -> tuple[str, bool, bool, int] | None:
    """(name, expand, chomp, fd) of a `<<EOF` word; None when the word is not a heredoc marker."""
    m = _HEREDOC.fullmatch(word)
    if not m or not m.group(3):
        return None
    rest = m.group(3)
    plain = Lex("\\", skip_unset_env=True).process_words(rest, {})
    if len(plain) != 1:
        return None
    raw = Lex("\\", skip_unset_env=True, raw_quotes=True).process_words(rest, {})
    if len(raw) != 1:
        raise LexError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = plain[0].count("'") + plain[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return plain[0], quotes == raw_quotes, m.group(2) == "-", int(m.group(1) or 0)


def _must_marker(word: str) -> tuple[str, bool, bool, int] | None:
    try:
        return _parse_heredoc_marker(word)
    except LexError:
        return None


# ---------------------------------------------------------------------------------------------
# step 2: typed instructions (BuildKit's instructions package)


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    no_delim: bool = False     # the old `ENV key value` form


@dataclass(frozen=True)
class ArgDef:
    key: str
    value: str | None = None   # the default, None for `ARG NAME`


@dataclass(frozen=True)
class SourceContent:
    """A heredoc source of COPY/ADD: `COPY <<EOF /file` writes `data` as `path` (the delimiter)."""
    path: str
    data: str
    expand: bool


@dataclass(frozen=True)
class Mount:
    """One `RUN --mount=...`, with BuildKit's defaults filled in."""
    type: str = "bind"                  # bind, cache, tmpfs, secret, ssh
    from_: str = ""                     # a stage name, an index or an image (bind, cache)
    source: str = ""
    target: str = ""
    readonly: bool = True               # bind and secret are read-only unless rw; cache and tmpfs writable
    size_limit: int = 0                 # tmpfs size= in bytes
    cache_id: str = ""                  # id= (cache: the cache's id; secret: the secret's id)
    sharing: str = ""                   # cache: shared (the default), private, locked
    required: bool = False              # secret, ssh
    env: str | None = None              # secret: env= the variable to set
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


_Self = TypeVar("_Self", bound="Instruction")


@dataclass
class Instruction:
    """What every instruction has: its keyword, its text and where it is."""
    name: str                           # upper case: "RUN"
    original: str                       # the instruction's text as written (continuations joined)
    line: int
    end_line: int
    column: int = 1
    comments: list[str] = field(default_factory=list)

    def expand(self: _Self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE) -> _Self:
        """A copy with its words expanded from `env` as BuildKit does for this instruction."""
        return self.expanded(Expander(env, escape, self))

    def expanded(self: _Self, ex: Expander) -> _Self:
        return self


class Expander:
    """Expands an instruction's words from an environment and remembers which variables it used.

    `word` keeps spaces (ProcessWord), `words` splits after expanding (ProcessWords), `heredoc`
    expands a heredoc body (quotes are ordinary characters there, the escape token is `\\`).
    """

    def __init__(self, env: Mapping[str, str], escape: str = DEFAULT_ESCAPE, where: Instruction | None = None,
                 file: str = "Dockerfile") -> None:
        self.env = env
        self.lex = Lex(escape)
        self.raw_lex = Lex("\\", skip_process_quotes=True)
        self.where = where
        self.file = file
        self.used: set[str] = set()
        self.unset: set[str] = set()

    def _error(self, e: LexError) -> DockerfileError:
        w = self.where
        if w is None:
            return DockerfileError(str(e), file=self.file)
        return DockerfileError(str(e), file=self.file, line=w.line, column=w.column, end_line=w.end_line)

    def _run(self, lex: Lex, s: str) -> str:
        try:
            r = lex.process_word(s, self.env)
        except LexError as e:
            raise self._error(e) from None
        self.used |= r.matched
        self.unset |= r.unmatched
        return r.word

    def word(self, s: str) -> str:
        return self._run(self.lex, s)

    def words(self, s: str) -> list[str]:
        try:
            r = self.lex.process_word(s, self.env)
        except LexError as e:
            raise self._error(e) from None
        self.used |= r.matched
        self.unset |= r.unmatched
        return r.words

    def heredoc(self, s: str) -> str:
        return self._run(self.raw_lex, s)


@dataclass
class FromInstruction(Instruction):
    base: str = ""                      # as written; `plan` expands it with the global args
    stage_name: str = ""                # lower case, "" without AS
    platform: str = ""                  # --platform, as written


@dataclass
class _CommandLine(Instruction):
    cmd: list[str] = field(default_factory=list)    # exec form: the argv; shell form: one string
    prepend_shell: bool = True                      # shell form: run through the image's SHELL
    heredocs: list[Heredoc] = field(default_factory=list)


@dataclass
class RunInstruction(_CommandLine):
    mounts: list[Mount] = field(default_factory=list)
    mount_specs: list[str] = field(default_factory=list)   # the --mount values as written
    network: str = "default"                                # default, none, host
    flags_used: list[str] = field(default_factory=list)

    def expanded(self, ex: Expander) -> RunInstruction:
        try:
            mounts = [parse_mount(spec, ex.word) for spec in self.mount_specs]
        except _Problem as e:
            raise DockerfileError(str(e), file=ex.file, line=self.line, column=self.column,
                                  end_line=self.end_line) from None
        return dataclasses.replace(self, mounts=mounts)

    def script(self) -> list[str]:
        """The argv BuildKit runs for a heredoc RUN: `RUN <<EOF` alone runs the body in the shell
        (a body starting with `#!` is rather written to a file and run), anything else hands the
        line and its bodies to the shell to read as a shell heredoc. Without heredocs, `cmd`."""
        if not self.heredocs:
            return self.cmd
        only = _must_marker(self.cmd[0]) if len(self.cmd) == 1 else None
        if only is not None:
            return [self.heredocs[0].text]
        parts = [self.cmd[0]] if self.cmd else []
        for h in self.heredocs:
            parts.append("\n" + h.content + h.name)
        return ["".join(parts)]

    def heredoc_file(self) -> Heredoc | None:
        """The heredoc BuildKit runs as a file: `RUN <<EOF` alone whose body starts with `#!`
        (written, mode 0755, to /dev/pipes/NAME and run as the command; `script()` is then moot)."""
        if len(self.cmd) == 1 and self.heredocs and _must_marker(self.cmd[0]) is not None \
                and self.heredocs[0].text.startswith("#!"):
            return self.heredocs[0]
        return None


@dataclass
class CmdInstruction(_CommandLine):
    pass


@dataclass
class EntrypointInstruction(_CommandLine):
    pass


@dataclass
class _Pairs(Instruction):
    pairs: list[KeyValue] = field(default_factory=list)

    def expanded(self: _P, ex: Expander) -> _P:
        return dataclasses.replace(self, pairs=[KeyValue(ex.word(p.key), ex.word(p.value), p.no_delim)
                                                for p in self.pairs])


_P = TypeVar("_P", bound=_Pairs)


@dataclass
class EnvInstruction(_Pairs):
    pass


@dataclass
class LabelInstruction(_Pairs):
    pass


@dataclass
class ArgInstruction(Instruction):
    args: list[ArgDef] = field(default_factory=list)

    def expanded(self, ex: Expander) -> ArgInstruction:
        return dataclasses.replace(self, args=[ArgDef(ex.word(a.key), None if a.value is None else ex.word(a.value))
                                               for a in self.args])


@dataclass
class MaintainerInstruction(Instruction):
    maintainer: str = ""


@dataclass
class ExposeInstruction(Instruction):
    ports: list[str] = field(default_factory=list)

    def expanded(self, ex: Expander) -> ExposeInstruction:
        return dataclasses.replace(self, ports=[w for p in self.ports for w in ex.words(p)])


@dataclass
class _Copy(Instruction):
    sources: list[str] = field(default_factory=list)
    contents: list[SourceContent] = field(default_factory=list)
    dest: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    excludes: list[str] = field(default_factory=list)
    json: bool = False

    def _expand_common(self, ex: Expander) -> dict:
        return dict(sources=[ex.word(s) for s in self.sources], dest=ex.word(self.dest), chown=ex.word(self.chown),
                    chmod=ex.word(self.chmod),
                    contents=[dataclasses.replace(c, data=ex.heredoc(c.data)) if c.expand else c
                              for c in self.contents])


@dataclass
class CopyInstruction(_Copy):
    from_: str = ""                     # --from: a stage name, a stage index or an image
    parents: bool = False

    def expanded(self, ex: Expander) -> CopyInstruction:
        return dataclasses.replace(self, **self._expand_common(ex))


@dataclass
class AddInstruction(_Copy):
    checksum: str = ""
    parents: bool = False
    keep_git_dir: bool | None = None
    unpack: bool | None = None

    def expanded(self, ex: Expander) -> AddInstruction:
        return dataclasses.replace(self, checksum=ex.word(self.checksum), **self._expand_common(ex))


@dataclass
class WorkdirInstruction(Instruction):
    path: str = ""

    def expanded(self, ex: Expander) -> WorkdirInstruction:
        return dataclasses.replace(self, path=ex.word(self.path))


@dataclass
class UserInstruction(Instruction):
    user: str = ""

    def expanded(self, ex: Expander) -> UserInstruction:
        return dataclasses.replace(self, user=ex.word(self.user))


@dataclass
class VolumeInstruction(Instruction):
    volumes: list[str] = field(default_factory=list)

    def expanded(self, ex: Expander) -> VolumeInstruction:
        return dataclasses.replace(self, volumes=[ex.word(v) for v in self.volumes])


@dataclass
class ShellInstruction(Instruction):
    shell: list[str] = field(default_factory=list)


@dataclass
class StopSignalInstruction(Instruction):
    signal: str = ""

    def expanded(self, ex: Expander) -> StopSignalInstruction:
        return dataclasses.replace(self, signal=ex.word(self.signal))


@dataclass
class HealthcheckInstruction(Instruction):
    """`test` is Docker's Healthcheck.Test: ["NONE"], ["CMD", argv...] or ["CMD-SHELL", "cmd"];
    durations are in nanoseconds (the image config's unit), 0 when not given."""
    test: list[str] = field(default_factory=list)
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass
class OnbuildInstruction(Instruction):
    expression: str = ""                # the trigger's text, stored in the image's OnBuild
    trigger: Instruction | None = None  # the trigger, parsed (checked now, run in the child build)


@dataclass
class Stage:
    """One FROM and the instructions after it."""
    index: int
    from_: FromInstruction
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.from_.stage_name

    @property
    def base(self) -> str:
        return self.from_.base

    @property
    def label(self) -> str:
        """The name BuildKit shows: the stage's name, else `stage-N`."""
        return self.name or f"stage-{self.index}"


@dataclass
class Dockerfile:
    stages: list[Stage]
    global_args: list[ArgInstruction]   # the ARGs before the first FROM
    escape: str = DEFAULT_ESCAPE
    syntax: str | None = None
    check: str | None = None
    warnings: list[Warning] = field(default_factory=list)
    file: str = "Dockerfile"

    def stage(self, ref: str | int) -> Stage:
        """A stage by name (any case) or by index; KeyError when there is none."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            i = int(ref)
            if 0 <= i < len(self.stages):
                return self.stages[i]
            raise KeyError(ref)
        for s in self.stages:
            if s.name and s.name == ref.lower():
                return s
        raise KeyError(ref)


class _Flags:
    """BuildKit's BFlags: declared flags, then one parse of what the instruction was given."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.kinds: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.used: list[str] = []

    def add_bool(self, name: str) -> None:
        self.kinds[name] = "bool"
        self.values[name] = "false"

    def add_string(self, name: str, default: str = "") -> None:
        self.kinds[name] = "string"
        self.values[name] = default

    def add_strings(self, name: str) -> None:
        self.kinds[name] = "strings"
        self.lists[name] = []

    def parse(self) -> None:
        for a in self.args:
            if a == "--":
                return
            if not a.startswith("--"):
                raise _FlagError(f"arg should start with -- : {a}", a)
            flag, has_value, value = a.partition("=")
            name = flag[2:]
            kind = self.kinds.get(name)
            if kind is None:
                raise _FlagError(_with_suggestion(f"unknown flag: {flag}", name, self.kinds, case_sensitive=True), a)
            if name in self.used and kind != "strings":
                raise _FlagError(f"duplicate flag specified: {flag}", a)
            self.used.append(name)
            if kind == "bool":
                if has_value and value == "":
                    raise _FlagError(f"missing a value on flag: {flag}", a)
                v = value.lower()
                if v not in ("true", "", "false"):
                    raise _FlagError(f"expecting boolean value for flag {flag}, not: {value}", a)
                self.values[name] = "false" if v == "false" else "true"
            elif not has_value:
                raise _FlagError(f"missing a value on flag: {flag}", a)
            elif kind == "string":
                self.values[name] = value
            else:
                self.lists[name].append(value)

    def bool(self, name: str) -> bool:
        return self.values[name] == "true"


class _FlagError(ValueError):
    def __init__(self, message: str, flag: str) -> None:
        super().__init__(message)
        self.flag = flag


class _Problem(ValueError):
    """An instruction's error, with the word it is about (for the column) when there is one."""

    def __init__(self, message: str, word: str = "") -> None:
        super().__init__(message)
        self.word = word


_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")


def parse(text: str | bytes, file: str = "Dockerfile") -> Dockerfile:
    """A Dockerfile's text to its stages; DockerfileError for the first thing that is wrong."""
    raw = parse_text(text, file)
    stages: list[Stage] = []
    global_args: list[ArgInstruction] = []
    for node in raw.instructions:
        inst = parse_instruction(node, file)
        if isinstance(inst, FromInstruction):
            stages.append(Stage(len(stages), inst))
        elif not stages:
            if isinstance(inst, ArgInstruction):
                global_args.append(inst)
            else:
                raise DockerfileError("no build stage in current context", file=file, line=node.start_line,
                                      column=node.column, end_line=node.end_line)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        last = raw.instructions[-1]
        raise DockerfileError("no build stage in current context", file=file, line=last.start_line,
                              column=last.column, end_line=last.end_line)
    return Dockerfile(stages, global_args, raw.escape, raw.syntax, raw.check, raw.warnings, file)


def parse_instruction(node: RawInstruction, file: str = "Dockerfile") -> Instruction:
    """One raw instruction to its typed form; DockerfileError pointing at the offending word."""
    try:
        return _typed(node)
    except (_FlagError, _Problem, ValueError) as e:
        word = getattr(e, "flag", "") or getattr(e, "word", "")
        line, column = node.locate(word) if word else (node.start_line, node.column)
        raise DockerfileError(str(e), file=file, line=line, column=column, start_line=node.start_line,
                              end_line=node.end_line) from None


def _base(node: RawInstruction) -> dict:
    return dict(name=node.keyword.upper(), original=node.original.strip(), line=node.start_line,
                end_line=node.end_line, column=node.column, comments=list(node.comments))


def _exactly_one(node: RawInstruction, name: str) -> str:
    if len(node.args) != 1:
        raise _Problem(f"{name} requires exactly one argument")
    return node.args[0]


def _at_least_one(node: RawInstruction, name: str) -> None:
    if not node.args:
        raise _Problem(f"{name} requires at least one argument")


def _command_line(node: RawInstruction) -> dict:
    if node.json:
        cmd = list(node.args)
    else:
        cmd = [" ".join(node.args)] if node.args else []
    return dict(cmd=cmd, prepend_shell=not node.json, heredocs=list(node.heredocs))


def _kvps(node: RawInstruction, name: str) -> list[KeyValue]:
    if not node.args:
        raise _Problem(f"{name} requires at least one argument")
    if len(node.args) % 3:
        raise _Problem(f"Bad input to {name}, too many arguments")
    out = []
    for j in range(0, len(node.args), 3):
        k, v, d = node.args[j:j + 3]
        if not k:
            raise _Problem(f"{name} names can not be blank")
        out.append(KeyValue(k, v, d == ""))
    return out


def _sources_and_dest(node: RawInstruction, name: str) -> dict:
    srcs, dest = node.args[:-1], node.args[-1]
    if _must_marker(dest):
        raise _Problem(f"{name} cannot accept a heredoc as a destination", dest)
    bodies = {h.name: h for h in node.heredocs}
    paths, contents = [], []
    for s in srcs:
        m = _must_marker(s)
        if m:
            h = bodies.get(m[0])
            data = h.content if h else ""
            contents.append(SourceContent(m[0], _chomp(data) if m[2] else data, m[1]))
        else:
            paths.append(s)
    return dict(sources=paths, contents=contents, dest=dest, json=node.json)


def _chmod_ok(value: str) -> None:
    # an octal mode; BuildKit also takes a symbolic one (u+x), which Ketch refuses in the octal words
    if value and "$" not in value and not (re.fullmatch(r"[0-7]+", value) and int(value, 8) <= 0o7777):
        raise _Problem(f"invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777",
                       value)


def _typed(node: RawInstruction) -> Instruction:
    kind = node.keyword.lower()
    fl = _Flags(node.flags)
    b = _base(node)
    if kind == "from":
        fl.add_string("platform")
        args = node.args
        stage_name = ""
        if len(args) == 3 and args[1].lower() == "as":
            stage_name = args[2].lower()
            if not _STAGE_NAME.fullmatch(stage_name):
                raise _Problem(f'invalid name for build stage: "{args[2]}", name can\'t start with a number or '
                               f"contain symbols", args[2])
        elif len(args) != 1:
            raise _Problem("FROM requires either one or three arguments")
        fl.parse()
        return FromInstruction(**b, base=args[0], stage_name=stage_name, platform=fl.values["platform"])
    if kind == "run":
        fl.add_strings("mount")
        fl.add_string("network", "default")
        fl.parse()
        specs = fl.lists["mount"]
        mounts = [parse_mount(s, None) for s in specs]
        network = fl.values["network"]
        if network not in ("default", "none", "host"):
            raise _Problem(f'invalid network mode "{network}"', "--network")
        return RunInstruction(**b, **_command_line(node), mounts=mounts, mount_specs=list(specs), network=network,
                              flags_used=list(dict.fromkeys(fl.used)))
    if kind in ("cmd", "entrypoint"):
        fl.parse()
        cls = CmdInstruction if kind == "cmd" else EntrypointInstruction
        return cls(**b, **_command_line(node))
    if kind == "env":
        fl.parse()
        return EnvInstruction(**b, pairs=_kvps(node, "ENV"))
    if kind == "label":
        fl.parse()
        return LabelInstruction(**b, pairs=_kvps(node, "LABEL"))
    if kind == "maintainer":
        m = _exactly_one(node, "MAINTAINER")
        fl.parse()
        return MaintainerInstruction(**b, maintainer=m)
    if kind == "arg":
        _at_least_one(node, "ARG")
        defs = []
        for a in node.args:
            if "=" in a:
                k, _, v = a.partition("=")
                if not k:
                    raise _Problem("ARG names can not be blank", a)
                defs.append(ArgDef(k, v))
            else:
                defs.append(ArgDef(a))
        return ArgInstruction(**b, args=defs)
    if kind == "expose":
        _at_least_one(node, "EXPOSE")
        fl.parse()
        return ExposeInstruction(**b, ports=sorted(node.args))
    if kind in ("copy", "add"):
        if len(node.args) < 2:
            raise _Problem(f"{kind.upper()} requires at least two arguments, but only one was provided. "
                           f"Destination could not be determined")
        fl.add_string("chown")
        fl.add_string("chmod")
        fl.add_bool("link")
        fl.add_strings("exclude")
        fl.add_bool("parents")
        if kind == "copy":
            fl.add_string("from")
        else:
            fl.add_bool("keep-git-dir")
            fl.add_string("checksum")
            fl.add_bool("unpack")
        fl.parse()
        _chmod_ok(fl.values["chmod"])
        common = dict(**b, **_sources_and_dest(node, kind.upper()), chown=fl.values["chown"],
                      chmod=fl.values["chmod"], link=fl.bool("link"), excludes=list(fl.lists["exclude"]))
        if kind == "copy":
            frm = fl.values["from"]
            if frm and Lex(DEFAULT_ESCAPE).process_word(frm, {}).word != frm:
                raise _Problem("variable expansion is not supported for --from, define a new stage with FROM "
                               "using ARG from global scope as a workaround", "--from")
            return CopyInstruction(**common, from_=frm, parents=fl.bool("parents"))
        return AddInstruction(**common, checksum=fl.values["checksum"], parents=fl.bool("parents"),
                              keep_git_dir=fl.bool("keep-git-dir") if "keep-git-dir" in fl.used else None,
                              unpack=fl.bool("unpack") if "unpack" in fl.used else None)
    if kind == "workdir":
        p = _exactly_one(node, "WORKDIR")
        fl.parse()
        return WorkdirInstruction(**b, path=p)
    if kind == "user":
        u = _exactly_one(node, "USER")
        fl.parse()
        return UserInstruction(**b, user=u)
    if kind == "volume":
        _at_least_one(node, "VOLUME")
        fl.parse()
        vols = []
        for v in node.args:
            v = v.strip()
            if not v:
                raise _Problem("VOLUME specified can not be an empty string")
            vols.append(v)
        return VolumeInstruction(**b, volumes=vols)
    if kind == "stopsignal":
        sig = _exactly_one(node, "STOPSIGNAL")
        return StopSignalInstruction(**b, signal=sig)
    if kind == "shell":
        fl.parse()
        cl = _command_line(node)["cmd"]
        if not cl:
            raise _Problem("SHELL requires at least one argument")
        if not node.json:
            raise _Problem("SHELL requires the arguments to be in JSON form")
        return ShellInstruction(**b, shell=cl)
    if kind == "healthcheck":
        return _healthcheck(node, fl, b)
    if kind == "onbuild":
        _at_least_one(node, "ONBUILD")
        fl.parse()
        trigger = node.args[0].strip().upper()
        if trigger == "ONBUILD":
            raise _Problem("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", node.args[0])
        if trigger in ("MAINTAINER", "FROM"):
            raise _Problem(f"{trigger} isn't allowed as an ONBUILD trigger", node.args[0])
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original, count=1)
        for h in node.heredocs:
            expression += "\n" + h.content + h.name
        sub = node.sub
        assert sub is not None
        sub.start_line, sub.end_line, sub.lines = node.start_line, node.end_line, node.lines
        sub.column = node.locate(sub.keyword)[1]
        return OnbuildInstruction(**b, expression=expression, trigger=_typed(sub))
    raise _Problem(_with_suggestion(f"unknown instruction: {node.keyword}", node.keyword, INSTRUCTIONS,
                                    case_sensitive=False), node.keyword)


def _healthcheck(node: RawInstruction, fl: _Flags, b: dict) -> HealthcheckInstruction:
    _at_least_one(node, "HEALTHCHECK")
    typ = node.args[0].upper()
    args = node.args[1:]
    if typ == "NONE":
        if args:
            raise _Problem("HEALTHCHECK NONE takes no arguments")
        return HealthcheckInstruction(**b, test=["NONE"])
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        fl.add_string(name)
    fl.parse()
    if typ != "CMD":
        raise _Problem(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)', node.args[0])
    cmd = list(args) if node.json else ([" ".join(args)] if args else [])
    if not cmd:
        raise _Problem("Missing command after HEALTHCHECK CMD")
    test = (["CMD"] if node.json else ["CMD-SHELL"]) + cmd
    durations: dict[str, int] = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        v = fl.values[name]
        d = 0
        if v:
            try:
                d = go_duration(v)
            except ValueError as e:
                raise _Problem(str(e), "--" + name) from None
            if 0 < d < 1_000_000:
                raise _Problem(f'Interval "{name}" cannot be less than 1ms', "--" + name)
        durations[name.replace("-", "_")] = d
    retries = 0
    if fl.values["retries"]:
        r = fl.values["retries"]
        if not re.fullmatch(r"[+-]?\d+", r):
            raise _Problem(f'strconv.ParseInt: parsing "{r}": invalid syntax', "--retries")
        retries = int(r)
        if retries < 0:
            raise _Problem(f"--retries cannot be negative ({retries})", "--retries")
    return HealthcheckInstruction(**b, test=test, retries=retries, interval=durations["interval"],
                                  timeout=durations["timeout"], start_period=durations["start_period"],
                                  start_interval=durations["start_interval"])


_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10 ** 9, "m": 60 * 10 ** 9,
            "h": 3600 * 10 ** 9}


def go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("1m30s", "500ms", "0"); ValueError in Go's words."""
    s = text
    neg = s.startswith("-")
    if s[:1] in "+-" and s:
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    at = 0
    while at < len(s):
        m = _DURATION_PART.match(s, at)
        if not m:
            if re.match(r"\d*\.?\d*\Z", s[at:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            unit = re.match(r"[\d.]*([^\d.]*)", s[at:])
            if unit and unit.group(1) and re.match(r"[\d.]", s[at:at + 1] or "x"):
                raise ValueError(f'time: unknown unit "{unit.group(1)}" in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        at = m.end()
    return -int(total) if neg else int(total)


_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_SHARING = ("shared", "private", "locked")
_MOUNT_KEYS = ("type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode", "uid",
               "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env")


def _parse_bool(key: str, value: str) -> bool:
    v = value.lower() if value in ("TRUE", "True", "FALSE", "False") else value
    if v in ("1", "t", "T", "true"):
        return True
    if v in ("0", "f", "F", "false"):
        return False
    raise _Problem(f"invalid value for {key}: {value}", value)


def parse_mount(spec: str, expand: Callable[[str], str] | None) -> Mount:
    """One `--mount` value (CSV of key=value) to a Mount, checked as BuildKit checks it.

    With `expand` None (at parse time) a value holding a `$` is left for later: it is checked
    again, expanded, when the instruction is (`RunInstruction.expand`)."""
    try:
        fields = next(csv.reader([spec], strict=True), [])
    except csv.Error as e:
        raise _Problem(f"failed to parse csv mounts: {e}", spec) from None
    m: dict = {"type": "bind"}
    ro_auto = True
    for f in fields:
        key, has_value, value = f.partition("=")
        key = key.lower()
        if not has_value:
            if key in ("readonly", "ro"):
                m["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m["readonly"], ro_auto = False, False
            elif key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise _Problem(f"unexpected key '{key}' for mount type '{m['type']}'", f)
                m["required"] = True
            else:
                raise _Problem(f"invalid field '{f}' must be a key=value pair", f)
            continue
        if expand is not None:
            try:
                value = expand(value)
            except DockerfileError as e:
                raise _Problem(e.reason, f) from None
        elif key == "from" and "$" in value[:-1]:
            raise _Problem(f"'{key}' doesn't support variable expansion, define alias stage instead", f)
        elif "$" in value:
            continue
        if key == "type":
            v = value.lower()
            if v not in _MOUNT_TYPES:
                raise _Problem(_with_suggestion(f'unsupported mount type "{value}"', value, _MOUNT_TYPES,
                                                case_sensitive=True), f)
            m["type"] = v
        elif key == "from":
            m["from_"] = value
        elif key in ("source", "src"):
            m["source"] = value
        elif key in ("target", "dst", "destination"):
            m["target"] = value
        elif key in ("readonly", "ro"):
            m["readonly"], ro_auto = _parse_bool(key, value), False
        elif key in ("readwrite", "rw"):
            m["readonly"], ro_auto = not _parse_bool(key, value), False
        elif key == "required":
            if m["type"] not in ("secret", "ssh"):
                raise _Problem(f"unexpected key '{key}' for mount type '{m['type']}'", f)
            m["required"] = _parse_bool(key, value)
        elif key == "size":
            if m["type"] != "tmpfs":
                raise _Problem(f"unexpected key '{key}' for mount type '{m['type']}'", f)
            try:
                m["size_limit"] = ram_in_bytes(value)
            except ValueError:
                raise _Problem(f"invalid value for {key}: {value}", f) from None
        elif key == "id":
            m["cache_id"] = value
        elif key == "sharing":
            v = value.lower()
            if v not in _SHARING:
                raise _Problem(_with_suggestion(f'unsupported sharing value "{value}"', value, _SHARING,
                                                case_sensitive=True), f)
            m["sharing"] = v
        elif key in ("mode", "uid", "gid"):
            base = 8 if key == "mode" else 10
            try:
                n = int(value, base)
                if n < 0 or n >= 1 << 32 or not value.isdigit():
                    raise ValueError
            except ValueError:
                raise _Problem(f"invalid value {value} for {key}", f) from None
            m[key] = n
        elif key == "env":
            m["env"] = value
        else:
            raise _Problem(_with_suggestion(f"unexpected key '{key}' in '{f}'", key, _MOUNT_KEYS,
                                            case_sensitive=True), f)
    t = m["type"]
    if t not in ("secret", "ssh", "cache"):
        for k in ("mode", "uid", "gid"):
            if m.get(k) is not None:
                raise _Problem(f'{k} not allowed for "{t}" type mounts', spec)
    if ro_auto:
        m["readonly"] = t not in ("cache", "tmpfs")
    if t == "secret":
        if m.get("from_"):
            raise _Problem("secret mount should not have a from", spec)
        if m.get("sharing"):
            raise _Problem("secret mount should not define sharing", spec)
        if not m.get("source") and not m.get("target") and not m.get("cache_id") and expand is not None:
            raise _Problem("invalid secret mount. one of source, target required", spec)
        if m.get("source") and m.get("cache_id"):
            raise _Problem("both source and id can't be set", spec)
    if m.get("sharing") and t != "cache":
        raise _Problem(f"invalid cache sharing set for {t} mount", spec)
    return Mount(**m)


# ---------------------------------------------------------------------------------------------
# step 3: the stages a build runs (the bookkeeping of BuildKit's dockerfile2llb)


def predefined_args(target_platform: str = "linux/amd64", build_platform: str | None = None,
                    target_stage: str = "") -> dict[str, str]:
    """The args every build defines (BuildKit's defaultArgs): BUILD* from the build platform,
    TARGET* from the target platform ("os/arch[/variant]"), TARGETSTAGE the --target (or "default")."""
    build_platform = build_platform or target_platform

    def split(p: str) -> tuple[str, str, str]:
        parts = (p.split("/") + ["", ""])[:3]
        return parts[0], parts[1], parts[2]

    bos, barch, bvar = split(build_platform)
    tos, tarch, tvar = split(target_platform)
    return {"BUILDPLATFORM": build_platform, "BUILDOS": bos, "BUILDOSVERSION": "", "BUILDARCH": barch,
            "BUILDVARIANT": bvar, "TARGETPLATFORM": target_platform, "TARGETOS": tos, "TARGETOSVERSION": "",
            "TARGETARCH": tarch, "TARGETVARIANT": tvar, "TARGETSTAGE": target_stage or "default"}


def resolve_global_args(df: Dockerfile, build_args: Mapping[str, str] | None = None,
                        predefined: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values FROM lines see: the predefined args, then each global ARG in order, a build
    arg winning over the default (a default may use the args defined before it)."""
    build_args = build_args or {}
    env = dict(predefined if predefined is not None else predefined_args())
    for k in env:
        if k in build_args:
            env[k] = build_args[k]
    for inst in df.global_args:
        for a in inst.args:
            if a.key in build_args:
                env[a.key] = build_args[a.key]
            elif a.value is not None:
                env[a.key] = Expander(env, df.escape, inst, df.file).word(a.value)
    return env


@dataclass
class PlannedStage:
    stage: Stage
    base_image: str | None              # the image FROM names (expanded), None when it is a stage or scratch
    base_stage: int | None              # the index of the earlier stage FROM names
    platform: str                       # --platform expanded, "" when not given
    needs: set[int] = field(default_factory=set)        # stages this one reads (FROM, COPY --from, --mount from=)
    images: set[str] = field(default_factory=set)       # images COPY --from / --mount from= name directly
    context: str = ""                   # the named context (--build-context) that replaces this stage

    @property
    def scratch(self) -> bool:
        return self.base_image is None and self.base_stage is None


@dataclass
class Plan:
    dockerfile: Dockerfile
    stages: list[PlannedStage]          # every stage, in file order
    target: int                         # the index of the stage the build produces
    order: list[int]                    # the stages the target needs, each after what it needs
    global_args: dict[str, str]         # the values FROM saw
    used_args: set[str] = field(default_factory=set)    # global args FROM lines used

    def independent(self) -> list[list[int]]:
        """`order` in waves: the stages of a wave need only stages of earlier waves (run at once)."""
        done: set[int] = set()
        left = list(self.order)
        waves = []
        while left:
            wave = [i for i in left if self.stages[i].needs <= done]
            waves.append(wave)
            done |= set(wave)
            left = [i for i in left if i not in done]
        return waves


def plan(df: Dockerfile, target: str | None = None, build_args: Mapping[str, str] | None = None,
         predefined: Mapping[str, str] | None = None, contexts: Iterable[str] = ()) -> Plan:
    """The stages a build runs for `target` (the last stage when None), checked as BuildKit checks them.
    `contexts`: the names of the build's named contexts (in `oci.reference.shortest`'s form, which a
    stage's name already has); a stage of the same name is replaced by its context (BuildKit's rule):
    its FROM and instructions are not run, and a `--from` naming it reads the context."""
    contexts = set(contexts)
    env = resolve_global_args(df, build_args, predefined)
    planned: list[PlannedStage] = []
    by_name: dict[str, int] = {}
    used: set[str] = set()

    def fail(msg: str, inst: Instruction) -> DockerfileError:
        return DockerfileError(msg, file=df.file, line=inst.line, column=inst.column, end_line=inst.end_line)

    for st in df.stages:
        ex = Expander(env, df.escape, st.from_, df.file)
        base = ex.word(st.from_.base)
        if not base:
            raise fail(f"base name ({st.from_.base}) should not be blank", st.from_)
        platform = ""
        if st.from_.platform:
            platform = ex.word(st.from_.platform)
            if not platform:
                raise fail(f"empty platform value from expression {st.from_.platform}", st.from_)
        used |= ex.used
        if st.name and st.name in contexts:
            ps = PlannedStage(dataclasses.replace(st, instructions=[]), st.name, None, "", context=st.name)
        elif base in by_name:
            ps = PlannedStage(st, None, by_name[base], platform, {by_name[base]})
        elif base.lower() == SCRATCH:
            ps = PlannedStage(st, None, None, platform)
        else:
            ps = PlannedStage(st, base, None, platform)
        planned.append(ps)
        if st.name:
            by_name[st.name] = st.index

    names = {st.name: st.index for st in df.stages if st.name and st.name not in contexts}
    for ps in planned:
        for inst in ps.stage.instructions:
            for ref in _stage_refs(inst):
                if ref.isdigit():
                    if int(ref) >= len(planned):
                        raise fail(f"invalid stage index {int(ref)}", inst)
                    ps.needs.add(int(ref))
                elif ref.lower() in names:
                    ps.needs.add(names[ref.lower()])
                else:
                    ps.images.add(ref)
    _check_cycles(planned, df)

    if target is None:
        t = len(planned) - 1
    else:
        try:
            t = df.stage(target.lower()).index if not target.isdigit() else -1
        except KeyError:
            t = -1
        if t < 0:
            every = {st.name: st.index for st in df.stages if st.name}
            raise DockerfileError(_with_suggestion(f'target stage "{target}" could not be found', target, every,
                                                   case_sensitive=True), file=df.file)
    order: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        if i in seen:
            return
        seen.add(i)
        for j in sorted(planned[i].needs):
            visit(j)
        order.append(i)

    visit(t)
    for i in order:       # BuildKit dispatches in file order: a stage read must come earlier
        for inst in planned[i].stage.instructions:
            for ref in _stage_refs(inst):
                j = int(ref) if ref.isdigit() else names.get(ref.lower())
                if j is None or j < i:
                    continue
                label = planned[i].stage.label
                if isinstance(inst, CopyInstruction):
                    raise fail(f'cannot copy from stage "{ref}", it needs to be defined before current stage '
                               f'"{label}"', inst)
                target_path = next((m.target for m in getattr(inst, "mounts", []) if m.from_ == ref), "")
                raise fail(f'cannot mount from stage "{ref}" to "{target_path}", stage needs to be defined before '
                           f'current command', inst)
    return Plan(df, planned, t, order, env, used)


def _stage_refs(inst: Instruction) -> list[str]:
    """What COPY --from and RUN --mount=from= name: a stage name, a stage index or an image."""
    if isinstance(inst, CopyInstruction) and inst.from_:
        return [inst.from_]
    if isinstance(inst, RunInstruction):
        return [m.from_ for m in inst.mounts if m.from_]
    return []


def parse_triggers(expressions: Iterable[str], file: str = "Dockerfile") -> list[Instruction]:
    """A base image's OnBuild triggers (its config's `OnBuild`), typed: run first in the child build."""
    out = []
    for expr in expressions:
        raw = parse_text(expr, file)
        if len(raw.instructions) != 1:
            raise DockerfileError("onbuild trigger should be a single expression", file=file)
        out.append(parse_instruction(raw.instructions[0], file))
    return out


def _check_cycles(planned: list[PlannedStage], df: Dockerfile) -> None:
    state: dict[int, int] = {}

    def visit(i: int) -> bool:
        if state.get(i) == 1:
            return True
        if state.get(i) == 2:
            return False
        state[i] = 1
        for j in planned[i].needs:
            if visit(j):
                return True
        state[i] = 2
        return False

    for ps in planned:
        if visit(ps.stage.index):
            f = ps.stage.from_
            raise DockerfileError(f"circular dependency detected on stage: {ps.stage.label}", file=df.file,
                                  line=f.line, column=f.column, end_line=f.end_line)
