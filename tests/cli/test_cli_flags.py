"""The run/create flags of issue 8 against a private ketchd, checked inside the container or in
inspect: no abbreviated long flags; --add-host, --dns*, --shm-size, --sysctl, --pid/--ipc/--uts,
--device, --device-cgroup-rule, --group-add, --platform."""

import json
import os
import re

import pytest

from tests.cli.test_containers import K, _make_base
from tests.engine.daemon import daemon_fixture

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


@pytest.fixture(scope="module")
def k(ketchd):
    return K(ketchd)


def inspect(k, ref):
    return json.loads(k("inspect", ref).stdout)[0]


def sh(k, *flags, script):
    return k("run", "--rm", *flags, "busybox", "sh", "-c", script).stdout


def test_abbreviated_long_flags_are_refused(k):
    r = k("run", "--rm", "--priv", "busybox", "true", check=False)
    assert r.returncode == 125, r
    assert "unknown flag: --priv" in r.stderr and "See 'ketch run --help'." in r.stderr
    r = k("create", "--pid", "host", "--memo", "6m", "busybox", "true", check=False)
    assert r.returncode == 125 and "unknown flag: --memo" in r.stderr
    r = k("ps", "--al", check=False)          # every command, not only run/create
    assert r.returncode == 125 and "unknown flag: --al" in r.stderr
    assert k("ps", "-a", "-q").stdout == ""   # nothing was created


def test_pid_ipc_uts_host(k):
    out = sh(k, "--pid", "host", "--ipc", "host", "--uts", "host",
             script="for n in pid ipc uts; do readlink /proc/self/ns/$n; done").split()
    assert out == [os.readlink(f"/proc/self/ns/{ns}") for ns in ("pid", "ipc", "uts")]
    own = sh(k, script="readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc; cat /proc/1/comm; true").split()
    assert own[0] != out[0] and own[1] != out[1] and own[2] == "sh"
    c = k("create", "--pid", "host", "--ipc", "shareable", "busybox", "true").stdout.strip()
    hc = inspect(k, c)["HostConfig"]
    assert (hc["PidMode"], hc["IpcMode"]) == ("host", "shareable")
    k("rm", c)
    r = k("run", "--rm", "--pid", "bogus", "busybox", "true", check=False)
    assert r.returncode == 125 and "--pid: invalid PID mode" in r.stderr


def test_add_host_and_dns(k):
    out = sh(k, "--add-host", "db.local:10.1.2.3", "--add-host", "gw=192.168.7.1", "--dns", "9.9.9.9",
             "--dns-search", "corp.example", "--dns-option", "ndots:3", script="cat /etc/hosts; echo ---; "
             "cat /etc/resolv.conf")
    hosts, resolv = out.split("---\n")
    assert [ln.split() for ln in hosts.splitlines() if "db.local" in ln] == [["10.1.2.3", "db.local"]]
    assert [ln.split() for ln in hosts.splitlines() if ln.endswith("gw")] == [["192.168.7.1", "gw"]]
    assert "nameserver 9.9.9.9" in resolv.splitlines()
    assert "search corp.example" in resolv.splitlines() and "options ndots:3" in resolv.splitlines()
    c = k("create", "--add-host", "a:1.2.3.4", "--dns-search", "x.y", "--dns-option", "rotate", "busybox").stdout
    hc = inspect(k, c.strip())["HostConfig"]
    assert hc["ExtraHosts"] == ["a:1.2.3.4"] and hc["DnsSearch"] == ["x.y"] and hc["DnsOptions"] == ["rotate"]
    k("rm", c.strip())
    for flags, text in ((["--add-host", "nocolon"], 'bad format for add-host: "nocolon"'),
                        (["--add-host", "h:notanip"], 'invalid IP address in add-host: "notanip"'),
                        (["--dns", "x.y"], "x.y is not an ip address")):
        r = k("run", "--rm", *flags, "busybox", "true", check=False)
        assert r.returncode == 125 and text in r.stderr, (flags, r.stderr)


def test_shm_size_and_sysctl(k):
    out = sh(k, "--shm-size", "96m", "--sysctl", "kernel.shmmax=123456789",
             "--sysctl", "net.ipv4.ip_unprivileged_port_start=80",
             script="df -k /dev/shm | tail -1; cat /proc/sys/kernel/shmmax "
                    "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    lines = out.splitlines()
    assert lines[0].split()[1] == str(96 * 1024)
    assert lines[1:] == ["123456789", "80"]
    c = k("create", "--shm-size", "1g", "--sysctl", "kernel.shmmax=1", "busybox").stdout.strip()
    hc = inspect(k, c)["HostConfig"]
    assert hc["ShmSize"] == 1 << 30 and hc["Sysctls"] == {"kernel.shmmax": "1"}
    k("rm", c)
    r = k("run", "--rm", "--shm-size", "big", "busybox", "true", check=False)
    assert r.returncode == 125 and 'invalid argument "big" for "--shm-size" flag' in r.stderr
    r = k("run", "--rm", "--sysctl", "kernel.hostname=x", "busybox", "true", check=False)
    assert r.returncode == 125 and "sysctl 'kernel.hostname=x' is not allowed" in r.stderr


def test_group_add(k):
    groups = sh(k, "-u", "65534", "--group-add", "10", "--group-add", "4321", script="id -G").split()
    assert groups[0] == "65534" and {"10", "4321"} <= set(groups)


def test_device_and_device_cgroup_rule(k):
    out = sh(k, "--device", "/dev/zero:/dev/myzero:r", script="ls -l /dev/myzero; head -c 5 /dev/myzero | wc -c")
    lines = out.splitlines()
    assert lines[0].startswith("c") and re.search(r"\b1,\s+5\b", lines[0]), lines
    assert lines[1].strip() == "5"
    c = k("create", "--device", "/dev/zero", "--device", "/dev/null:/dev/n2:rw", "--device-cgroup-rule",
          "b 7:* rwm", "busybox").stdout.strip()
    hc = inspect(k, c)["HostConfig"]
    assert hc["Devices"] == [{"PathOnHost": "/dev/zero", "PathInContainer": "/dev/zero", "CgroupPermissions": "rwm"},
                             {"PathOnHost": "/dev/null", "PathInContainer": "/dev/n2", "CgroupPermissions": "rw"}]
    assert hc["DeviceCgroupRules"] == ["b 7:* rwm"]
    k("rm", c)
    # the rule is what lets a node of a loop device be opened (the default device list has none)
    probe = "mknod /tmp/l b 7 0 && (dd if=/tmp/l of=/dev/null bs=512 count=1 2>&1; echo rc=$?)"
    denied = sh(k, script=probe)
    allowed = sh(k, "--device-cgroup-rule", "b 7:* rwm", script=probe)
    assert "Operation not permitted" in denied, denied
    assert "Operation not permitted" not in allowed, allowed
    for flags, text in ((["--device", "/dev/zero:rel"], "rel is not an absolute path"),
                        (["--device", "/dev/zero:/z:rwx"], "bad mode specified: rwx"),
                        (["--device-cgroup-rule", "c 1:3"], "invalid device cgroup format 'c 1:3'")):
        r = k("run", "--rm", *flags, "busybox", "true", check=False)
        assert r.returncode == 125 and text in r.stderr, (flags, r.stderr)


def test_platform_is_the_create_query(k):
    import platform
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    c = k("create", "--platform", f"linux/{arch}", "busybox", "true").stdout.strip()
    k("rm", c)


def test_platform_of_another_arch_is_refused(k):
    import platform
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    other = "s390x" if arch != "s390x" else "amd64"
    r = k("create", "--pull", "never", "--platform", f"linux/{other}", "busybox", "true", check=False)
    if r.returncode == 0:
        k("rm", r.stdout.strip())
    assert r.returncode == 125 and "does not match the specified platform" in r.stderr, r.stderr


def test_go_templates_against_the_daemon(k, tmp_path):
    share = tmp_path / "m"
    share.mkdir()
    cid = k("run", "-d", "--name", "tpl", "-l", "team=blue", "-v", f"{share}:/data", "--tmpfs", "/scratch",
            "busybox", "sleep", "300").stdout.strip()
    try:
        out = k("inspect", "-f", "{{range .Mounts}}{{.Destination}} {{end}}", "tpl").stdout
        assert sorted(out.split()) == ["/data", "/scratch"]
        assert k("inspect", "-f", "{{if .State.Running}}up{{else}}down{{end}} {{len .Id}} {{.Config.Labels.team}}",
                 "tpl").stdout == "up 64 blue\n"
        assert k("inspect", "-f", '{{index .Config.Labels "team" | upper}} {{json .Config.Cmd}}', "tpl").stdout == \
            'BLUE ["sleep","300"]\n'
        lines = k("ps", "--format", "table {{.ID}}\t{{.Names}}\t{{.Label \"team\"}}").stdout.splitlines()
        assert lines[0].split() == ["CONTAINER", "ID", "NAMES", "team"]
        assert lines[1].split() == [cid[:12], "tpl", "blue"]
        assert k("ps", "--format", '{{.Names}}:{{.Label "team"}}:{{.Label "none"}}').stdout == "tpl:blue:\n"
        assert k("images", "--format", "{{if eq .Repository \"busybox\"}}{{.Tag}}{{end}}").stdout.split() == ["latest"]
        for cmd in (["ps"], ["inspect", "tpl"], ["images"]):
            flag = "-f" if cmd[0] == "inspect" else "--format"
            r = k(*cmd[:1], flag, "{{.ID }", *cmd[1:], check=False)
            assert r.returncode == 1 and r.stdout == "", (cmd, r)
            assert r.stderr.strip() == 'template parsing error: template: :1: unexpected "}" in operand', (cmd, r)
    finally:
        k("rm", "-f", "tpl")
