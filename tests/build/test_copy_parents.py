"""COPY --parents / ADD --parents (BuildKit's): each match keeps its path in the source root under
the destination (after a `/./` pivot only what follows it), `**` globs, the parents made 0755 with
the --chown owner; with --exclude, --chown, --chmod and --from; the flag is part of the cache key."""

from __future__ import annotations

import os
import tarfile

from tests.build.conftest import api_build, built_id, stream_text, write_tree
from tests.build.test_copy_links import _layer

DF = """\
FROM busybox AS s
RUN mkdir -p /opt/app/lib && echo lib > /opt/app/lib/l.so && echo other > /opt/app/other
FROM busybox
COPY --parents ./x/**/*.txt /dst/
COPY --parents ./src/./foo/a.txt /pv/
COPY --parents --chown=12:34 --exclude=*.log src/foo /own/
COPY --parents --chmod=0600 x/b/c.txt x/a.txt /m/
COPY --from=s --parents /opt/app/lib/l.so /fromstage/
ADD --parents src/foo/a.txt /add/
"""

FILES = {"x/a.txt": "a\n", "x/b/c.txt": "c\n", "x/b/d.md": "d\n", "x/e/f/g.txt": "g\n",
         "src/foo/a.txt": "foo a\n", "src/foo/skip.log": "log\n", "src/foo/deep/z.txt": "z\n"}


def _kinds(members: dict, top: str) -> dict[str, tuple]:
    """name -> (type, mode, uid, gid) of the layer's entries below ``top``."""
    return {n: h[:4] for n, (h, _) in members.items() if n == top or n.startswith(top + "/")}


D, F = tarfile.DIRTYPE, tarfile.REGTYPE


def test_copy_parents(ketchd, tmp_path):
    write_tree(tmp_path, {"Dockerfile": DF, **FILES})
    os.chmod(tmp_path / "x" / "a.txt", 0o640)
    _, msgs = api_build(ketchd, tmp_path, t="parents:1")
    iid = built_id(msgs)
    layers = [_layer(ketchd, iid, i)[1] for i in range(-6, 0)]
    assert _kinds(layers[0], "dst") == {
        "dst": (D, 0o755, 0, 0), "dst/x": (D, 0o755, 0, 0), "dst/x/a.txt": (F, 0o640, 0, 0),
        "dst/x/b": (D, 0o755, 0, 0), "dst/x/b/c.txt": (F, 0o644, 0, 0), "dst/x/e": (D, 0o755, 0, 0),
        "dst/x/e/f": (D, 0o755, 0, 0), "dst/x/e/f/g.txt": (F, 0o644, 0, 0)}     # x/b/d.md not matched
    assert _kinds(layers[1], "pv") == {"pv": (D, 0o755, 0, 0), "pv/foo": (D, 0o755, 0, 0),
                                       "pv/foo/a.txt": (F, 0o644, 0, 0)}        # below the pivot only
    assert _kinds(layers[2], "own") == {
        "own": (D, 0o755, 12, 34), "own/src": (D, 0o755, 12, 34), "own/src/foo": (D, 0o755, 12, 34),
        "own/src/foo/a.txt": (F, 0o644, 12, 34), "own/src/foo/deep": (D, 0o755, 12, 34),
        "own/src/foo/deep/z.txt": (F, 0o644, 12, 34)}                           # skip.log excluded
    assert _kinds(layers[3], "m") == {"m": (D, 0o755, 0, 0), "m/x": (D, 0o755, 0, 0), "m/x/a.txt": (F, 0o600, 0, 0),
                                      "m/x/b": (D, 0o755, 0, 0), "m/x/b/c.txt": (F, 0o600, 0, 0)}
    assert set(_kinds(layers[4], "fromstage")) == {"fromstage", "fromstage/opt", "fromstage/opt/app",
                                                   "fromstage/opt/app/lib", "fromstage/opt/app/lib/l.so"}
    assert set(_kinds(layers[5], "add")) == {"add", "add/src", "add/src/foo", "add/src/foo/a.txt"}
    assert layers[1]["pv/foo/a.txt"][1] == layers[5]["add/src/foo/a.txt"][1]

    # the cache: unchanged -> every step a hit; a file the globs do not match changes nothing;
    # a matched one makes its steps miss
    _, again = api_build(ketchd, tmp_path)
    assert built_id(again) == iid
    write_tree(tmp_path, {"x/b/d.md": "changed\n"})
    _, again = api_build(ketchd, tmp_path)
    assert built_id(again) == iid
    write_tree(tmp_path, {"x/e/f/g.txt": "changed\n"})
    _, changed = api_build(ketchd, tmp_path)
    assert built_id(changed) != iid and stream_text(changed).count("Using cache") >= 1


def test_parents_flag_in_key(ketchd, tmp_path):
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nCOPY --parents x/a.txt /d/\n", **FILES})
    _, msgs = api_build(ketchd, tmp_path)
    with_flag = built_id(msgs)
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nCOPY x/a.txt /d/\n"})
    _, msgs = api_build(ketchd, tmp_path)
    without = built_id(msgs)
    assert with_flag != without
    assert set(_kinds(_layer(ketchd, without, -1)[1], "d")) == {"d", "d/a.txt"}
    assert set(_kinds(_layer(ketchd, with_flag, -1)[1], "d")) == {"d", "d/x", "d/x/a.txt"}
