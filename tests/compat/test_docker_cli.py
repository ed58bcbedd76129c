"""The real docker CLI (DOCKER_HOST=unix://<ketchd socket>) through a whole workflow, and the
same containers seen by `ketch`."""

import json
import os
import subprocess
import sys
import time

from tests.engine.daemon import REPO


def ketch(d, *args):
    return subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", d.host, "--data-root", d.data_root, *args],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)


def test_docker_cli_workflow(ketchd, docker_cli, tmp_path):
    d = docker_cli
    assert d("run", "--rm", "busybox", "echo", "hi").stdout == "hi\n"
    assert d("run", "--rm", "busybox", "sh", "-c", "exit 9", check=False).returncode == 9
    assert d("run", "--rm", "busybox", "nosuch", check=False).returncode == 127
    since = str(int(time.time()) - 1)
    cid = d("run", "-d", "--name", "dk", "busybox", "sh", "-c", "echo started; sleep 300").stdout.strip()
    assert d("ps", "--format", "{{.Names}} {{.State}}").stdout == "dk running\n"
    assert "dk running" in ketch(ketchd, "ps", "--format", "{{.Names}} {{.State}}").stdout  # same daemon
    time.sleep(0.3)
    assert d("logs", "dk").stdout == "started\n"
    assert d("exec", "dk", "sh", "-c", "echo $((2+3))").stdout == "5\n"
    assert json.loads(d("inspect", "dk").stdout)[0]["Id"] == cid
    (tmp_path / "in.txt").write_text("payload\n")
    d("cp", str(tmp_path / "in.txt"), "dk:/tmp/in.txt")
    assert ketch(ketchd, "exec", "dk", "cat", "/tmp/in.txt").stdout == "payload\n"
    d("cp", "dk:/tmp/in.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "payload\n"
    st = d("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "dk").stdout
    assert st == "dk 1\n"
    d("stop", "-t", "1", "dk")
    d("rm", "dk")
    until = str(int(time.time()) + 1)
    acts = d("events", "--since", since, "--until", until, "--filter", "container=dk", "--format",
             "{{.Action}}").stdout.split()
    assert "create" in acts and "start" in acts and "die" in acts and "destroy" in acts
    # a container made by `ketch` is handled by docker
    ketch(ketchd, "run", "-d", "--name", "fromketch", "busybox", "sleep", "300")
    assert "fromketch" in d("ps", "--format", "{{.Names}}").stdout
    d("rm", "-f", "fromketch")
    assert ketch(ketchd, "ps", "-a", "-q").stdout == ""


def test_docker_cli_images_push_pull(ketchd, docker_cli, registry):
    d = docker_cli
    assert "busybox" in d("images", "--format", "{{.Repository}}").stdout.split()
    ref = f"{registry.domain}/compat/bb:1"
    d("tag", "busybox", ref)
    d("push", ref, timeout=120)
    d("rmi", ref)
    assert ref not in ketch(ketchd, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    d("pull", ref, timeout=120)
    # the daemon's pull is in the store `ketch images` (direct mode) reads
    assert ref in ketch(ketchd, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert d("run", "--rm", ref, "echo", "from-registry").stdout == "from-registry\n"
    d("rmi", ref)
