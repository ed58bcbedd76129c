"""ketchd dies (kill -9) or stops (SIGTERM); containers live on under conmon; the next ketchd picks them up."""

import os
import signal
import time

from tests.engine.daemon import daemon_fixture, wait_for

ketchd = daemon_fixture()


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill9_and_restart_keeps_containers_and_logs(ketchd):
    ketchd.docker("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
                  "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done")
    ketchd.docker("run", "-d", "--name", "ender", "busybox", "sh", "-c", "sleep 1; exit 7")
    ketchd.docker("run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "600")
    wait_for(lambda: "tick-2" in ketchd.docker("logs", "ticker").stdout)
    pid = int(ketchd.docker("inspect", "-f", "{{.State.Pid}}", "ticker").stdout)
    always_pid = int(ketchd.docker("inspect", "-f", "{{.State.Pid}}", "always").stdout)
    before = ketchd.docker("logs", "ticker").stdout.split()

    ketchd.kill9()
    time.sleep(2)  # "ender" exits and "ticker" keeps writing while no daemon runs
    assert _pid_alive(pid) and _pid_alive(always_pid)
    ketchd.start()

    ps = ketchd.docker("ps", "--format", "{{.Names}}").stdout.split()
    assert "ticker" in ps and "always" in ps and "ender" not in ps
    assert ketchd.docker("inspect", "-f", "{{.State.Pid}}", "ticker").stdout.strip() == str(pid)
    assert ketchd.docker("inspect", "-f", "{{.State.Pid}}", "always").stdout.strip() == str(always_pid)
    st = ketchd.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "ender").stdout.split()
    assert st == ["exited", "7"]
    after = ketchd.docker("logs", "ticker").stdout.split()
    n_before = int(before[-1].split("-")[1])
    n_after = int(after[-1].split("-")[1])
    assert n_after >= n_before + 5  # lines written while ketchd was down are there
    assert after == [f"tick-{i}" for i in range(n_after + 1)]  # and nothing is lost or doubled
    # the re-attached container is still fully managed: exec, stop, exit code
    assert ketchd.docker("exec", "ticker", "echo", "hi").stdout == "hi\n"
    ketchd.docker("stop", "-t", "1", "ticker")
    assert ketchd.docker("inspect", "-f", "{{.State.Status}}", "ticker").stdout.strip() == "exited"
    assert not _pid_alive(pid)
    for name in ("ticker", "ender", "always"):
        ketchd.docker("rm", "-f", name)


def test_sigterm_leaves_containers_running_and_exit_is_seen_after(ketchd):
    ketchd.docker("run", "-d", "--name", "survivor", "busybox", "sh", "-c", "echo up; sleep 1.5; echo down; exit 3")
    wait_for(lambda: "up" in ketchd.docker("logs", "survivor").stdout)
    pid = int(ketchd.docker("inspect", "-f", "{{.State.Pid}}", "survivor").stdout)
    ketchd.stop(signal.SIGTERM)
    assert not os.path.exists(ketchd.socket)
    assert _pid_alive(pid)
    time.sleep(2)
    ketchd.start()
    wait_for(lambda: ketchd.docker("inspect", "-f", "{{.State.Status}}", "survivor").stdout.strip() == "exited")
    assert ketchd.docker("inspect", "-f", "{{.State.ExitCode}}", "survivor").stdout.strip() == "3"
    assert ketchd.docker("logs", "survivor").stdout == "up\ndown\n"
    events = ketchd.docker("events", "--since", "0", "--until", str(int(time.time()) + 1), "--filter",
                           "container=survivor", "--format", "{{.Action}}").stdout.split()
    assert "die" in events
    ketchd.docker("rm", "survivor")


def test_exec_running_across_a_restart_reports_its_exit_code(ketchd):
    ketchd.docker("run", "-d", "--name", "ex", "busybox", "sleep", "60")
    _, ex = ketchd.json("POST", "/containers/ex/exec", {"Cmd": ["sh", "-c", "sleep 1.5; exit 6"]}, expect=201)
    assert ketchd.request("POST", f"/exec/{ex['Id']}/start", {"Detach": True})[0] == 200
    _, info = ketchd.json("GET", f"/exec/{ex['Id']}/json", expect=200)
    assert info["Running"] and info["Pid"] > 0
    ketchd.kill9()
    ketchd.start()
    _, info = ketchd.json("GET", f"/exec/{ex['Id']}/json", expect=200)
    assert info["Running"]
    wait_for(lambda: ketchd.json("GET", f"/exec/{ex['Id']}/json")[1]["ExitCode"] == 6)
    ketchd.docker("rm", "-f", "ex")


def test_follow_ends_when_container_stops(ketchd):
    ketchd.docker("run", "-d", "--name", "fl", "busybox", "sh", "-c", "for i in 1 2 3; do echo n$i; sleep 0.3; done")
    r = ketchd.docker("logs", "-f", "fl", timeout=30)
    assert r.stdout == "n1\nn2\nn3\n"
    ketchd.docker("rm", "fl")


def test_second_daemon_on_same_data_root_refuses(ketchd):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--config-file", "/nonexistent", "--data-root",
                        ketchd.data_root, "--exec-root", ketchd.exec_root + "-2", "--group", ""],
                       capture_output=True, text=True, timeout=30, cwd=os.path.dirname(os.path.dirname(
                           os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 1 and "another ketchd uses this data root" in r.stderr
    import shutil
    shutil.rmtree(ketchd.exec_root + "-2", ignore_errors=True)


def _procs_in_cgroup(cgroup_parent: str, cid: str) -> list[int]:
    """Processes whose cgroup names this container (any hierarchy): what a dead start must not leave."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if f"{cgroup_parent}/{cid}" in text:
            out.append(int(name))
    return out


def test_kill9_during_run_leaves_nothing_half_made(ketchd):
    """kill -9 of ketchd at moments inside `docker run -d`: after each restart every container is
    either running (and managed) or stopped with no process, no runtime state and no monitor."""
    import subprocess
    runtime_root = os.path.join(ketchd.exec_root, "runtime")
    for i, delay in enumerate((0.02, 0.05, 0.08, 0.11, 0.14, 0.17, 0.2, 0.25)):
        p = subprocess.Popen(["docker", "-H", ketchd.host, "run", "-d", "--label", "k9=1", "busybox", "sleep", "300"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        ketchd.kill9()
        p.wait(30)
        ketchd.start()
        rows = ketchd.docker("ps", "-a", "--no-trunc", "--filter", "label=k9=1",
                             "--format", "{{.ID}} {{.State}}").stdout.split("\n")
        states = dict(r.split() for r in rows if r.strip())
        left = sorted(os.listdir(runtime_root)) if os.path.isdir(runtime_root) else []
        for cid, state in states.items():
            if state == "running":
                assert cid in left
                continue
            assert state in ("created", "exited"), (i, cid, state)
            assert cid not in left, (i, cid, state)
            assert wait_for(lambda cid=cid: not _procs_in_cgroup(ketchd.cgroup_parent, cid), timeout=10), (i, cid)
        assert set(left) <= set(states), (i, left)
        assert not [d for d in os.listdir(os.path.join(ketchd.data_root, "containers"))
                    if not os.path.exists(os.path.join(ketchd.data_root, "containers", d, "container.json"))]
    # what is left is fully usable: the stopped ones start, and everything can be removed
    ids = ketchd.docker("ps", "-aq", "--no-trunc", "--filter", "label=k9=1").stdout.split()
    for cid in ids:
        ketchd.docker("start", cid)
        assert ketchd.docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
    if ids:                             # a kill can land before any container is recorded, every time
        ketchd.docker("rm", "-f", *ids)
    assert not os.path.isdir(runtime_root) or os.listdir(runtime_root) == []
