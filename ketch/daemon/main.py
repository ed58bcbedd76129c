"""ketchd: configuration, directories, lock, socket, signals, restore of live containers.

    python -m ketch.daemon [--config-file /etc/ketch/daemon.json] [--data-root DIR]
        [-H unix:///run/ketch/ketch.sock] [--exec-root /run/ketch] [--runtime ketch-runtime|runc]
        [--log-level debug|info|warn|error] [--group ketch] [--cgroup-parent /ketch]
        [--image-service module:factory]

Flags override daemon.json, which overrides the defaults. On SIGTERM or SIGINT ketchd
stops serving and exits; containers keep running under their monitors and are picked up
again by the next ketchd (live restore).
"""

import argparse
import asyncio
import fcntl
import grp
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

DEFAULTS = {
    "data-root": "/var/lib/ketch",
    "exec-root": "/run/ketch",
    "hosts": ["unix:///run/ketch/ketch.sock"],
    "log-level": "info",
    # ketch-runtime once it brings up loopback in a new network namespace as runc does
    "runtime": "ketch-runtime",
    "conmon": "conmon",
    "group": "ketch",
    "cgroup-parent": "/ketch",
    "image-service": "ketch.images.async_service:AsyncImageService",
    "init-path": "",
    "insecure-registries": [],
    # tried in order before docker.io for docker.io pulls (dockerd's registry-mirrors)
    "registry-mirrors": [],
    # seconds a registry may take to accept a connection, and to send the next bytes
    "registry-connect-timeout": 30,
    "registry-read-timeout": 120,
    # networking (Docker's names): the default bridge and its subnet, pools for user networks, ...
    "bridge": "ketch0",
    "bip": "",
    "fixed-cidr": "",
    "fixed-cidr-v6": "",
    "ipv6": False,
    "mtu": 0,
    "ip-forward": True,
    "ip-masq": True,
    "iptables": True,
    "ip": "0.0.0.0",
    "default-address-pools": [],
    "dns": [],
    # Ketch's own: the name of its nftables table
    "firewall-table": "ketch",
    # the log opts of containers that do not set them (json-file/k8s-file): a cap by default
    "log-opts": {"max-size": "20m", "max-file": "3"},
}
CONFIG_FILE = "/etc/ketch/daemon.json"

log = logging.getLogger("ketch.daemon")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, then the record's extra fields."""

    _std = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record):
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
               f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        for k, v in vars(record).items():
            if k not in self._std and not k.startswith("_"):
                out[k] = v if isinstance(v, (int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _pool(text: str) -> dict:
    fields = dict(part.partition("=")[::2] for part in text.split(","))
    if not fields.get("base"):
        raise argparse.ArgumentTypeError(f"invalid address pool {text}: base=CIDR,size=N")
    try:
        return {"base": fields["base"], "size": int(fields.get("size") or fields["base"].rpartition("/")[2])}
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid address pool {text}: size must be a number") from None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="ketchd", description="Ketch container engine daemon")
    p.add_argument("--config-file", default=CONFIG_FILE)
    p.add_argument("--data-root")
    p.add_argument("--exec-root")
    p.add_argument("-H", "--host", action="append", dest="hosts")
    p.add_argument("-l", "--log-level", choices=["debug", "info", "warn", "warning", "error", "fatal"])
    p.add_argument("--runtime")
    p.add_argument("--conmon")
    p.add_argument("-G", "--group")
    p.add_argument("--cgroup-parent")
    p.add_argument("--image-service")
    p.add_argument("--init-path")
    p.add_argument("--insecure-registry", action="append", dest="insecure_registries",
                   help="a registry (HOST:PORT) reached over plain http; repeatable")
    p.add_argument("--registry-mirror", action="append", dest="registry_mirrors",
                   help="a mirror of docker.io (http://HOST:PORT, https://HOST, or HOST:PORT); repeatable")
    p.add_argument("--registry-connect-timeout", type=float, help="seconds to connect to a registry (30)")
    p.add_argument("--registry-read-timeout", type=float, help="seconds a registry may stay silent (120)")
    p.add_argument("-b", "--bridge", help="the default bridge's interface name (ketch0); none: no default bridge")
    p.add_argument("--bip", help="the default bridge's address and prefix, e.g. 172.17.0.1/16")
    p.add_argument("--fixed-cidr", help="addresses of containers on the default bridge (a part of its subnet)")
    p.add_argument("--ipv6", action="store_true", default=None, help="IPv6 on the default bridge (needs "
                   "--fixed-cidr-v6) and by default on user networks")
    p.add_argument("--fixed-cidr-v6")
    p.add_argument("--mtu", type=int)
    p.add_argument("--ip", help="default host address of published ports (0.0.0.0)")
    p.add_argument("--dns", action="append", help="resolvers of containers and upstreams of the embedded DNS")
    p.add_argument("--firewall-table", help="the name of Ketch's nftables table (ketch)")
    p.add_argument("--default-address-pool", action="append", dest="default_address_pools", type=_pool,
                   help="base=CIDR,size=N: where user networks' subnets come from; repeatable")
    p.add_argument("-v", "--version", action="store_true")
    return p.parse_args(argv)


def load_config(args) -> dict:
    cfg: dict = dict(DEFAULTS)
    if os.path.exists(args.config_file):
        try:
            with open(args.config_file) as f:
                file_cfg = json.load(f)
        except ValueError as e:
            raise SystemExit(f"ketchd: {args.config_file}: invalid JSON: {e}") from None
        if not isinstance(file_cfg, dict):
            raise SystemExit(f"ketchd: {args.config_file}: a JSON object is expected")
        unknown = set(file_cfg) - set(DEFAULTS)
        if unknown:
            raise SystemExit(f"ketchd: {args.config_file}: unknown option(s): {', '.join(sorted(unknown))}")
        cfg.update(file_cfg)
    for key in ("registry-connect-timeout", "registry-read-timeout"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise SystemExit(f"ketchd: {key}: a number of seconds above 0 is expected, not {v!r}")
    for key in DEFAULTS:
        v = getattr(args, key.replace("-", "_"), None)
        if v:
            cfg[key] = v
    for key in ("insecure-registries", "registry-mirrors"):
        if not isinstance(cfg[key], list) or not all(isinstance(x, str) for x in cfg[key]):
            raise SystemExit(f"ketchd: {key}: a list of strings is expected, not {cfg[key]!r}")
    check_log_opts(cfg["log-opts"])
    from ketch.errors import InvalidArgument
    from ketch.registry import mirror_url
    try:
        cfg["registry-mirrors"] = [mirror_url(m, cfg["insecure-registries"]) for m in cfg["registry-mirrors"]]
    except InvalidArgument as e:
        raise SystemExit(f"ketchd: registry-mirrors: {e}") from None
    if "exec-root" in cfg and args.hosts is None and cfg["hosts"] == DEFAULTS["hosts"] and \
            cfg["exec-root"] != DEFAULTS["exec-root"]:
        cfg["hosts"] = [f"unix://{os.path.join(str(cfg['exec-root']), 'ketch.sock')}"]
    return cfg


def check_log_opts(opts) -> None:
    """daemon.json's log-opts: strings, as a container's --log-opt would take them."""
    from ketch.engine.validate import validate_log_config
    from ketch.errors import InvalidArgument
    if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
        raise SystemExit(f'ketchd: log-opts: an object of strings is expected (e.g. {{"max-size": "20m"}}), '
                         f"not {opts!r}")
    try:
        validate_log_config({"Type": "json-file", "Config": opts})
    except InvalidArgument as e:
        raise SystemExit(f"ketchd: log-opts: {e}") from None


def ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    rc = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True)
    if rc.returncode not in (0, 9):  # 9: exists (a race with another groupadd)
        log.warning("create group", extra={"group": name, "error": rc.stderr.strip()})
        return 0
    return grp.getgrnam(name).gr_gid


def socket_path(host: str) -> str:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host.startswith("/"):
        return host
    raise SystemExit(f"ketchd: host {host}: only unix:// sockets are supported (TCP needs TLS, not "
                     "available yet)")


def _socket_in_use(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class _NoImages:
    """Used when no image service is installed: every image is unknown."""

    async def get_image(self, name):
        from ketch.errors import NotFound
        raise NotFound(f"No such image: {name}")

    async def mount_rootfs(self, key):
        from ketch.errors import Unavailable
        raise Unavailable("no image service: cannot mount a container root filesystem")

    async def unmount_rootfs(self, key):
        pass

    async def remove_rootfs(self, key):
        pass


def _upstreams(cfg: dict) -> list[tuple[str, int]]:
    """Where the embedded DNS forwards names it does not know: daemon.json's `dns`, else the
    host's resolvers (ketchd runs in the host's network namespace, so loopback ones work too)."""
    servers = list(cfg.get("dns") or [])
    if not servers:
        try:
            with open("/etc/resolv.conf") as f:
                servers = [w[1] for w in (line.split() for line in f) if len(w) > 1 and w[0] == "nameserver"]
        except OSError:
            servers = []
    return [(s, 53) for s in servers]


async def open_networks(cfg: dict, data_root: str, exec_root: str):
    logging.getLogger("pyroute2").setLevel(logging.WARNING)  # its debug lines are one per netlink message
    from ketch.network.bridge import BridgeConfig, BridgeNetworks
    from ketch.network.dns import DnsServer, Records
    pools = cfg.get("default-address-pools") or None
    bcfg = BridgeConfig(bridge=cfg["bridge"] or "ketch0", bip=cfg["bip"], fixed_cidr=cfg["fixed-cidr"],
                        fixed_cidr_v6=cfg["fixed-cidr-v6"], ipv6=bool(cfg["ipv6"]), mtu=int(cfg["mtu"] or 0),
                        ip_forward=bool(cfg["ip-forward"]), ip_masq=bool(cfg["ip-masq"]),
                        iptables=bool(cfg["iptables"]), ip=cfg["ip"] or "0.0.0.0", dns=list(cfg["dns"] or []),
                        table=cfg["firewall-table"], data_root=os.path.join(data_root, "network"),
                        exec_root=exec_root)
    if pools:
        bcfg.default_address_pools = pools
    networks = BridgeNetworks(bcfg, dns=DnsServer(Records(), _upstreams(cfg)))
    await networks.open()
    return networks


async def serve(cfg: dict) -> int:
    from aiohttp import web

    from ketch.api.server import Api
    from ketch.engine.engine import Engine
    from ketch.engine.ports import load_image_service

    data_root = os.path.abspath(cfg["data-root"])
    exec_root = os.path.abspath(cfg["exec-root"])
    os.makedirs(data_root, mode=0o711, exist_ok=True)
    os.makedirs(exec_root, mode=0o711, exist_ok=True)
    lock = open(os.path.join(data_root, "ketchd.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("another ketchd uses this data root", extra={"data_root": data_root})
        return 1
    with open(os.path.join(exec_root, "ketchd.pid"), "w") as f:
        f.write(str(os.getpid()))

    runtime = shutil.which(cfg["runtime"]) or cfg["runtime"]
    if cfg["runtime"] == "ketch-runtime" and not os.access(runtime, os.X_OK):
        # a checkout that was not installed: the launcher next to this package
        here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "bin", "ketch-runtime")
        if os.access(here, os.X_OK):
            runtime = here
    conmon_bin = shutil.which(cfg["conmon"]) or cfg["conmon"]
    for what, path in (("runtime", runtime), ("conmon", conmon_bin)):
        if not os.access(path, os.X_OK):
            log.error(f"{what} not found", extra={what: path})
            return 1
    try:
        images = load_image_service(cfg["image-service"], data_root, insecure=cfg["insecure-registries"],
                                    registry_timeouts=(float(cfg["registry-connect-timeout"]),
                                                       float(cfg["registry-read-timeout"])),
                                    mirrors=cfg.get("registry-mirrors") or ())
    except (ImportError, AttributeError) as e:
        log.warning("no image service; image operations are unavailable",
                    extra={"image_service": cfg["image-service"], "error": str(e)})
        images = _NoImages()
    id_file = os.path.join(data_root, "engine-id")
    if not os.path.exists(id_file):
        with open(id_file, "w") as f:
            f.write(os.urandom(16).hex())
    with open(id_file) as f:
        engine_id = f.read().strip()
    # the sockets first: a daemon that cannot serve must not have touched bridges and tables
    for host in cfg["hosts"]:
        path = socket_path(host)
        if os.path.exists(path) and _socket_in_use(path):
            log.error("socket in use by another daemon", extra={"socket": path})
            return 1
    try:
        networks = await open_networks(cfg, data_root, exec_root)
    except (OSError, ValueError) as e:
        log.error("networking", extra={"error": str(e)})
        return 1
    engine = Engine(data_root=data_root, run_root=exec_root, runtime=runtime, conmon_binary=conmon_bin,
                    images=images, networks=networks, cgroup_parent=cfg["cgroup-parent"],
                    init_binary=cfg.get("init-path") or None, engine_id=engine_id)
    engine.log_opts = dict(cfg["log-opts"])
    from ketch import space
    if not space.ensure_reserve(data_root):  # what rm, rmi and the prunes spend on a full disk
        log.warning("no room for the space reserve: on a full disk only freeing by hand helps",
                    extra={"data_root": data_root, "bytes": space.RESERVE_BYTES})
    if hasattr(images, "events"):  # image events (pull, tag, delete, ...) come from the image service
        images.events = engine.events
    if hasattr(images, "add_usage_check"):  # rmi refuses images that containers use
        images.add_usage_check(engine.containers_using)
    await engine.restore()
    api = Api(engine, images, {"id": engine_id})
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    gid = ensure_group(cfg["group"]) if cfg["group"] else 0
    paths = []
    for host in cfg["hosts"]:
        path = socket_path(host)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            if _socket_in_use(path):
                log.error("socket in use by another daemon", extra={"socket": path})
                await runner.cleanup()
                await networks.close()
                return 1
            os.unlink(path)
        site = web.UnixSite(runner, path)
        await site.start()
        os.chmod(path, 0o660)
        os.chown(path, 0, gid)
        paths.append(path)
    log.info("ketchd listening", extra={"sockets": ",".join(paths), "data_root": data_root,
                                        "runtime": runtime, "pid": os.getpid()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("ketchd shutting down; containers keep running")
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    await engine.shutdown()
    await runner.cleanup()
    await networks.close()
    try:
        os.unlink(os.path.join(exec_root, "ketchd.pid"))
    except FileNotFoundError:
        pass
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        import ketch
        print(f"ketchd {ketch.__version__}")
        return 0
    cfg = load_config(args)
    level = {"warn": "WARNING", "fatal": "CRITICAL"}.get(cfg["log-level"], cfg["log-level"].upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    if os.geteuid() != 0:
        print("ketchd: must run as root", file=sys.stderr)
        return 1
    try:
        return asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        return 0
