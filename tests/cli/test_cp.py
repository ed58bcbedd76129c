"""`ketch cp` both ways with names that mean something to overlay, and a trailing-slash source."""

import os
import stat
import subprocess
import sys

from tests.engine.daemon import REPO, daemon_fixture


def _make_base(d):
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)


ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


def ketch(d, *args, check=True):
    env = dict(os.environ, PYTHONPATH=REPO, DOCKER_CONFIG=os.path.join(d.base, "dockercfg"))
    env.pop("KETCH_HOST", None)
    r = subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", d.host, *args], capture_output=True,
                       text=True, env=env, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"ketch {args}: {r.returncode} {r.stderr}")
    return r


def test_whiteout_names_stay_files_both_ways(ketchd, tmp_path):
    ketch(ketchd, "run", "-d", "--name", "wh", "busybox", "sh", "-c",
          "mkdir -p /d && echo notes > /d/.wh.notes && touch /d/.wh..wh..opq && sleep 60")
    try:
        out = tmp_path / "out"
        out.mkdir()
        ketch(ketchd, "cp", "wh:/d/.wh.notes", str(out))
        assert stat.S_ISREG(os.lstat(out / ".wh.notes").st_mode)
        assert (out / ".wh.notes").read_text() == "notes\n"
        ketch(ketchd, "cp", "wh:/d", str(out / "d"))
        assert sorted(os.listdir(out / "d")) == [".wh..wh..opq", ".wh.notes"]
        src = tmp_path / ".wh.back"
        src.write_text("back\n")
        ketch(ketchd, "cp", str(src), "wh:/d/")
        assert ketch(ketchd, "exec", "wh", "cat", "/d/.wh.back").stdout == "back\n"
    finally:
        ketch(ketchd, "rm", "-f", "wh")


def test_cp_out_never_follows_a_symlink_swapped_in_onto_the_host(ketchd, tmp_path):
    """CVE-2018-15664: the container swaps a directory for a symlink to a host path while we copy out
    of it; the copy must resolve in the container's root (where that path does not exist), never on
    the host, where it holds a secret."""
    import time
    secret_dir = tmp_path / "host-secret"
    secret_dir.mkdir()
    (secret_dir / "flag").write_text("HOST-SECRET\n")
    swap = (f"mkdir -p /d && echo inside > /d/flag && "
            f"while true; do mv /d /d.real; ln -s {secret_dir} /d; rm /d; mv /d.real /d; done")
    ketch(ketchd, "run", "-d", "--name", "swapper", "busybox", "sh", "-c", swap)
    try:
        import io
        import tarfile
        deadline = time.time() + 4
        tries = leaked = 0
        while time.time() < deadline:
            for path in ("/d/flag", "/d/"):
                status, _, body = ketchd.request("GET", f"/containers/swapper/archive?path={path}")
                tries += 1
                assert status in (200, 404), (status, body[:300])
                if status == 200:
                    with tarfile.open(fileobj=io.BytesIO(body)) as tf:
                        for m in tf.getmembers():
                            f = tf.extractfile(m) if m.isfile() else None
                            if f is not None and b"HOST-SECRET" in f.read():
                                leaked += 1
        assert tries > 100 and leaked == 0, (tries, leaked)
    finally:
        ketch(ketchd, "rm", "-f", "swapper", check=False)
