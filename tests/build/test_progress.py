"""`ketch build --progress plain|tty` as BuildKit shows a build, and the errors the build issue lists
(an empty context, a missing `--from` stage, a missing base image, an unused `--build-arg`)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

from tests.build.conftest import api_build, write_tree
from tests.engine.daemon import REPO

DF = "FROM busybox AS base\nRUN echo one && echo two\nFROM base\nCOPY f /f\nRUN false\n"


def test_plain_lines_cached_and_a_failing_run(ketch, tmp_path):
    write_tree(tmp_path, {"Dockerfile": DF.replace("RUN false\n", ""), "f": "x"})
    r = ketch("build", "--progress", "plain", "--no-cache", "-t", "plain:1", str(tmp_path))
    lines = r.stderr.splitlines()
    assert "#1 [base 1/2] FROM busybox" in lines
    assert "#2 [base 2/2] RUN echo one && echo two" in lines
    assert [re.sub(r"^#2 \d+\.\d{3} ", "", x) for x in lines if re.match(r"#2 \d+\.\d{3} ", x)] == ["one", "two"]
    assert re.search(r"^#2 DONE \d+\.\ds$", r.stderr, re.M)
    assert "#4 [stage-1 2/2] COPY f /f" in lines and r.stdout == ""
    r = ketch("build", "--progress", "plain", str(tmp_path))
    assert "#2 CACHED" in r.stderr.splitlines() and "#4 CACHED" in r.stderr.splitlines()
    write_tree(tmp_path, {"Dockerfile": DF.replace("RUN false", "RUN echo before the end; false")})
    r = ketch("build", "--progress", "plain", str(tmp_path), check=False)
    assert r.returncode == 1
    words = 'process "/bin/sh -c echo before the end; false" did not complete successfully: exit code: 1'
    assert f"#5 ERROR: {words}" in r.stderr
    assert re.search(r"^ > \[stage-1 3/3\] RUN echo before the end; false:\n\d+\.\d{3} before the end\n------$",
                     r.stderr, re.M), r.stderr
    assert r.stderr.rstrip().endswith(f"ERROR: failed to solve: {words}")


def test_tty_live_view_on_a_terminal(ketch, tmp_path):
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo live-line && sleep 1\n"})
    main, sub = pty.openpty()
    env = dict(ketch.env, TERM="xterm", COLUMNS="100", LINES="40")
    p = subprocess.Popen([sys.executable, "-m", "ketch.cli.main", "-H", ketch.d.host, "build", "--no-cache",
                          str(tmp_path)], stdin=subprocess.DEVNULL, stdout=sub, stderr=sub, env=env, cwd=REPO)
    os.close(sub)
    out = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=60) == 0
    os.close(main)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))
    assert "[+] Building" in text and "FINISHED" in text, text
    assert re.search(r"=> \[2/2\] RUN echo live-line && sleep 1 +\d+\.\ds", text), text
    assert "=> => # live-line" in text   # the running step's last lines, while it ran


def test_the_errors_the_issue_lists(ketchd, ketch, tmp_path):
    # an empty context: no Dockerfile to read
    (tmp_path / "empty").mkdir()
    r = ketch("build", str(tmp_path / "empty"), check=False)
    assert r.returncode != 0 and "unable to prepare context: the Dockerfile" in r.stderr, r.stderr
    status, msgs = api_build(ketchd, tmp_path / "empty")
    assert status == 400 and msgs[0]["message"] == "Cannot locate specified Dockerfile: Dockerfile"
    # a --from stage that does not exist (read as an image, which is not there either)
    write_tree(tmp_path, {"from/Dockerfile": "FROM busybox\nCOPY --from=nosuch /x /x\n"})
    r = ketch("build", "--progress", "plain", str(tmp_path / "from"), check=False)
    assert r.returncode == 1 and "ERROR: failed to solve: --from=nosuch: no stage of this Dockerfile is named " \
        "'nosuch' (stages: none is named), and the image nosuch is not here and could not be pulled" in r.stderr, \
        r.stderr
    # a base image that is neither here nor pullable
    write_tree(tmp_path, {"base/Dockerfile": "FROM ketch-no-such-image:1\nRUN true\n"})
    r = ketch("build", "--progress", "plain", str(tmp_path / "base"), check=False)
    assert r.returncode == 1 and "ERROR: failed to solve: FROM ketch-no-such-image:1: the base image is not here " \
        "and could not be pulled" in r.stderr, r.stderr
    # an unused --build-arg: a warning, and the build succeeds
    write_tree(tmp_path, {"arg/Dockerfile": "FROM busybox\nARG USED\nRUN echo $USED\n"})
    r = ketch("build", "--progress", "plain", "--build-arg", "USED=1", "--build-arg", "UNUSED=2",
              str(tmp_path / "arg"))
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in r.stderr
