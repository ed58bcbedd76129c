"""`.dockerignore`: which files of a build context a build sees, by Docker's exact rules.

Docker's rules are those of moby/patternmatcher and its ignorefile reader, and they differ from
.gitignore's and from fnmatch in ways users rely on: a line starting with `#` is a comment (only
in the first column), lines are trimmed, each pattern is cleaned like a Go path (`./a` is `a`,
`a//b/../c` is `a/c`, a leading `/` is dropped: patterns are always relative to the context
root), `*` and `?` never cross a `/`, `**` crosses any number of directories, `[...]` is a
character class, `\\` escapes, and `!pattern` re-includes what an earlier pattern excluded: the
last pattern that matches decides. A pattern that matches a directory matches everything below
it. Written anew in Python (read from moby/patternmatcher): no Python library implements these
rules (pathspec's gitwildmatch is .gitignore's, which anchors and negates differently).

`PatternMatcher.excluded(path)` says whether a context path is left out;
`PatternMatcher.can_skip_dir(dir)` whether a walk may skip a whole directory: it is excluded and
no `!` exception could re-include anything below it (moby's own walk only compares the
exception's text as a prefix, which misses `!**/keep`; this one goes component by component).
`ignore_file` picks the file: `<Dockerfile>.dockerignore` beside a named Dockerfile wins over the
context's `.dockerignore`, as BuildKit does.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator

from ketch.errors import InvalidArgument

__all__ = ["read_patterns", "clean", "Pattern", "PatternMatcher", "ignore_file", "load", "walk"]


def clean(path: str) -> str:
    """Go's path.Clean: "" is ".", slashes folded, `.` and `..` resolved lexically."""
    if not path:
        return "."
    p = posixpath.normpath(path)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def read_patterns(text: str | bytes) -> list[str]:
    """The patterns of a .dockerignore's text, as moby's ignorefile.ReadAll gives them."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


_ESCAPE = set(".+()|{}$")


class Pattern:
    """One pattern, compiled once: exact, prefix (`a/**`), suffix (`**/a`) or a regular expression."""

    def __init__(self, text: str, exclusion: bool = False) -> None:
        self.text = text
        self.exclusion = exclusion
        self.dirs = text.split("/")
        self.kind, self.regex = self._compile(text)

    def __repr__(self) -> str:
        return f"Pattern({'!' if self.exclusion else ''}{self.text})"

    @staticmethod
    def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
        rx = ["^"]
        kind = "exact"
        i, n = 0, len(pattern)
        first = True
        while i < n:
            ch = pattern[i]
            i += 1
            if ch == "*":
                if i < n and pattern[i] == "*":
                    i += 1
                    if i < n and pattern[i] == "/":
                        i += 1
                    if i >= n:
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            rx.append(".*")
                            kind = "regexp"
                    else:
                        rx.append("(.*/)?")
                        kind = "regexp"
                    if first:
                        kind = "suffix"
                else:
                    rx.append("[^/]*")
                    kind = "regexp"
            elif ch == "?":
                rx.append("[^/]")
                kind = "regexp"
            elif ch in _ESCAPE:
                rx.append("\\" + ch)
            elif ch == "\\":
                if i < n:
                    rx.append("\\" + pattern[i])
                    i += 1
                    kind = "regexp"
                else:
                    rx.append("\\\\")
            elif ch in "[]":
                rx.append(ch)
                kind = "regexp"
            else:
                rx.append(re.escape(ch) if ch in "^" else ch)
            first = False
        if kind != "regexp":
            return kind, None
        rx.append("$")
        try:
            return kind, re.compile("".join(rx), re.S)
        except re.error:
            raise InvalidArgument(f"syntax error in pattern: {pattern}") from None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


class PatternMatcher:
    """The patterns of one .dockerignore, in order; paths are relative to the context, `/`-separated."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        for p in patterns:
            p = p.strip()
            if not p:
                continue
            p = clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise InvalidArgument('illegal exclusion pattern: "!"')
                p = p[1:]
            self.patterns.append(Pattern(p, exclusion))
        self.exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, path: str) -> bool:
        """Whether `path` (a file or a directory) is left out of the context.

        A pattern matches the path itself or any of its parent directories (patternmatcher's
        MatchesOrParentMatches, what the docker CLI and BuildKit use)."""
        path = clean(path)
        if path in (".", "/"):
            return False
        parents = path.split("/")[:-1]
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            hit = pat.match(path) or any(pat.match("/".join(parents[:i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pat.exclusion
        return matched

    def can_skip_dir(self, path: str) -> bool:
        """Whether a walk may leave out the directory `path` and everything below it unread."""
        path = clean(path)
        if not self.excluded(path):
            return False
        comps = path.split("/")
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            ancestors = ["/".join(comps[:i + 1]) for i in range(len(comps))]
            if any(pat.match(a) for a in ancestors):
                continue        # it acts on the directory as on all below: already counted in excluded()
            if _could_match_below(pat, comps):
                return False
        return True


def _could_match_below(pat: Pattern, comps: list[str]) -> bool:
    for i, comp in enumerate(comps):
        if i >= len(pat.dirs):
            return False
        part = pat.dirs[i]
        if "**" in part:
            return True
        try:
            if not Pattern(part).match(comp):
                return False
        except InvalidArgument:
            return True
    return len(pat.dirs) > len(comps)


def ignore_file(context_dir: str, dockerfile: str | None = None) -> str | None:
    """The ignore file a build uses: `<dockerfile>.dockerignore` when it exists, else the
    context's `.dockerignore`, else None."""
    if dockerfile:
        beside = dockerfile + ".dockerignore"
        if os.path.isfile(beside):
            return beside
    default = os.path.join(context_dir, ".dockerignore")
    return default if os.path.isfile(default) else None


def load(context_dir: str, dockerfile: str | None = None) -> PatternMatcher:
    """The matcher of a context directory (an empty one when there is no ignore file)."""
    path = ignore_file(context_dir, dockerfile)
    if path is None:
        return PatternMatcher([])
    with open(path, "rb") as f:
        return PatternMatcher(read_patterns(f.read()))


def walk(root: str, matcher: PatternMatcher) -> Iterator[tuple[str, os.stat_result]]:
    """The context's paths that are not excluded, relative and `/`-separated, parents before
    children, in name order; links are not followed; skippable directories are not read."""
    def visit(rel: str) -> Iterator[tuple[str, os.stat_result]]:
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            p = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if matcher.excluded(p):
                if is_dir and not matcher.can_skip_dir(p):
                    yield from visit(p)
                continue
            yield p, st
            if is_dir:
                yield from visit(p)
    yield from visit("")
