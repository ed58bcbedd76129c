"""`ketch build --secret` and `RUN --mount=type=secret`: readable in the step, owned and moded as asked,
never in a layer, the history or the config; a required secret that is missing stops the build before
any step. Through `ketch build` (file and environment) and through POST /build's `ketchsecrets`
framing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from urllib.parse import urlencode

from tests.build.conftest import context_tar, stream_text, write_tree
from tests.storage.conftest import image_config

SECRET = "s3cr3t-v4lue-0f-k3tch"

DOCKERFILE = """\
FROM busybox
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-64 > /sum && \\
    stat -c '%a %u %g' /run/secrets/tok > /default
RUN --mount=type=secret,id=tok,target=/etc/app/token,uid=1000,gid=1001,mode=0440 \\
    stat -c '%a %u %g' /etc/app/token > /custom && grep -q k3tch /etc/app/token
USER 1000:1000
RUN --mount=type=secret,id=envtok,target=/tmp/t cat /tmp/t > /dev/null && echo readable > /tmp/ok
USER root
RUN --mount=type=secret,id=optional,target=/tmp/o test ! -e /tmp/o && echo absent > /optional
"""


def _layers_and_history(d, name) -> tuple[list[tuple[str, bytes]], str]:
    status, _, body = d.request("GET", f"/images/{name}/get", timeout=120)
    assert status == 200
    entries = []
    with tarfile.open(fileobj=io.BytesIO(body)) as outer:
        for m in outer.getmembers():
            f = outer.extractfile(m) if m.isfile() else None
            data = f.read() if f is not None else b""
            entries.append((m.name, data))
            if m.isfile() and data[257:262] == b"ustar":   # a layer
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for lm in layer.getmembers():
                        lf = layer.extractfile(lm) if lm.isfile() else None
                        entries.append((lm.name, lf.read() if lf is not None else b""))
    return entries, json.dumps(image_config(d, name))


def test_secret_mounts_are_readable_and_stay_out_of_every_layer(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"ctx/Dockerfile": DOCKERFILE, "tok": SECRET + "\n"})
    ketch.env["ENVTOK"] = "from-the-environment"
    try:
        r = ketch("build", "--progress", "plain", "--no-cache", "-t", "secrets:1",
                  "--secret", f"id=tok,src={tmp_path / 'tok'}", "--secret", "id=envtok,env=ENVTOK",
                  str(tmp_path / "ctx"))
    finally:
        del ketch.env["ENVTOK"]
    assert SECRET not in r.stdout + r.stderr
    out = ketch("run", "--rm", "secrets:1", "cat", "/sum", "/default", "/custom", "/tmp/ok", "/optional").stdout
    assert out.splitlines() == [hashlib.sha256(SECRET.encode() + b"\n").hexdigest(), "400 0 0", "440 1000 1001",
                                "readable", "absent"]
    entries, config = _layers_and_history(ketchd, "secrets:1")
    assert len(entries) > 10
    for name, data in entries:
        assert SECRET.encode() not in data and b"from-the-environment" not in data, name
        assert not name.lstrip("./").startswith(("run/secrets/tok", "etc/app/token", "tmp/t")), name
    assert SECRET not in config and "from-the-environment" not in config
    ls = ketch("run", "--rm", "secrets:1", "sh", "-c", "ls -a /run/secrets /etc/app /tmp 2>&1; true").stdout
    assert "tok" not in ls and "token" not in ls and " t\n" not in ls


def test_secrets_through_the_api_and_a_missing_required_one(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"Dockerfile": "FROM busybox\nRUN --mount=type=secret,id=k,required=true "
                                        "cat /run/secrets/k > /dev/null && echo got-it\n"})
    head = json.dumps({"k": base64.b64encode(b"api-secret").decode()}).encode()
    q = urlencode({"ketchsecrets": len(head), "nocache": 1})
    status, _, body = ketchd.request("POST", "/build?" + q, raw=head + context_tar(tmp_path),
                                     headers={"Content-Type": "application/x-tar"}, timeout=120)
    msgs = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
    assert status == 200 and "got-it" in stream_text(msgs) and "ID" in msgs[-3].get("aux", {}) | msgs[-2].get(
        "aux", {}) | msgs[-1].get("aux", {}), msgs
    # required and not given: refused before any step, in ketch build and in the API
    r = ketch("build", str(tmp_path), check=False)
    assert r.returncode == 1 and "secret k: not found" in r.stderr, r.stderr
    status, _, body = ketchd.request("POST", "/build", raw=context_tar(tmp_path),
                                     headers={"Content-Type": "application/x-tar"}, timeout=120)
    assert status == 400 and "secret k: not found" in json.loads(body)["message"]
    # a --secret whose file is missing is the CLI's error, nothing is sent
    r = ketch("build", "--secret", "id=k,src=/nonexistent/k", str(tmp_path), check=False)
    assert r.returncode == 125 and "open /nonexistent/k" in r.stderr, r.stderr
    # a bad framing is a 400
    status, _, body = ketchd.request("POST", "/build?ketchsecrets=99", raw=b"{}",
                                     headers={"Content-Type": "application/x-tar"}, timeout=60)
    assert status == 400 and "ketchsecrets" in json.loads(body)["message"]


NAMED_USER = """\
FROM busybox
RUN echo 'app:x:1234:2345:app:/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:2345:' >> /etc/group && \\
    echo 'team:x:3456:' >> /etc/group
USER app
RUN --mount=type=secret,id=tok stat -c '%a %u %g' /run/secrets/tok > /tmp/by-name && \\
    cat /run/secrets/tok > /dev/null
USER app:team
RUN --mount=type=secret,id=tok stat -c '%u %g' /run/secrets/tok > /tmp/by-names
USER 1234
RUN --mount=type=secret,id=tok stat -c '%u %g' /run/secrets/tok > /tmp/uid-alone
USER app
RUN --mount=type=secret,id=tok,uid=7,gid=8 stat -c '%u %g' /run/secrets/tok > /tmp/given
"""


def test_a_named_user_owns_its_secret_and_buildx_secret_forms(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"ctx/Dockerfile": NAMED_USER})
    # type=env with src= naming the variable (buildx's form); the value from the CLI's environment
    ketch.env["TOKVAR"] = SECRET
    try:
        ketch("build", "--no-cache", "-t", "secrets:2", "--secret", "id=tok,type=env,src=TOKVAR",
              str(tmp_path / "ctx"))
    finally:
        del ketch.env["TOKVAR"]
    out = ketch("run", "--rm", "secrets:2", "cat", "/tmp/by-name", "/tmp/by-names", "/tmp/uid-alone",
                "/tmp/given").stdout
    # USER app: app's uid and primary gid from the step image's passwd; app:team: the group's gid;
    # a uid alone: its passwd entry's gid (as the step's process gets it); uid=/gid= still win
    assert out.splitlines() == ["400 1234 2345", "1234 3456", "1234 2345", "7 8"], out
    entries, config = _layers_and_history(ketchd, "secrets:2")
    assert all(SECRET.encode() not in data for _, data in entries) and SECRET not in config
    # a user the step image does not have: the step fails with the name, nothing of the secret shown
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nUSER ghost\n"
                                                 "RUN --mount=type=secret,id=tok true\n")
    (tmp_path / "tok").write_text(SECRET)
    r = ketch("build", "--secret", f"id=tok,src={tmp_path / 'tok'}", str(tmp_path / "ctx"), check=False)
    assert r.returncode != 0 and "unable to find user ghost" in r.stderr and SECRET not in r.stderr, r.stderr
    # buildx's refusals: an unknown type, an env= that is not set
    for value, word in (("id=tok,type=ssh", "unsupported secret type"),
                        ("id=tok,env=NOT_SET_ANYWHERE", "NOT_SET_ANYWHERE is not set")):
        r = ketch("build", "--secret", value, str(tmp_path / "ctx"), check=False)
        assert r.returncode == 125 and word in r.stderr, (value, r.stderr)


ENV_SECRET = "env-s3cr3t-0f-k3tch\nsecond line"
ENV_DF = """\
FROM busybox
RUN --mount=type=secret,id=tok,env=TOK printf %s "$TOK" | sha256sum | cut -c1-64 > /sum && \\
    (test ! -e /run/secrets/tok && echo no-file > /nofile) && sleep 4
RUN --mount=type=secret,id=tok,env=TOK,target=/etc/tok,required=true \\
    sh -c 'test "$(cat /etc/tok)" = "$TOK" && echo both > /both'
RUN test -z "$TOK" && echo gone > /gone
"""


def _files_with(base: str, needle: bytes) -> list[str]:
    """Every regular file under ``base`` that holds ``needle``, but the build's secrets tmpfs (the
    secret's one place by design, in memory)."""
    import os
    found = []
    for top, dirs, files in os.walk(base):
        if "/build/tmp/" in top + "/" and os.path.basename(top) == "secrets":
            dirs[:] = []
            continue
        for name in files:
            p = os.path.join(top, name)
            try:
                if not os.path.isfile(p) or os.path.islink(p):
                    continue
                with open(p, "rb") as f:
                    if needle in f.read():
                        found.append(p)
            except OSError:
                continue
    return found


def test_a_secret_as_a_variable_is_on_no_disk(ketchd, ketch, tmp_path):
    import subprocess
    import sys
    import time

    from tests.engine.daemon import REPO
    write_tree(tmp_path, {"ctx/Dockerfile": ENV_DF})
    env = dict(ketch.env, TOKVAR=ENV_SECRET)
    # rm=false: the step containers (their records, bundles and config.json) stay to be read
    build = subprocess.Popen([sys.executable, "-m", "ketch.cli.main", "-H", ketchd.host, "build", "--no-cache",
                              "--rm=false", "--progress", "plain", "-t", "secrets:3", "--secret",
                              "id=tok,env=TOKVAR", str(tmp_path / "ctx")], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kept: list[str] = []
    try:
        deadline = time.monotonic() + 120
        running: list = []
        while not running and time.monotonic() < deadline and build.poll() is None:
            running = ketchd.json("GET", "/containers/json", expect=200)[1]
            time.sleep(0.2)
        assert running, "the first RUN was not seen running"
        # while the step runs with the variable: in no file under the data root, the run root
        # (the runtime's state) or the daemon's log
        assert _files_with(ketchd.base, ENV_SECRET.encode()) == []
        # the scan does read what the step's container left on disk: its bundle's config.json and the
        # runtime's state name the file the variable came from (the annotation), not the value
        named = _files_with(ketchd.base, b"io.github.ketch.runtime.env-file")
        assert any(p.endswith("/bundle/config.json") for p in named), named
        assert any(p.endswith("/state.json") for p in named), named
        out, err = build.communicate(timeout=180)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, err.decode()
    assert ENV_SECRET.encode() not in out + err
    kept = [c["Id"] for c in ketchd.json("GET", "/containers/json?all=1", expect=200)[1]]
    try:
        assert len(kept) == 3
        r = ketch("run", "--rm", "secrets:3", "cat", "/sum", "/nofile", "/both", "/gone").stdout
        assert r.splitlines() == [hashlib.sha256(ENV_SECRET.encode()).hexdigest(), "no-file", "both", "gone"]
        entries, config = _layers_and_history(ketchd, "secrets:3")
        assert all(ENV_SECRET.encode() not in data and b"env-s3cr3t" not in data for _, data in entries)
        assert "env-s3cr3t" not in config
        # after the build, the kept step containers included: nothing on disk has it
        assert _files_with(ketchd.base, b"env-s3cr3t") == []
        inspect = ketch("container", "inspect", *kept).stdout
        assert "env-s3cr3t" not in inspect and "TOK=" not in inspect
    finally:
        for cid in kept:
            ketch("rm", "-f", cid, check=False)
    # a client cannot use the runtime's annotation itself (it could name any host file)
    status, _, body = ketchd.request("POST", "/containers/create", body={
        "Image": "busybox", "Cmd": ["true"],
        "HostConfig": {"Annotations": {"io.github.ketch.runtime.env-file": "/etc/shadow"}}})
    assert status == 400 and "reserved" in json.loads(body)["message"]
