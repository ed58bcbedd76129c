"""An ImageService over plain directories, for the engine's tests until ketch.images lands.

Real root filesystems (busybox-static with its applets as symlinks), copied per
container: the engine runs real containers from them through the same protocol the
overlay-backed ImageService implements.
"""

import hashlib
import json
import os
import shutil
import subprocess

from ketch.errors import NotFound
from ketch.images.record import Image

BUSYBOX = "/bin/busybox"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def make_busybox_rootfs(root: str) -> None:
    os.makedirs(root, exist_ok=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev",
              "var/log", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin/busybox"))
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        p = os.path.join(root, a)
        if os.path.basename(a) == "busybox" or os.path.lexists(p):
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink("/bin/busybox", p)
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    os.chown(os.path.join(root, "home/app"), 1000, 1000)


class DirImageService:
    IMAGES = {
        "busybox:latest": {"Cmd": ["sh"], "Env": [f"PATH={PATH}"]},
        "ketchtest/app:latest": {"Entrypoint": ["/bin/echo"], "Cmd": ["from-image"],
                                 "Env": [f"PATH={PATH}", "IMG=1"], "WorkingDir": "/tmp",
                                 "User": "app", "StopSignal": "SIGUSR1", "Labels": {"img": "yes"}},
    }

    def __init__(self, data_root: str):
        self.root = os.path.join(data_root, "dirimages")
        self.base = os.path.join(self.root, "base")
        if not os.path.exists(os.path.join(self.base, "bin/busybox")):
            make_busybox_rootfs(self.base)
        self.images = {}
        for name, cfg in self.IMAGES.items():
            config = {"architecture": "amd64", "os": "linux", "config": cfg,
                      "created": "2026-01-01T00:00:00Z", "rootfs": {"type": "layers", "diff_ids": []}}
            digest = "sha256:" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
            self.images[name] = Image(id=digest, repo_tags=[name], config=config,
                                      created="2026-01-01T00:00:00Z", size=os.path.getsize(BUSYBOX))

    def _find(self, ref: str) -> Image:
        name = ref if ":" in ref.rsplit("/", 1)[-1] else ref + ":latest"
        if name.startswith("docker.io/library/"):
            name = name[len("docker.io/library/"):]
        if name in self.images:
            return self.images[name]
        for im in self.images.values():
            if ref.startswith("sha256:") and im.id.startswith(ref) or im.id[7:].startswith(ref) and len(ref) >= 12:
                return im
        raise NotFound(f"No such image: {ref}")

    async def get_image(self, name_or_id: str) -> Image:
        return self._find(name_or_id)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, "containers", key)

    async def create_rootfs(self, image_id: str, key: str) -> None:
        os.makedirs(os.path.dirname(self._path(key)), exist_ok=True)
        shutil.copytree(self.base, self._path(key), symlinks=True)

    async def mount_rootfs(self, key: str) -> str:
        return self._path(key)

    async def unmount_rootfs(self, key: str) -> None:
        pass

    async def remove_rootfs(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)

    async def rootfs_usage(self, key: str) -> int:
        total = 0
        for dirpath, _, files in os.walk(self._path(key)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total

    async def list_images(self, all_: bool = False, filters: dict | None = None) -> list[dict]:
        return [{"Id": im.id, "ParentId": "", "RepoTags": im.repo_tags, "RepoDigests": [], "Created": 1767225600,
                 "Size": im.size, "SharedSize": -1, "VirtualSize": im.size, "Labels": im.run_config.get("Labels"),
                 "Containers": -1} for im in self.images.values()]

    async def inspect_image(self, name: str) -> dict:
        im = self._find(name)
        return {"Id": im.id, "RepoTags": im.repo_tags, "RepoDigests": [], "Parent": "", "Comment": "",
                "Created": im.created, "Config": im.run_config, "Architecture": "amd64", "Os": "linux",
                "Size": im.size, "VirtualSize": im.size, "RootFS": {"Type": "layers", "Layers": []},
                "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}, "GraphDriver": {"Name": "dir", "Data": None}}
