""".dockerignore by moby/patternmatcher's rules (ketch/build/dockerignore.py): reading, matching, skipping dirs."""

import os

import pytest

from ketch.build.dockerignore import PatternMatcher, clean, ignore_file, load, read_patterns, walk
from ketch.errors import InvalidArgument


def test_reading_comments_spaces_leading_slash_and_cleaning():
    text = "\ufeff# a comment\n  *.log  \n\n/build\n./docs//old/../new\n! keep.log\n #not a comment\n"
    assert read_patterns(text) == ["*.log", "build", "docs/new", "!keep.log", "#not a comment"]
    assert read_patterns(b"../outside\n/\n") == ["../outside", "/"]


def test_clean_is_go_path_clean():
    assert [clean(p) for p in ("", "a//b", "./a/", "a/../..", "//x", "a/./b/..")] == [".", "a/b", "a", "..", "/x", "a"]


@pytest.mark.parametrize("patterns, path, want", [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),           # * never crosses a /
    (["**/*.log"], "dir/sub/a.log", True),
    (["**/*.log"], "a.log", True),
    (["dir/**"], "dir/x/y", True),
    (["dir/**/z"], "dir/z", True),
    (["dir/**/z"], "dir/a/b/z", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["node_modules"], "node_modules/pkg/index.js", True),   # a directory's pattern covers what is below
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "other", True),
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md", "README*"], "README.md", True),   # the last match decides
    (["docs", "!docs/keep"], "docs/keep/file", False),
    (["docs", "!docs/keep"], "docs/other", True),
    (["\\*literal"], "*literal", True),
    (["\\*literal"], "xliteral", False),
    (["a"], ".", False),
])
def test_matching(patterns, path, want):
    assert PatternMatcher(patterns).excluded(path) is want


def test_bad_patterns_are_refused():
    with pytest.raises(InvalidArgument, match='illegal exclusion pattern: "!"'):
        PatternMatcher(["!"])
    with pytest.raises(InvalidArgument, match="syntax error in pattern"):
        PatternMatcher(["[z-a"]).excluded("x")


def test_a_directory_is_skipped_whole_only_when_no_exception_can_reach_below():
    m = PatternMatcher(["vendor", "build", "!build/keep.txt", "cache", "!**/important"])
    assert m.can_skip_dir("vendor") is False            # !**/important could be below
    m = PatternMatcher(["vendor", "build", "!build/keep.txt", "logs/*", "!logs/x"])
    assert m.can_skip_dir("vendor") is True
    assert m.can_skip_dir("build") is False
    assert m.can_skip_dir("logs/a") is True
    assert m.can_skip_dir("src") is False               # not excluded at all
    assert PatternMatcher(["*", "!src/app"]).can_skip_dir("src") is False
    assert PatternMatcher(["*", "!src/app"]).can_skip_dir("docs") is True


def test_ignore_file_beside_a_named_dockerfile_wins(tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    assert ignore_file(str(ctx)) is None
    (ctx / ".dockerignore").write_text("*.tmp\n")
    assert ignore_file(str(ctx)) == str(ctx / ".dockerignore")
    df = tmp_path / "app.Dockerfile"
    df.write_text("FROM scratch\n")
    assert ignore_file(str(ctx), str(df)) == str(ctx / ".dockerignore")
    (tmp_path / "app.Dockerfile.dockerignore").write_text("*.log\n")
    assert ignore_file(str(ctx), str(df)) == str(tmp_path / "app.Dockerfile.dockerignore")
    assert load(str(ctx), str(df)).excluded("x.log") and not load(str(ctx), str(df)).excluded("x.tmp")


def test_walk_leaves_out_what_is_excluded_and_keeps_exceptions(tmp_path):
    for p in ("src/main.go", "src/main_test.go", "vendor/lib/x.go", "build/out", "build/keep.txt", "README.md"):
        os.makedirs(tmp_path / os.path.dirname(p) if os.path.dirname(p) else tmp_path, exist_ok=True)
        (tmp_path / p).write_text("x")
    m = PatternMatcher(read_patterns("vendor\nbuild\n!build/keep.txt\n**/*_test.go\n"))
    got = [p for p, _st in walk(str(tmp_path), m)]
    assert got == ["README.md", "build/keep.txt", "src", "src/main.go"]
