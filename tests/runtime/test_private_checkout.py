"""The runtime from a checkout only root can read (a 0700 directory, as /root/... is): a
user-namespaced container still runs, because the init imports everything before it enters the
user namespace (whose root cannot read the checkout)."""

import os
import shutil
import subprocess
import tempfile

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_user_namespaced_container_from_a_0700_checkout(busybox_rootfs):
    top = tempfile.mkdtemp(prefix="ketch-0700-")
    os.chmod(top, 0o700)
    try:
        repo = os.path.join(top, "ketch-checkout")
        os.makedirs(os.path.join(repo, "bin"))
        shutil.copytree(os.path.join(REPO, "ketch"), os.path.join(repo, "ketch"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(os.path.join(REPO, "bin", "ketch-runtime"), os.path.join(repo, "bin", "ketch-runtime"))
        work = tempfile.mkdtemp(prefix="ketch-0700-bundle-")
        os.chmod(work, 0o755)
        cg = f"ketch-test-{os.urandom(4).hex()}"
        try:
            cfg = helpers.base_config(["sh", "-c", "id -u; cat /proc/self/uid_map"])
            cfg["linux"]["namespaces"].append({"type": "user"})
            cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            cfg["linux"]["cgroupsPath"] = f"/{cg}/c"
            cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] not in ("sysfs", "cgroup", "mqueue")]
            b = helpers.Bundle(os.path.join(work, "b"), busybox_rootfs, cfg)
            subprocess.run(["chown", "-R", "100000:100000", b.rootfs], check=True)
            r = subprocess.run([os.path.join(repo, "bin", "ketch-runtime"), "--root", os.path.join(work, "state"),
                                "run", "--bundle", b.path, "userns0700"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert r.stdout.split()[:4] == ["0", "0", "100000", "65536"], r.stdout
        finally:
            subprocess.run([os.path.join(repo, "bin", "ketch-runtime"), "--root", os.path.join(work, "state"),
                            "delete", "--force", "userns0700"], capture_output=True)
            helpers.remove_cgroup_tree(cg)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
