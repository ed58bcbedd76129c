"""The engine's pure parts, without root: the state machine, the restart policy, the mount model,
create validation and the network service's first implementation."""

import os

import pytest

from ketch.engine import mounts, restart, state
from ketch.engine.container import Container, Notes
from ketch.engine.state import Status
from ketch.engine.validate import parse_signal, validate_create, validate_update
from ketch.errors import Internal, InvalidArgument, NotFound
from ketch.network.basic import BasicNetworks
from ketch.network.model import NetworkRequest

# --- state machine -----------------------------------------------------------------------

def test_transitions_written_once_and_enforced():
    assert Status.CREATED.allows(Status.RUNNING)
    assert Status.RUNNING.allows(Status.PAUSED) and Status.PAUSED.allows(Status.RUNNING)
    assert not Status.CREATED.allows(Status.PAUSED)
    assert not Status.EXITED.allows(Status.PAUSED)
    assert not Status.REMOVING.allows(Status.RUNNING)
    with pytest.raises(Internal, match="created -> paused"):
        Status.CREATED.to(Status.PAUSED)
    assert set(state.TRANSITIONS) == set(Status)


def test_predicates():
    assert [s.value for s in Status if s.alive] == ["running", "paused"]
    assert {s.value for s in Status if s.active} == {"running", "paused", "restarting"}
    assert {s.value for s in Status if s.can_start} == {"created", "exited", "dead"}


def _container(tmp_path, status="created"):
    data = {"Id": "c" * 64, "Name": "/x", "State": {"Status": status}, "Config": {}, "HostConfig": {},
            "NetworkSettings": {}, "Ketch": {"image_ref": "busybox", "manual_stop": True, "conmon_pid": 7}}
    return Container(str(tmp_path), data)


def test_set_status_keeps_docker_flags_and_refuses_bad_moves(tmp_path):
    c = _container(tmp_path)
    c.set_status(Status.RUNNING)
    c.set_status(Status.PAUSED)
    assert c.state == {"Status": "paused", "Running": True, "Paused": True, "Restarting": False, "Dead": False}
    with pytest.raises(Internal):
        c.set_status(Status.CREATED)


def test_notes_persist_apart_from_inspect_and_read_old_records(tmp_path):
    c = _container(tmp_path)
    assert c.notes.stopped_by_user is True and c.notes.monitor_pid == 7  # the keys of older records
    c.notes.mounts = [mounts.parse_bind("/srv:/data:ro").to_dict()]
    c.save()
    again = Container.load(str(tmp_path))
    assert again.notes == Notes.from_dict(c.notes.to_dict())
    assert "Ketch" not in again.inspect()
    assert again.inspect()["Mounts"] == [{"Type": "bind", "Source": "/srv", "Destination": "/data", "Mode": "ro",
                                          "RW": False, "Propagation": "rprivate"}]


# --- restart policy ----------------------------------------------------------------------

def test_restart_policy_decisions():
    always, on_failure2 = restart.RestartPolicy("always"), restart.RestartPolicy("on-failure", 2)
    assert restart.should_restart(always, 0, 100, False)
    assert not restart.should_restart(always, 1, 0, True)        # stopped by the user
    assert restart.should_restart(on_failure2, 1, 1, False)
    assert not restart.should_restart(on_failure2, 1, 2, False)  # retries used up
    assert not restart.should_restart(on_failure2, 0, 0, False)
    assert not restart.should_restart(restart.RestartPolicy(), 1, 0, False)


def test_backoff_doubles_to_a_minute_and_resets_after_ten_seconds():
    d = 0.0
    seen = []
    for _ in range(12):
        d = restart.next_backoff(d, 0.5)
        seen.append(d)
    assert seen[:3] == [0.1, 0.2, 0.4] and seen[-1] == restart.BACKOFF_MAX
    assert restart.next_backoff(30.0, 11.0) == restart.BACKOFF_START


def test_restart_policy_parse_errors():
    with pytest.raises(InvalidArgument, match="invalid restart policy 'sometimes'"):
        restart.RestartPolicy.parse({"Name": "sometimes"})
    with pytest.raises(InvalidArgument, match="only be used with 'on-failure'"):
        restart.RestartPolicy.parse({"Name": "always", "MaximumRetryCount": 3})
    with pytest.raises(InvalidArgument, match="cannot be negative"):
        restart.RestartPolicy.parse({"Name": "on-failure", "MaximumRetryCount": -1})


# --- mounts ------------------------------------------------------------------------------

def test_binds_parse_once_into_typed_mounts():
    m = mounts.parse_bind("/host/dir:/in:ro,rshared")
    assert (m.type, m.source, m.target, m.read_only, m.propagation) == ("bind", "/host/dir", "/in", True, "rshared")
    assert m.to_oci() == {"destination": "/in", "type": "bind", "source": "/host/dir",
                          "options": ["rbind", "ro", "rshared"]}
    anon = mounts.parse_bind("/data")
    assert (anon.type, anon.source, anon.target) == ("volume", "", "/data")
    named = mounts.parse_bind("cache:/var/cache:nocopy")
    assert (named.type, named.source, named.nocopy) == ("volume", "cache", True)


@pytest.mark.parametrize("spec,message", [
    ("/a:rel", "mount path must be absolute"), ("/a:/", "destination can't be '/'"),
    ("/a:/b:ro,rw", "invalid mode"), ("/a:/b:bogus", "invalid mode"), ("bad name!:/x", "invalid characters"),
    ("/a:/b:c:d", "invalid volume specification"),
])
def test_bad_binds_name_the_problem(spec, message):
    with pytest.raises(InvalidArgument, match=message):
        mounts.parse_bind(spec)


def test_api_mounts_and_tmpfs(tmp_path):
    b = mounts.parse_api_mount({"Type": "bind", "Source": str(tmp_path), "Target": "/m", "ReadOnly": True,
                                "BindOptions": {"Propagation": "rslave", "NonRecursive": True}})
    assert b.to_oci()["options"] == ["bind", "ro", "rslave"]
    with pytest.raises(InvalidArgument, match="bind source path does not exist"):
        mounts.parse_api_mount({"Type": "bind", "Source": str(tmp_path / "nope"), "Target": "/m"})
    t = mounts.parse_api_mount({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700}})
    assert t.to_oci()["options"] == ["nosuid", "nodev", "noexec", "size=1048576", "mode=700"]
    with pytest.raises(InvalidArgument, match="Source must not be specified"):
        mounts.parse_api_mount({"Type": "tmpfs", "Source": "/x", "Target": "/t"})
    with pytest.raises(InvalidArgument, match="mount type unknown"):
        mounts.parse_api_mount({"Type": "weird", "Target": "/t"})
    tf = mounts.parse_tmpfs("/run", "rw,size=64m")
    assert tf.to_oci()["options"] == ["nosuid", "nodev", "noexec", "size=64m"]
    with pytest.raises(InvalidArgument, match="destination can't be '/'"):
        mounts.parse_tmpfs("/", "")


def test_parse_refuses_duplicates_and_user_mounts_win_over_image_volumes(tmp_path):
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /d"):
        mounts.parse({"Binds": ["/a:/d"], "Tmpfs": {"/d": ""}})
    ms = mounts.parse({"Binds": [f"{tmp_path}:/data"]}, {"/data": {}, "/logs": {}})
    assert [(m.type, m.target, m.origin) for m in ms] == [("bind", "/data", "binds"), ("volume", "/logs", "image")]
    assert mounts.host_paths(ms) == {"/data": str(tmp_path)}
    ms[1].source, ms[1].path = "anon", "/vols/anon/_data"   # what the engine resolves at create
    assert [(m["destination"], m["source"]) for m in mounts.oci_mounts(ms)] == [
        ("/data", str(tmp_path)), ("/logs", "/vols/anon/_data")]


def test_a_volume_is_never_dropped_and_mounts_nest_in_order():
    anon = mounts.parse({"Binds": ["/data/sub:/data/sub"], "Mounts": [{"Type": "volume", "Source": "v",
                                                                        "Target": "/data"}]})
    with pytest.raises(Internal, match="--mount type=volume,target=/data: the volume was not resolved"):
        mounts.oci_mounts(anon)
    anon[1].path = "/vols/v/_data"
    assert [m["destination"] for m in mounts.oci_mounts(anon)] == ["/data", "/data/sub"]
    assert mounts.oci_mounts(anon)[0]["options"] == ["rbind", "rprivate", "rw"]
    assert anon[1].to_inspect() == {"Type": "volume", "Name": "v", "Source": "/vols/v/_data", "Destination": "/data",
                                    "Driver": "local", "Mode": "", "RW": True, "Propagation": ""}


@pytest.mark.parametrize("target", ["/proc/sys", "/proc", "/proc/self/x"])
def test_a_mount_inside_proc_is_refused_as_runc_refuses_it(target):
    with pytest.raises(InvalidArgument, match="cannot be mounted because it is"):
        mounts.parse({"Binds": [f"/x:{target}"]})


def test_proc_files_lxcfs_emulates_and_sys_may_be_covered():
    assert [m.target for m in mounts.parse({"Binds": ["/x:/proc/meminfo", "/sys/fs/cgroup:/sys/fs/cgroup:ro"]})] == [
        "/proc/meminfo", "/sys/fs/cgroup"]


def test_volumes_from_takes_binds_and_volumes_with_the_mode_asked():
    other = mounts.parse({"Binds": ["/h:/h", "v1:/v:ro"], "Tmpfs": {"/t": ""}})
    assert mounts.parse_volumes_from("db:ro") == ("db", "ro") and mounts.parse_volumes_from("db") == ("db", "")
    with pytest.raises(InvalidArgument, match="invalid mode: rx"):
        mounts.parse_volumes_from("db:rx")
    got = mounts.from_container(other, "rw", {"/h"})
    assert [(m.type, m.target, m.read_only, m.origin) for m in got] == [("volume", "/v", False, "from")]
    assert [m.read_only for m in mounts.from_container(other, "", set())] == [False, True]


# --- validation --------------------------------------------------------------------------

def test_validate_create_gives_a_typed_request(tmp_path):
    req = validate_create({"Image": "busybox", "Hostname": "h", "HostConfig": {
        "Binds": [f"{tmp_path}:/d"], "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
        "NetworkMode": "container:web", "PidMode": "container:db", "Dns": ["10.0.0.1"]}})
    assert req.restart == restart.RestartPolicy("on-failure", 2)
    assert req.host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert req.joins == {"network": "web", "pid": "db"}
    assert [m.target for m in req.mounts] == ["/d"]
    assert req.network.mode == "container:web" and req.network.dns == ["10.0.0.1"]


@pytest.mark.parametrize("body,message", [
    ([], "container.CreateRequest"),
    ({"Image": ""}, "Config cannot be empty"),
    ({"Image": "b", "Env": "A=1"}, "cannot unmarshal string into Go struct field ContainerConfigWrapper.Env"),
    ({"Image": "b", "HostConfig": {"Memory": "1g"}}, "HostConfig.Memory of type int64"),
    ({"Image": "b", "HostConfig": {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}}, "AutoRemove"),
    ({"Image": "b", "HostConfig": {"PidMode": "weird"}}, "invalid PID mode"),
    ({"Image": "b", "HostConfig": {"LogConfig": {"Type": "syslog"}}}, "no log driver named 'syslog'"),
    ({"Image": "b", "HostConfig": {"CapAdd": ["NOT_A_CAP"]}}, "invalid capability"),
    ({"Image": "b", "HostConfig": {"Ulimits": [{"Name": "bogus"}]}}, "invalid ulimit type"),
    ({"Image": "b", "StopSignal": "SIGNOPE"}, "Invalid signal"),
    ({"Image": "b", "HostConfig": {"Tmpfs": ["/x"]}}, "HostConfig.Tmpfs"),
])
def test_validate_create_refuses_with_dockers_words(body, message):
    with pytest.raises(InvalidArgument, match=message):
        validate_create(body)


def test_validate_update_and_signals():
    hc = validate_update({"Memory": 1 << 26, "RestartPolicy": {"Name": "always"}}, {"Memory": 0})
    assert hc["Memory"] == 1 << 26 and hc["RestartPolicy"]["Name"] == "always"
    with pytest.raises(InvalidArgument, match="AutoRemove"):
        validate_update({"RestartPolicy": {"Name": "always"}}, {"AutoRemove": True})
    assert parse_signal("SIGTERM") == 15 and parse_signal("kill") == 9 and parse_signal("10") == 10
    with pytest.raises(InvalidArgument):
        parse_signal("65")


# --- the first network service -----------------------------------------------------------

async def _attach(tmp_path, req):
    return await BasicNetworks().attach("c" * 64, req, str(tmp_path), None)


def test_basic_networks(tmp_path):
    import asyncio
    nets = BasicNetworks()
    with pytest.raises(NotFound, match="network backend not found"):
        nets.check(NetworkRequest(mode="backend"))
    nets.check(NetworkRequest(mode="container:x"))
    req = NetworkRequest(mode="none", hostname="box", extra_hosts=["db:10.1.2.3"], dns=["10.0.0.53"],
                         dns_search=["example.test"])
    a = asyncio.run(_attach(tmp_path, req))
    assert a.netns_path is None and not a.host and "none" in a.settings["Networks"]
    assert open(os.path.join(tmp_path, "hostname")).read() == "box\n"
    hosts = open(os.path.join(tmp_path, "hosts")).read()
    assert "127.0.1.1\tbox\n" in hosts and "10.1.2.3\tdb\n" in hosts
    resolv = open(os.path.join(tmp_path, "resolv.conf")).read().splitlines()
    assert "nameserver 10.0.0.53" in resolv and "search example.test" in resolv
    assert not any(line.startswith("nameserver 127.") for line in resolv)
    host = asyncio.run(_attach(tmp_path, NetworkRequest(mode="host", hostname="h")))
    assert host.host and "host" in host.settings["Networks"]


def test_config_volumes_are_anonymous_volumes_the_user_asked_for():
    # the docker CLI sends `-v /data` as Config.Volumes, not as a bind
    ms = validate_create({"Image": "b", "Volumes": {"/data": {}}}).mounts
    assert [(m.type, m.target, m.source, m.origin) for m in ms] == [("volume", "/data", "", "binds")]
    req = validate_create({"Image": "b", "Volumes": {"/data": {}}, "HostConfig": {"Binds": ["/srv:/data"]}})
    assert [(m.type, m.target) for m in req.mounts] == [("bind", "/data")]
    with pytest.raises(InvalidArgument, match="Volumes"):
        validate_create({"Image": "b", "Volumes": ["/data"]})
    with pytest.raises(InvalidArgument, match="VolumesFrom"):
        validate_create({"Image": "b", "HostConfig": {"VolumesFrom": "db"}})


def test_event_image_filter_matches_image_events_by_name_too():
    from ketch.events import make_event, matches
    ev = make_event("image", "tag", "sha256:" + "a" * 64, {"name": "busybox:latest"})
    assert matches(ev, {"image": ["busybox"]}) and matches(ev, {"image": ["sha256:aaaa"]})
    assert not matches(ev, {"image": ["alpine"]})
    cev = make_event("container", "start", "c" * 64, {"image": "busybox:latest", "name": "web"}, "busybox:latest")
    assert matches(cev, {"image": ["busybox"], "container": ["web"]}) and not matches(cev, {"container": ["db"]})


def test_stats_networks_are_the_namespaces_interfaces_but_loopback():
    from ketch.engine import stats
    nets = stats.networks(os.getpid())
    assert "lo" not in nets
    for counters in nets.values():
        assert set(counters) == {"rx_bytes", "rx_packets", "rx_errors", "rx_dropped",
                                 "tx_bytes", "tx_packets", "tx_errors", "tx_dropped"}
    assert stats.networks(2**22 + 12345) == {}   # no such process: nothing, not an error
