"""The Dockerfile word lexer (ketch/build/shell.py): quotes, escapes and every `${}` form, as BuildKit expands them."""

import pytest

from ketch.build.shell import Lex, LexError

ENV = {"HOME": "/root", "EMPTY": "", "NAME": "ketch", "FILE": "archive.tar.gz", "PATHS": "a/b/a/b", "SP": "x  y"}


@pytest.mark.parametrize("word, want", [
    ("plain", "plain"),
    ("$HOME/bin", "/root/bin"),
    ("${HOME}bin", "/rootbin"),
    ("$UNSET-x", "-x"),
    ("a$", "a$"),
    ("$.x", "$.x"),
    ("'$HOME'", "$HOME"),
    ('"$HOME"', "/root"),
    ('"it\'s"', "it's"),
    ("\\$HOME", "$HOME"),
    ('"a\\"b"', 'a"b'),
    ('"a\\tb"', "a\\tb"),          # inside double quotes only " $ and the escape are escaped
    ("a\\tb", "atb"),
    ("end\\", "end"),
    # the modifiers
    ("${UNSET:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${UNSET-def}", "def"),
    ("${NAME:-def}", "ketch"),
    ("${NAME:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:-${NAME:-x}}", "ketch"),
    ("${EMPTY?}", ""),
    ("${FILE#*.}", "tar.gz"),
    ("${FILE##*.}", "gz"),
    ("${FILE%.*}", "archive.tar"),
    ("${FILE%%.*}", "archive"),
    ("${PATHS/a/X}", "X/b/a/b"),
    ("${PATHS//a/X}", "X/b/X/b"),
    ("${PATHS//\\/b/}", "a/a"),     # an escaped / in the pattern
    ("${NAME/k*/K}", "K"),
    ("${UNSET/a/b}", ""),
    # positional and special parameters are never set
    ("$1x", "x"),
    ("${@:-d}", "d"),
])
def test_expansion_matches_buildkit(word, want):
    assert Lex().process_word(word, ENV).word == want


@pytest.mark.parametrize("word, message", [
    ("'open", "unexpected end of statement while looking for matching single-quote"),
    ('"open', "unexpected end of statement while looking for matching double-quote"),
    ("${}", "bad substitution"),
    ("${:-x}", "bad substitution"),
    ("${HOME", "missing '}'"),
    ("${HOME:-x", "missing '}'"),
    ("${HOME:=x}", "unsupported modifier (:=) in substitution"),
    ("${HOME:#x}", "unsupported modifier (:#) in substitution"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${UNSET:?say so}", "UNSET: say so"),
    ("${PATHS/a", "missing '/' in ${}"),
])
def test_lex_errors_in_buildkits_words(word, message):
    with pytest.raises(LexError) as e:
        Lex().process_word(word, ENV)
    assert message in str(e.value)
    assert str(e.value).startswith("failed to process ")


def test_words_split_after_expansion_but_not_inside_quotes():
    lex = Lex()
    assert lex.process_words("a${SP}b", ENV) == ["ax", "yb"]
    assert lex.process_words('a"${SP}"b', ENV) == ["ax  yb"]
    assert lex.process_words("one\\ two three", ENV) == ["one two", "three"]
    assert lex.process_words("80/tcp  443", ENV) == ["80/tcp", "443"]


def test_used_and_unset_variables_are_reported():
    r = Lex().process_word("$HOME ${NOPE:-x} $EMPTY", ENV)
    assert r.matched == {"HOME", "EMPTY"} and r.unmatched == {"NOPE"}


def test_backtick_escape_token():
    lex = Lex("`")
    assert lex.process_word("C:`$HOME", ENV).word == "C:$HOME"
    assert lex.process_word("C:\\dir", ENV).word == "C:\\dir"


def test_skip_unset_keeps_the_reference_and_raw_modes_keep_quotes():
    lex = Lex(skip_unset_env=True)
    assert lex.process_word("$NOPE ${NOPE} ${NOPE:-d} $HOME", ENV).word == "$NOPE ${NOPE} ${NOPE:-d} /root"
    assert Lex(raw_quotes=True).process_word("'a'\"b\"", ENV).word == "'a'\"b\""
    assert Lex(skip_process_quotes=True).process_word("'$HOME'", ENV).word == "'/root'"
