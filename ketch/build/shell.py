"""The Dockerfile's word lexer: quotes, escapes and variable substitution, as BuildKit reads them.

A Dockerfile is not a shell script, but BuildKit's dockerfile frontend (frontend/dockerfile/shell)
gives its words a small shell grammar: single quotes take everything literally, double quotes
keep `$` live and let the escape token quote `"`, `$` and itself, an unquoted escape token quotes
the next character, and `$NAME`, `${NAME}` and the modifiers `:-`, `-`, `:+`, `+`, `:?`, `?`,
`#`, `##`, `%`, `%%`, `/`, `//` substitute from an environment (the stage's ENV and ARGs).
Ketch needs the very same results, because an expanded word is what a cache key is made of and
what lands in the image config, so this follows BuildKit's lexer rule for rule (written anew in
Python; no maintained Python library implements it: `shlex` is POSIX shell, which differs on
escapes, on `${}` modifiers and on the Dockerfile's choice of escape token).

`Lex.process_word` gives the expanded word with its spaces kept (what ENV, LABEL, WORKDIR,
COPY's paths... use); `Lex.process_words` also splits it into words after the expansion (what
EXPOSE uses, and what finds heredoc markers in a line).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Lex", "LexError", "Result", "shell_pattern_regex"]


class LexError(ValueError):
    """A word that does not lex: an unterminated quote, a bad substitution, a `${X:?}` that fired."""


@dataclass
class Result:
    word: str
    words: list[str]
    matched: set[str] = field(default_factory=set)     # variables the word used and that were set
    unmatched: set[str] = field(default_factory=set)   # variables the word used and that were not set


class _Words:
    """Splits the lexer's output into words on unquoted white space (BuildKit's wordsStruct)."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, s: str) -> None:
        self.buf.append(s)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


_SPECIAL_PARAMS = set("@*#?-$!0")


class Lex:
    """One lexer configuration; `process_word`/`process_words` may be called any number of times.

    raw_quotes keeps the quote characters in the output, raw_escapes keeps the escape tokens,
    skip_process_quotes treats quotes as ordinary characters (heredoc bodies), and
    skip_unset_env leaves a reference to an unset variable as it was written.
    """

    def __init__(self, escape_token: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_process_quotes: bool = False, skip_unset_env: bool = False) -> None:
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def process_word(self, word: str, env: Mapping[str, str]) -> Result:
        return _Word(self, word, env).run()

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return _Word(self, word, env).run().words


class _Word:
    def __init__(self, lex: Lex, source: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.s = source
        self.i = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # the scanner: peek and next give None at the end
    def peek(self) -> str | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def next(self) -> str | None:
        if self.i >= len(self.s):
            return None
        ch = self.s[self.i]
        self.i += 1
        return ch

    def run(self) -> Result:
        try:
            word, words = self.stop_on(None, self.raw_escapes)
        except LexError as e:
            raise LexError(f"failed to process {json.dumps(self.s, ensure_ascii=False)}: {e}") from None
        return Result(word, words, self.matched, self.unmatched)

    def getenv(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    def stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            esc = self.lex.escape_token
            quotes = not self.lex.skip_process_quotes
            while self.peek() is not None:
                ch = self.peek()
                if stop is not None and ch == stop:
                    self.next()
                    return "".join(result), words.result()
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch == "<":
                    tmp = self.possible_heredoc()
                    result.append(tmp)
                    words.add_raw(tmp)
                elif quotes and ch == "'":
                    tmp = self.single_quote()
                    result.append(tmp)
                    words.add_raw(tmp)
                elif quotes and ch == '"':
                    tmp = self.double_quote()
                    result.append(tmp)
                    words.add_raw(tmp)
                else:
                    c = self.next()
                    assert c is not None
                    if c == esc:
                        if self.raw_escapes:
                            words.add_raw(c)
                            result.append(c)
                        c = self.next()
                        if c is None:
                            break
                        words.add_raw(c)
                    else:
                        words.add_char(c)
                    result.append(c)
            if stop is not None:
                raise LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.result()
        finally:
            self.raw_escapes = saved

    def single_quote(self) -> str:
        out: list[str] = []
        q = self.next()
        if self.lex.raw_quotes:
            out.append(q or "")
        while True:
            ch = self.next()
            if ch is None:
                raise LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out: list[str] = []
        q = self.next()
        if self.lex.raw_quotes:
            out.append(q or "")
        esc = self.lex.escape_token
        while True:
            p = self.peek()
            if p is None:
                raise LexError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                self.next()
                if self.lex.raw_quotes:
                    out.append('"')
                return "".join(out)
            if p == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            assert ch is not None
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if nxt is None:
                    continue            # an escape at the end of the word is dropped
                if nxt in ('"', "$", esc):
                    ch = self.next()
                    assert ch is not None
            out.append(ch)

    def possible_heredoc(self) -> str:
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        space = []
        while self.peek() in ("\t", "\r", " "):
            space.append(self.next())
        return "<<" + "".join(c for c in space if c)

    def name(self) -> str:
        out: list[str] = []
        while (ch := self.peek()) is not None:
            if not out and ch.isdigit():
                while (d := self.peek()) is not None and d.isdigit():
                    out.append(d)
                    self.next()
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                self.next()
                return ch
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            out.append(ch)
            self.next()
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        skip_unset = self.lex.skip_unset_env
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.getenv(name)
            if not found and skip_unset:
                return "$" + name
            return value
        self.next()
        p = self.peek()
        if p is None:
            raise LexError("syntax error: missing '}'")
        if p in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch is None:
            raise LexError("syntax error: missing '}'")
        chs = ch
        if ch == "}":
            value, found = self.getenv(name)
            if not found and skip_unset:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self.replace(name)
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            if ch is None:
                raise LexError("syntax error: missing '}'")
            chs += ch
        if ch not in "+-?#%":
            raise LexError(f"unsupported modifier ({chs}) in substitution")
        raw = ch in "#%"
        if null_is_unset and raw:
            raise LexError(f"unsupported modifier ({chs}) in substitution")
        try:
            word, _ = self.stop_on("}", raw)
        except LexError:
            if self.peek() is None:
                raise LexError("syntax error: missing '}'") from None
            raise
        value, found = self.getenv(name)
        if skip_unset and not found:
            return "${" + name + chs + word + "}"
        empty = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not found:
                raise LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(ch)
        if greedy:
            word = word[1:]
        if ch == "%":
            return _trim_suffix(word, value, greedy)
        return _trim_prefix(word, value, greedy)

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.stop_on("/", True)
        except LexError:
            if self.peek() is None:
                raise LexError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.stop_on("}", True)
        except LexError:
            if self.peek() is None:
                raise LexError("syntax error: missing '}'") from None
            raise
        value, found = self.getenv(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        rx = _compile(pattern, greedy=True, anchored=False)
        if replace_all:
            return rx.sub(lambda _m: replacement, value)
        m = rx.search(value)
        if m:
            value = value[:m.start()] + replacement + value[m.end():]
        return value


_REGEX_SPECIAL = set("[]{}.+()|^$")


def shell_pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> str:
    """A `${X#pattern}` pattern (`*`, `?`, escapes; no bracket expressions) as a Python regex."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            nxt = pattern[i] if i < len(pattern) else ""
            if nxt in ("}", "/"):        # escaped as part of ${}, not part of the pattern
                continue
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise LexError(f"invalid escape '\\{nxt}'")
            out.append("\\" + nxt)
        elif tok in _REGEX_SPECIAL:
            out.append("\\" + tok)
        else:
            out.append(re.escape(tok) if not tok.isalnum() and tok != "_" else tok)
    return "".join(out)


def _compile(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    try:
        return re.compile(shell_pattern_regex(pattern, greedy=greedy, anchored=anchored), re.S)
    except (LexError, re.error) as e:
        raise LexError(f"invalid pattern ({pattern}) in substitution: {e}") from None


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _compile(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end():] if m else value


def _reverse_pattern(pattern: str) -> str:
    """The pattern backwards, an escape staying in front of the character it escapes."""
    toks: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i != len(pattern) - 1:
            toks.append(pattern[i:i + 2])
            i += 2
        else:
            toks.append(pattern[i])
            i += 1
    return "".join(reversed(toks))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # the shortest (or longest) rightmost match is the leftmost one of the reversed string
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]

