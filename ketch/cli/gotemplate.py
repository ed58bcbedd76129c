"""Go's text/template, as the docker CLI uses it for --format (imported only when a template
needs more than ``{{.Field}}``: ketch/cli/format.py renders those itself).

Supported: text and actions with ``{{- -}}`` trim markers and ``{{/* comments */}}``; field
chains ``.A.B`` (on maps: a missing key is ``<no value>``), ``$``/``$x``/``$x.A``, ``$x :=`` and
``$x =``; pipelines ``a | b``; parenthesised pipelines; string (``"..."``, raw), number, char,
``true``/``false``/``nil`` literals; ``if``/``else if``/``else``/``end``, ``with`` (and ``else
with``), ``range`` (lists, maps in key order, with ``else``, ``$v :=`` and ``$i, $v :=``,
``break``/``continue``); Go's builtins ``and or not len index slice print printf println eq ne
lt le gt ge html js urlquery call`` and docker's ``json join split lower upper title pad
truncate``. Methods of the value (``{{.Label "k"}}``) are the names in its ``TEMPLATE_METHODS``.

Errors carry Go's wording: ``template: :1: unexpected "}" in operand`` (parse) and
``template: :1:3: executing "" at <index .A 5>: error calling index: ...`` (execution).

Kept as one module because the lexer, the parser and the executor share one node model and one
set of Go value rules (truth, printing, comparison); split up they would be imported together
anyway, and only when a template is used.
"""

from __future__ import annotations

import math
import re

from ketch.cli.format import go_str, to_go_json


class TemplateError(Exception):
    """A template that does not parse or does not execute (Go's message)."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# ============================================================================ lexer

# token kinds
TEXT, LDELIM, RDELIM, SPACE, FIELD, DOT, VAR, IDENT, STRING, RAWSTRING, NUMBER, CHAR, BOOL, NIL, PIPE, \
    LPAREN, RPAREN, DECLARE, ASSIGN, COMMA, CHARTOK, COMMENT, EOF, ERROR = range(24)

_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}


class Tok:
    __slots__ = ("kind", "val", "pos", "line")

    def __init__(self, kind, val, pos, line):
        self.kind, self.val, self.pos, self.line = kind, val, pos, line

    def __str__(self):
        k = self.kind
        if k == EOF:
            return "EOF"
        if k == ERROR:
            return self.val
        if k in (IDENT,) and self.val in _KEYWORDS:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_space(c):
    return c in " \t\r\n"


def _is_alnum(c):
    return c == "_" or c.isalnum()


def lex(src: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(src)

    def line_at(p):
        return src.count("\n", 0, p) + 1

    def emit(kind, val, pos):
        toks.append(Tok(kind, val, pos, line_at(pos)))

    def error(msg, pos):
        emit(ERROR, msg, pos)
        emit(EOF, "", n)
        return toks

    while True:
        j = src.find("{{", i)
        if j < 0:
            if i < n:
                emit(TEXT, src[i:], i)
            emit(EOF, "", n)
            return toks
        text_end = j
        after = j + 2
        trim_left = src.startswith("-", after) and after + 1 < n and _is_space(src[after + 1])
        if trim_left:
            while text_end > i and _is_space(src[text_end - 1]):
                text_end -= 1
            after += 2
        if text_end > i:
            emit(TEXT, src[i:text_end], i)
        # a comment: {{/* ... */}}
        k = after
        if src.startswith("/*", k):
            end = src.find("*/", k + 2)
            if end < 0:
                return error("unclosed comment", k)
            k2 = end + 2
            trim_right = False
            if src.startswith(" -}}", k2) or src.startswith("\t-}}", k2) or src.startswith("\n-}}", k2):
                trim_right, k2 = True, k2 + 4
            elif src.startswith("}}", k2):
                k2 += 2
            else:
                return error("comment ends before closing delimiter", k)
            emit(COMMENT, src[k + 2:end], k)
            i = k2
            if trim_right:
                while i < n and _is_space(src[i]):
                    i += 1
            continue
        emit(LDELIM, "{{", j)
        i = after
        depth = 0
        while True:
            # at the right delimiter (or " -}}", which trims the text after it)?
            if src.startswith("}}", i):
                if depth:
                    return error("unclosed left paren", i)
                emit(RDELIM, "}}", i)
                i += 2
                break
            if i + 3 < n + 0 and _is_space(src[i]) and src.startswith("-}}", i + 1):
                if depth:
                    return error("unclosed left paren", i)
                emit(RDELIM, "}}", i + 1)
                i += 4
                while i < n and _is_space(src[i]):
                    i += 1
                break
            if i >= n:
                return error("unclosed action", i)
            c = src[i]
            if _is_space(c):
                s = i
                while i < n and _is_space(src[i]):
                    i += 1
                if src.startswith("-}}", i):
                    i -= 1          # the space before a trim marker belongs to the delimiter
                if i > s:
                    emit(SPACE, src[s:i], s)
                continue
            if c == "=":
                emit(ASSIGN, "=", i)
                i += 1
            elif c == ":":
                if not src.startswith(":=", i):
                    return error("expected :=", i)
                emit(DECLARE, ":=", i)
                i += 2
            elif c == "|":
                emit(PIPE, "|", i)
                i += 1
            elif c == ",":
                emit(COMMA, ",", i)
                i += 1
            elif c == '"':
                s = i
                i += 1
                while True:
                    if i >= n or src[i] == "\n":
                        return error("unterminated quoted string", s)
                    if src[i] == "\\":
                        i += 2
                        continue
                    if src[i] == '"':
                        i += 1
                        break
                    i += 1
                emit(STRING, src[s:i], s)
            elif c == "`":
                e = src.find("`", i + 1)
                if e < 0:
                    return error("unterminated raw quoted string", i)
                emit(RAWSTRING, src[i:e + 1], i)
                i = e + 1
            elif c == "'":
                s = i
                i += 1
                while True:
                    if i >= n or src[i] == "\n":
                        return error("unterminated character constant", s)
                    if src[i] == "\\":
                        i += 2
                        continue
                    if src[i] == "'":
                        i += 1
                        break
                    i += 1
                emit(CHAR, src[s:i], s)
            elif c == "$" or (c == "." and not (i + 1 < n and src[i + 1].isdigit())):
                s = i
                i += 1
                if c == "." and _at_terminator(src, i):
                    emit(DOT, ".", s)
                    continue
                while i < n and _is_alnum(src[i]):
                    i += 1
                if not _at_terminator(src, i):
                    return error(f"bad character {_go_rune(src[i])}", i)
                emit(VAR if c == "$" else FIELD, src[s:i], s)
            elif c in "+-." or c.isdigit():
                m = _NUM.match(src, i)
                e = m.end() if m else i + 1
                if e < n and _is_alnum(src[e]):
                    e += 1
                    text = src[i:e]
                    return error(f'bad number syntax: "{text}"', i)
                text = src[i:e]
                if _number(text) is None:
                    return error(f'bad number syntax: "{text}"', i)
                emit(NUMBER, text, i)
                i = e
            elif _is_alnum(c):
                s = i
                while i < n and _is_alnum(src[i]):
                    i += 1
                if not _at_terminator(src, i):
                    return error(f"bad character {_go_rune(src[i])}", i)
                word = src[s:i]
                emit(BOOL if word in ("true", "false") else NIL if word == "nil" else IDENT, word, s)
            elif c == "(":
                depth += 1
                emit(LPAREN, "(", i)
                i += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    return error("unexpected right paren", i)
                emit(RPAREN, ")", i)
                i += 1
            elif c.isprintable() and ord(c) < 128:
                emit(CHARTOK, c, i)
                i += 1
            else:
                return error(f"unrecognized character in action: {_go_rune(c)}", i)


_NUM = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(\d[\d_]*)?\.?[\d_]*([eE][+-]?\d+)?)")


def _go_rune(c: str) -> str:
    """Go's %#U."""
    cp = ord(c)
    return f"U+{cp:04X} '{c}'" if c.isprintable() else f"U+{cp:04X}"


def _at_terminator(src, i):
    if i >= len(src):
        return True
    c = src[i]
    if _is_space(c) or c in ".,|:()=":
        return True
    return src.startswith("}}", i)


def _number(text: str):
    t = text.replace("_", "")
    try:
        if t.lower().startswith(("0x", "-0x", "+0x")):
            return int(t, 16)
        if t.lower().startswith(("0o", "-0o", "+0o")):
            return int(t, 8)
        if t.lower().startswith(("0b", "-0b", "+0b")):
            return int(t, 2)
        if all(ch.isdigit() for ch in t.lstrip("+-")) and t.lstrip("+-"):
            return int(t)
        return float(t)
    except ValueError:
        return None


# ============================================================================ nodes

class Node:
    pos = 0
    line = 1


class Text(Node):
    def __init__(self, text):
        self.text = text


class Pipe(Node):
    def __init__(self, pos, line, decl, is_assign, cmds):
        self.pos, self.line, self.decl, self.is_assign, self.cmds = pos, line, decl, is_assign, cmds

    def __str__(self):
        s = " | ".join(str(c) for c in self.cmds)
        if self.decl:
            s = ", ".join(self.decl) + (" = " if self.is_assign else " := ") + s
        return s


class Cmd(Node):
    def __init__(self, pos, args):
        self.pos, self.args = pos, args

    def __str__(self):
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


class Action(Node):
    def __init__(self, pos, line, pipe):
        self.pos, self.line, self.pipe = pos, line, pipe


class Branch(Node):
    def __init__(self, kind, pos, line, pipe, body, else_body):
        self.kind, self.pos, self.line, self.pipe, self.body, self.else_body = kind, pos, line, pipe, body, else_body


class BreakNode(Node):
    def __init__(self, pos, line, kind):
        self.pos, self.line, self.kind = pos, line, kind


class Field(Node):
    def __init__(self, pos, names):
        self.pos, self.names = pos, names

    def __str__(self):
        return "." + ".".join(self.names)


class Chain(Node):
    def __init__(self, pos, node, names):
        self.pos, self.node, self.names = pos, node, names

    def __str__(self):
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "." + ".".join(self.names)


class Var(Node):
    def __init__(self, pos, name, names):
        self.pos, self.name, self.names = pos, name, names

    def __str__(self):
        return self.name + "".join("." + n for n in self.names)


class Dot(Node):
    def __init__(self, pos):
        self.pos = pos

    def __str__(self):
        return "."


class Ident(Node):
    def __init__(self, pos, name):
        self.pos, self.name = pos, name

    def __str__(self):
        return self.name


class Const(Node):
    def __init__(self, pos, value, text):
        self.pos, self.value, self.text = pos, value, text

    def __str__(self):
        return self.text


class NilNode(Node):
    def __init__(self, pos):
        self.pos = pos

    def __str__(self):
        return "nil"


# ============================================================================ parser

class _Parser:
    def __init__(self, src: str, funcs: dict):
        self.src = src
        self.toks = lex(src)
        self.i = 0
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.line = 1

    # -- tokens
    def next(self) -> Tok:
        t = self.toks[self.i]
        if self.i < len(self.toks) - 1:
            self.i += 1
        self.line = t.line
        return t

    def backup(self):
        self.i -= 1

    def peek(self) -> Tok:
        return self.toks[self.i]

    def next_non_space(self) -> Tok:
        t = self.next()
        while t.kind == SPACE:
            t = self.next()
        return t

    def peek_non_space(self) -> Tok:
        t = self.next_non_space()
        self.backup()
        return t

    def error(self, msg, line=None):
        raise TemplateError(f"template: :{line or self.line}: {msg}")

    def unexpected(self, tok: Tok, context: str):
        if tok.kind == ERROR:
            self.error(tok.val, tok.line)
        self.error(f"unexpected {tok} in {context}", tok.line)

    # -- structure
    def parse(self) -> list:
        body = []
        while self.peek().kind != EOF:
            if self.peek().kind == ERROR:
                self.unexpected(self.next(), "input")
            node = self.text_or_action()
            if isinstance(node, tuple):   # ("end"|"else", ...)
                self.error(f"unexpected {{{{{node[0]}}}}}")
            if node is not None:
                body.append(node)
        return body

    def item_list(self):
        body = []
        while self.peek_non_space().kind != EOF:
            node = self.text_or_action()
            if isinstance(node, tuple):
                return body, node
            if node is not None:
                body.append(node)
        self.error("unexpected EOF")

    def text_or_action(self):
        t = self.next_non_space()
        if t.kind == TEXT:
            return Text(t.val)
        if t.kind == LDELIM:
            return self.action(t)
        if t.kind == COMMENT:
            return None
        self.unexpected(t, "input")

    def action(self, ldelim: Tok):
        t = self.next_non_space()
        if t.kind == IDENT:
            kw = t.val
            if kw == "end":
                self.expect_rdelim("end")
                return ("end",)
            if kw == "else":
                return self.else_control(t)
            if kw in ("if", "with", "range"):
                return self.branch(kw, t)
            if kw in ("break", "continue"):
                if self.range_depth == 0:
                    self.error(f"{{{{{kw}}}}} outside {{{{range}}}}")
                self.expect_rdelim(kw)
                return BreakNode(t.pos, t.line, kw)
            if kw in ("define", "template", "block"):
                self.error(f"{{{{{kw}}}}} is not supported")
        self.backup()
        tok = self.peek()
        return Action(tok.pos, tok.line, self.pipeline("command", RDELIM))

    def expect_rdelim(self, context):
        t = self.next_non_space()
        if t.kind != RDELIM:
            self.unexpected(t, context)

    def else_control(self, t):
        nxt = self.peek_non_space()
        if nxt.kind == IDENT and nxt.val in ("if", "with"):
            return ("else", nxt.val, t.line)
        self.expect_rdelim("else")
        return ("else", None, t.line)

    def branch(self, kind, t, chained=False):
        marks = len(self.vars)
        pipe = self.pipeline(kind, RDELIM)
        if kind == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_body = None
        if nxt[0] == "else":
            if nxt[1] in ("if", "with") and kind in ("if", "with"):
                if nxt[1] != kind and not (kind == "with" and nxt[1] == "with"):
                    pass
                # {{else if ...}} / {{else with ...}}: a nested branch that shares our {{end}}
                self.next_non_space()  # the keyword
                else_body = [self.branch(nxt[1], t, chained=True)]
            elif nxt[1] is not None:
                self.error(f"unexpected <{nxt[1]}> in else")
            else:
                if kind == "range":
                    self.range_depth += 0
                else_body, end = self.item_list()
                if end[0] != "end":
                    self.error("expected end; found {{else}}")
        del self.vars[marks:]
        return Branch(kind, t.pos, t.line, pipe, body, else_body)

    def pipeline(self, context, end):
        tok = self.peek_non_space()
        decl: list[str] = []
        is_assign = False
        v = self.peek_non_space()
        if v.kind == VAR:
            self.next_non_space()
            after = self.peek()
            nxt = self.next_non_space()
            if nxt.kind in (DECLARE, ASSIGN):
                is_assign = nxt.kind == ASSIGN
                decl.append(v.val)
                if not is_assign:
                    self.vars.append(v.val)
                elif v.val not in self.vars:
                    self.error(f'undefined variable "{v.val}"')
            elif nxt.kind == COMMA and context == "range":
                decl.append(v.val)
                v2 = self.next_non_space()
                if v2.kind != VAR:
                    self.error("range can only initialize variables")
                d = self.next_non_space()
                if d.kind not in (DECLARE, ASSIGN):
                    self.error("expected := or = in range declaration")
                is_assign = d.kind == ASSIGN
                decl.append(v2.val)
                if not is_assign:
                    self.vars += decl
            elif nxt.kind == COMMA:
                self.error(f"too many declarations in {context}")
            else:
                # not a declaration: back up to the variable
                self.i = self.toks.index(v)
                del after
        cmds = []
        while True:
            t = self.next_non_space()
            if t.kind == end:
                if not cmds:
                    self.error(f"missing value for {context}")
                for k, c in enumerate(cmds[1:]):
                    if isinstance(c.args[0], (Const, Dot, NilNode)):
                        self.error(f"non executable command in pipeline stage {k + 2}")
                return Pipe(tok.pos, tok.line, decl, is_assign, cmds)
            if t.kind == IDENT and t.val in _KEYWORDS:
                self.unexpected(t, context)
            if t.kind in (BOOL, CHAR, DOT, FIELD, IDENT, NUMBER, NIL, RAWSTRING, STRING, VAR, LPAREN):
                self.backup()
                cmds.append(self.command())
            else:
                self.unexpected(t, context)

    def command(self):
        t0 = self.peek_non_space()
        args: list = []
        while True:
            self.peek_non_space()
            op = self.operand()
            if op is not None:
                args.append(op)
            t = self.next()
            if t.kind == SPACE:
                continue
            if t.kind in (RDELIM, RPAREN):
                self.backup()
            elif t.kind == PIPE:
                pass
            else:
                self.unexpected(t, "operand")
            break
        if not args:
            self.error("empty command")
        return Cmd(t0.pos, args)

    def operand(self):
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == FIELD:
            names = []
            while self.peek().kind == FIELD:
                names.append(self.next().val[1:])
            if isinstance(node, Field):
                node = Field(node.pos, node.names + names)
            elif isinstance(node, Var):
                node = Var(node.pos, node.name, node.names + names)
            elif isinstance(node, (Const, NilNode)) or (isinstance(node, Dot)):
                self.error(f"unexpected . after term {str(node)!r}".replace("'", '"'))
            else:
                node = Chain(node.pos, node, names)
        return node

    def term(self):
        t = self.next_non_space()
        k = t.kind
        if k == IDENT:
            if t.val in _KEYWORDS:
                self.backup()
                return None
            if t.val not in self.funcs:
                self.error(f'function "{t.val}" not defined')
            return Ident(t.pos, t.val)
        if k == DOT:
            return Dot(t.pos)
        if k == NIL:
            return NilNode(t.pos)
        if k == VAR:
            name, _, rest = t.val.partition(".")
            if name not in self.vars:
                self.error(f'undefined variable "{name}"')
            return Var(t.pos, name, [])
        if k == FIELD:
            return Field(t.pos, [t.val[1:]])
        if k == BOOL:
            return Const(t.pos, t.val == "true", t.val)
        if k == NUMBER:
            return Const(t.pos, _number(t.val), t.val)
        if k == STRING:
            return Const(t.pos, _unquote(t.val, self), t.val)
        if k == RAWSTRING:
            return Const(t.pos, t.val[1:-1], t.val)
        if k == CHAR:
            s = _unquote('"' + t.val[1:-1].replace('"', '\\"') + '"', self)
            if len(s) != 1:
                self.error(f"malformed character constant: {t.val}")
            return Const(t.pos, ord(s), t.val)
        if k == LPAREN:
            return self.pipeline("parenthesized pipeline", RPAREN)
        self.backup()
        return None


def _unquote(lit: str, p: _Parser) -> str:
    body = lit[1:-1]
    out, i = [], 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f",
              "v": "\v", "0": "\0"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                p.error(f"invalid syntax: {lit}")
            i += 2 + width
        elif e in simple:
            out.append(simple[e])
            i += 2
        else:
            p.error(f"invalid syntax: {lit}")
    return "".join(out)


# ============================================================================ Go values

def is_true(v) -> bool:
    """Go's template truth: the zero value of its type is false."""
    if v is None or v is False:
        return False
    if isinstance(v, (int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def go_float(f: float) -> str:
    """fmt's %v for a float64: the shortest digits, %e form for an exponent below -4 or from 6 on."""
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f != f:
        return "NaN"
    if f == 0:
        return "0"
    r = repr(abs(f))
    mant, _, e = r.partition("e")
    ip, _, fp = mant.partition(".")
    if fp == "0":
        fp = ""
    every = ip + fp
    lead = len(every) - len(every.lstrip("0"))
    digits = every.strip("0") or "0"
    dp = len(ip) + int(e or 0) - lead
    exp = dp - 1
    sign = "-" if f < 0 else ""
    if exp < -4 or exp >= max(6, 0):
        return sign + digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + \
            ("e+" if exp >= 0 else "e-") + f"{abs(exp):02d}"
    if dp <= 0:
        return sign + "0." + "0" * -dp + digits
    if len(digits) <= dp:
        return sign + digits + "0" * (dp - len(digits))
    return sign + digits[:dp] + "." + digits[dp:]


def _print_value(v) -> str:
    return "<no value>" if v is None else go_str(v)


def go_json(v) -> str:
    """docker's `json`: json.Marshal without HTML escaping, compact."""
    return to_go_json(v)


def _type_name(v) -> str:
    if v is None:
        return "<nil>"
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}",
            tuple: "[]interface {}", dict: "map[string]interface {}"}.get(type(v), type(v).__name__)


# ---------------------------------------------------------------- printf

def _printf(fmt: str, *args) -> str:
    out, i, ai, n = [], 0, 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        i += 1
        flags = ""
        while i < n and fmt[i] in "+-# 0":
            flags += fmt[i]
            i += 1
        width = ""
        while i < n and fmt[i].isdigit():
            width += fmt[i]
            i += 1
        prec = None
        if i < n and fmt[i] == ".":
            i += 1
            prec = ""
            while i < n and fmt[i].isdigit():
                prec += fmt[i]
                i += 1
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[ai]
        ai += 1
        out.append(_pad(_verb(verb, a, flags, prec), width, flags))
    if ai < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_type_name(a)}={go_str(a)}" for a in args[ai:]) + ")")
    return "".join(out)


def _pad(s, width, flags):
    if not width:
        return s
    w = int(width)
    if "-" in flags:
        return s.ljust(w)
    if "0" in flags and s[:1] in "-+0123456789":
        sign = s[0] if s[0] in "+-" else ""
        return sign + s[len(sign):].rjust(w - len(sign), "0")
    return s.rjust(w)


def _verb(verb, a, flags, prec):
    p = int(prec) if prec else (0 if prec == "" else None)
    if verb in "vs":
        if verb == "s" and not isinstance(a, (str, list, tuple, dict)) and a is not None:
            s = go_str(a)
            if not isinstance(a, (bytes,)):
                return f"%!s({_type_name(a)}={s})"
        s = go_str(a) if a is not None else ("<nil>" if verb == "v" else "%!s(<nil>)")
        return s[:p] if p is not None and verb == "s" else s
    if verb == "q":
        if isinstance(a, str):
            return go_quote(a)
        if isinstance(a, int) and not isinstance(a, bool):
            return "'" + chr(a) + "'"
        return f"%!q({_type_name(a)}={go_str(a)})"
    if verb == "t":
        return ("true" if a else "false") if isinstance(a, bool) else f"%!t({_type_name(a)}={go_str(a)})"
    if verb in "dxXob":
        if isinstance(a, float) and a == int(a) and verb != "d":
            pass
        if isinstance(a, bool) or not isinstance(a, int):
            if isinstance(a, str) and verb in "xX":
                h = a.encode().hex()
                return h.upper() if verb == "X" else h
            return f"%!{verb}({_type_name(a)}={go_str(a)})"
        spec = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        s = format(a, spec)
        if "+" in flags and a >= 0:
            s = "+" + s
        elif " " in flags and a >= 0:
            s = " " + s
        if "#" in flags and verb in "xX":
            s = ("-" if a < 0 else "") + ("0x" if verb == "x" else "0X") + s.lstrip("-")
        return s
    if verb in "feEgG":
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            return f"%!{verb}({_type_name(a)}={go_str(a)})"
        if verb in "gG" and p is None:
            s = go_float(float(a))
            return s.upper() if verb == "G" else s
        s = format(float(a), ("+" if "+" in flags else "") + "." + str(6 if p is None else p) + verb)
        return s
    if verb == "c":
        return chr(a) if isinstance(a, int) else f"%!c({_type_name(a)}={go_str(a)})"
    if verb == "T":
        return _type_name(a)
    return f"%!{verb}({_type_name(a)}={go_str(a)})"


def go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            cp = ord(ch)
            out.append(f"\\x{cp:02x}" if cp < 0x80 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_sprint(*args) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = []
    for k, a in enumerate(args):
        if k and not isinstance(a, str) and not isinstance(args[k - 1], str):
            out.append(" ")
        out.append(go_str(a))
    return "".join(out)


# ---------------------------------------------------------------- functions

class _CallError(Exception):
    pass


def _want(name, args, n):
    if len(args) != n:
        raise TemplateError(f"wrong number of args for {name}: want {n} got {len(args)}")


def _f_len(x):
    if isinstance(x, (str, list, tuple, dict)):
        return len(x.encode() if isinstance(x, str) else x)
    raise _CallError(f"len of type {_type_name(x)}")


def _f_index(item, *keys):
    v = item
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k)
        elif isinstance(v, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise _CallError(f"cannot index slice/array with type {_type_name(k)}")
            if k < 0 or k >= len(v):
                raise _CallError(f"index out of range: {k}")
            v = v[k]
            if isinstance(item, str):
                v = ord(v)
        elif v is None:
            raise _CallError("index of untyped nil")
        else:
            raise _CallError(f"can't index item of type {_type_name(v)}")
    return v


def _f_slice(item, *idx):
    if not isinstance(item, (str, list, tuple)):
        raise _CallError(f"can't slice item of type {_type_name(item)}")
    if len(idx) > 3:
        raise _CallError(f"too many slice indexes: {len(idx)}")
    ints = list(idx)
    for k in ints:
        if not isinstance(k, int) or k < 0 or k > len(item):
            raise _CallError(f"index out of range: {k}")
    if len(ints) >= 2 and ints[0] > ints[1]:
        raise _CallError(f"invalid slice index: {ints[0]} > {ints[1]}")
    return item[slice(*ints[:2])] if ints else item


def _basic_kind(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    return None


def _f_eq(a, *bs):
    if not bs:
        raise _CallError("missing argument for comparison")
    for b in bs:
        ka, kb = _basic_kind(a), _basic_kind(b)
        if ka and kb and ka != kb and "bool" in (ka, kb) or {ka, kb} == {"number", "string"}:
            raise _CallError("incompatible types for comparison")
        if a == b and (a is not None or b is None):
            return True
    return False


def _f_ne(a, b):
    return not _f_eq(a, b)


def _ordered(a, b):
    ka, kb = _basic_kind(a), _basic_kind(b)
    if ka is None or kb is None or ka == "bool" or kb == "bool":
        raise _CallError("invalid type for comparison")
    if ka != kb:
        raise _CallError("incompatible types for comparison")
    return a, b


def _f_lt(a, b):
    a, b = _ordered(a, b)
    return a < b


def _f_le(a, b):
    a, b = _ordered(a, b)
    return a <= b


def _f_gt(a, b):
    a, b = _ordered(a, b)
    return a > b


def _f_ge(a, b):
    a, b = _ordered(a, b)
    return a >= b


def _f_not(a):
    return not is_true(a)


def _str_arg(name, v):
    if not isinstance(v, str):
        raise TemplateError(f"wrong type for value; expected string; got {_type_name(v)}")
    return v


def _f_join(items, sep):
    if items is None:
        return ""
    if not isinstance(items, (list, tuple)):
        raise _CallError(f"wrong type for value; expected []string; got {_type_name(items)}")
    return sep.join(go_str(x) for x in items)


def _f_split(s, sep):
    if sep == "":
        return list(s)
    return s.split(sep)


def _f_title(s):
    """strings.Title: the first letter of each word in upper case, the rest kept."""
    out, prev = [], " "
    for ch in s:
        out.append(ch.upper() if not (prev.isalnum() or prev == "_" or prev == "'") else ch)
        prev = ch
    return "".join(out)


def _f_pad(s, prefix, suffix):
    return s if s == "" else " " * prefix + s + " " * suffix


def _f_truncate(s, n):
    return s if len(s) < n else s[:n]


def _f_html(*args):
    s = go_sprint(*args)
    return s.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;").replace(">", "&gt;") \
        .replace('"', "&#34;").replace("\0", "\uFFFD")


def _f_js(*args):
    s = go_sprint(*args)
    rep = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D",
           "\n": "\\u000A", "\r": "\\u000D", "\t": "\\u0009"}
    return "".join(rep.get(c, c) for c in s)


def _f_urlquery(*args):
    from urllib.parse import quote_plus
    return quote_plus(go_sprint(*args))


def _f_call(fn, *args):
    if not callable(fn):
        raise _CallError(f"non-function of type {_type_name(fn)}")
    return fn(*args)


def _f_println(*args):
    return " ".join(go_str(a) for a in args) + "\n"


FUNCS = {
    "len": _f_len, "index": _f_index, "slice": _f_slice, "eq": _f_eq, "ne": _f_ne, "lt": _f_lt, "le": _f_le,
    "gt": _f_gt, "ge": _f_ge, "not": _f_not, "print": go_sprint, "printf": _printf, "println": _f_println,
    "html": _f_html, "js": _f_js, "urlquery": _f_urlquery, "call": _f_call,
    # docker's (cli/templates.basicFunctions)
    "json": go_json, "join": _f_join, "split": _f_split, "lower": str.lower, "upper": str.upper, "title": _f_title,
    "pad": _f_pad, "truncate": _f_truncate,
    # and/or are special forms (short circuit): evaluated in the executor
    "and": None, "or": None,
}

# parameters that must be strings/ints, for docker's functions (Go checks them by type)
_SIGS = {"join": (None, str), "split": (str, str), "lower": (str,), "upper": (str,), "title": (str,),
         "pad": (str, int, int), "truncate": (str, int), "ne": (None, None), "lt": (None, None), "le": (None, None),
         "gt": (None, None), "ge": (None, None), "not": (None,), "len": (None,), "json": (None,)}
_GO_TYPE = {str: "string", int: "int"}


# ============================================================================ executor

class Template:
    """A parsed template; ``execute(data)`` returns the text."""

    def __init__(self, src: str, funcs: dict | None = None):
        self.src = src
        self.funcs = dict(FUNCS, **(funcs or {}))
        self.body = _Parser(src, self.funcs).parse()

    def execute(self, data) -> str:
        out: list[str] = []
        st = _State(self, out, data)
        st.walk_list(self.body, data)
        return "".join(out)


class _State:
    def __init__(self, tmpl: Template, out: list, data):
        self.t = tmpl
        self.out = out
        self.vars: list[list] = [["$", data]]
        self.node: Node | None = None

    def error(self, msg):
        node = self.node
        pos = getattr(node, "pos", 0)
        line = self.t.src.count("\n", 0, pos) + 1
        col = pos - (self.t.src.rfind("\n", 0, pos) + 1)
        raise TemplateError(f'template: :{line}:{col}: executing "" at <{node}>: {msg}')

    # -- variables
    def push(self, name, value):
        self.vars.append([name, value])

    def set_var(self, name, value):
        for v in reversed(self.vars):
            if v[0] == name:
                v[1] = value
                return
        self.error(f"undefined variable: {name}")

    def var(self, name):
        for v in reversed(self.vars):
            if v[0] == name:
                return v[1]
        self.error(f"undefined variable: {name}")

    # -- walking
    def walk_list(self, nodes, dot):
        for n in nodes:
            self.walk(n, dot)

    def walk(self, n, dot):
        if isinstance(n, Text):
            self.out.append(n.text)
        elif isinstance(n, Action):
            v = self.pipe(n.pipe, dot)
            if not n.pipe.decl:
                self.out.append(_print_value(v))
        elif isinstance(n, Branch):
            mark = len(self.vars)
            if n.kind == "range":
                self.walk_range(n, dot)
            else:
                v = self.pipe(n.pipe, dot)
                if is_true(v):
                    self.walk_list(n.body, v if n.kind == "with" else dot)
                elif n.else_body is not None:
                    self.walk_list(n.else_body, dot)
            del self.vars[mark:]
        elif isinstance(n, BreakNode):
            raise _Break if n.kind == "break" else _Continue

    def walk_range(self, n: Branch, dot):
        self.node = n
        v = self.pipe(n.pipe, dot, declare=False)
        if v is None:
            items = []
        elif isinstance(v, dict):
            items = sorted(v.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
        elif isinstance(v, (list, tuple, str)):
            if isinstance(v, str):
                self.error(f"range can't iterate over {v}")
            items = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            items = [(k, k) for k in range(v)]
        else:
            self.error(f"range can't iterate over {go_str(v)}")
        if not items:
            if n.else_body is not None:
                self.walk_list(n.else_body, dot)
            return
        mark = len(self.vars)
        for key, elem in items:
            del self.vars[mark:]
            decl = n.pipe.decl
            if decl:
                if len(decl) == 1:
                    self._bind(n.pipe, decl[0], elem)
                else:
                    self._bind(n.pipe, decl[0], key)
                    self._bind(n.pipe, decl[1], elem)
            try:
                self.walk_list(n.body, elem)
            except _Continue:
                continue
            except _Break:
                break
        del self.vars[mark:]

    def _bind(self, pipe, name, value):
        if pipe.is_assign:
            self.set_var(name, value)
        else:
            self.push(name, value)

    def pipe(self, p: Pipe, dot, declare=True):
        self.node = p
        value = _NOFINAL
        for c in p.cmds:
            value = self.command(c, dot, value)
        if declare:
            for name in p.decl:
                self._bind(p, name, value)
        return value

    def command(self, c: Cmd, dot, final):
        first = c.args[0]
        self.node = c
        if isinstance(first, Field):
            return self.field_chain(dot, dot, first, first.names, c.args, final)
        if isinstance(first, Chain):
            base = self.arg(first.node, dot)
            return self.field_chain(dot, base, first, first.names, c.args, final)
        if isinstance(first, Ident):
            return self.call_func(first, dot, c.args, final)
        if isinstance(first, Var):
            base = self.var(first.name)
            if first.names:
                return self.field_chain(dot, base, first, first.names, c.args, final)
            self.not_a_function(c.args, final)
            return base
        if isinstance(first, Pipe):
            self.not_a_function(c.args, final)
            return self.pipe(first, dot, declare=False)
        self.not_a_function(c.args, final)
        if isinstance(first, Dot):
            return dot
        if isinstance(first, NilNode):
            self.error("nil is not a command")
        return first.value  # a constant

    def not_a_function(self, args, final):
        if len(args) > 1 or final is not _NOFINAL:
            self.error(f"can't give argument to non-function {args[0]}")

    def arg(self, node, dot):
        self.node = node
        if isinstance(node, Dot):
            return dot
        if isinstance(node, NilNode):
            return None
        if isinstance(node, Const):
            return node.value
        if isinstance(node, Field):
            return self.field_chain(dot, dot, node, node.names, [node], _NOFINAL)
        if isinstance(node, Var):
            base = self.var(node.name)
            return self.field_chain(dot, base, node, node.names, [node], _NOFINAL) if node.names else base
        if isinstance(node, Chain):
            return self.field_chain(dot, self.arg(node.node, dot), node, node.names, [node], _NOFINAL)
        if isinstance(node, Pipe):
            return self.pipe(node, dot, declare=False)
        if isinstance(node, Ident):
            return self.call_func(node, dot, [node], _NOFINAL)
        self.error(f"can't handle {node}")

    def field_chain(self, dot, receiver, node, names, args, final):
        for name in names[:-1]:
            receiver = self.field(dot, name, node, [], _NOFINAL, receiver)
        return self.field(dot, names[-1], node, args, final, receiver)

    def field(self, dot, name, node, args, final, receiver):
        methods = getattr(type(receiver), "TEMPLATE_METHODS", ())
        if name in methods:
            vals = [self.arg(a, dot) for a in args[1:]]
            if final is not _NOFINAL:
                vals.append(final)
            self.node = node
            try:
                return getattr(receiver, name)(*vals)
            except TypeError as e:
                self.error(f"wrong number of args for {name}: {e}")
        has_args = len(args) > 1 or final is not _NOFINAL
        hook = getattr(type(receiver), "template_field", None)
        if hook is not None and not has_args:
            return hook(receiver, name)
        if isinstance(receiver, dict):
            if has_args:
                self.node = node
                self.error(f"{name} is not a method but has arguments")
            return receiver.get(name)
        if receiver is None:
            return None
        self.node = node
        self.error(f"can't evaluate field {name} in type {_type_name(receiver)}")

    def call_func(self, ident: Ident, dot, args, final):
        name = ident.name
        if name in ("and", "or"):
            nodes = list(args[1:])
            if not nodes and final is _NOFINAL:
                self.node = ident
                self.error(f"wrong number of args for {name}: want at least 1 got 0")
            v = None
            for a in nodes:
                v = self.arg(a, dot)
                if is_true(v) != (name == "and"):
                    return v
            if final is not _NOFINAL:
                v = final
            return v
        fn = self.t.funcs[name]
        vals = [self.arg(a, dot) for a in args[1:]]
        if final is not _NOFINAL:
            vals.append(final)
        self.node = ident if len(args) == 1 else _CallNode(ident.pos, args)
        sig = _SIGS.get(name)
        if sig is not None:
            if len(vals) != len(sig):
                self.error(f"wrong number of args for {name}: want {len(sig)} got {len(vals)}")
            for v, want in zip(vals, sig, strict=True):
                if want is not None and v is None:
                    self.error(f"invalid value; expected {_GO_TYPE[want]}")
                if want is not None and (not isinstance(v, want) or isinstance(v, bool)):
                    self.error(f"wrong type for value; expected {_GO_TYPE[want]}; got {_type_name(v)}")
        try:
            return fn(*vals)
        except _CallError as e:
            self.error(f"error calling {name}: {e}")
        except TypeError as e:
            self.error(f"error calling {name}: {e}")


class _CallNode(Node):
    def __init__(self, pos, args):
        self.pos, self.args = pos, args

    def __str__(self):
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


_NOFINAL = object()


_cache: dict[str, Template] = {}


def parse(src: str) -> Template:
    t = _cache.get(src)
    if t is None:
        t = _cache[src] = Template(src)
    return t


def render(src: str, data) -> str:
    return parse(src).execute(data)
