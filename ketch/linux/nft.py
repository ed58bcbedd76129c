"""nftables through libnftables' JSON API (Debian's python3-nftables), never by parsing `nft` output.

The `nftables` module is Debian's binding of libnftables (package python3-nftables); it is not on
PyPI, so when the venv does not see it, it is loaded from Debian's dist-packages by path (only that
package, not the rest of dist-packages). Each `run` is one libnftables transaction: all its
commands apply, or none does.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading

DEBIAN_MODULE = "/usr/lib/python3/dist-packages/nftables/__init__.py"


class NftError(OSError):
    """libnftables refused a batch; the message is nft's own."""


def _module():
    try:
        import nftables
        return nftables
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("nftables", DEBIAN_MODULE,
                                                  submodule_search_locations=[DEBIAN_MODULE.rsplit("/", 1)[0]])
    if spec is None or spec.loader is None:
        raise NftError("libnftables' Python binding is missing: install Debian's python3-nftables")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nftables"] = mod
    try:
        spec.loader.exec_module(mod)
    except (OSError, ImportError) as e:
        del sys.modules["nftables"]
        raise NftError(f"libnftables' Python binding is missing ({e}): install Debian's python3-nftables") from None
    return mod


class Nft:
    """One libnftables context (its calls are serialised: a context is not thread-safe)."""

    def __init__(self):
        self._nft = _module().Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)
        self._lock = threading.Lock()

    def run(self, commands: list[dict]) -> None:
        """Apply `commands` (libnftables JSON command objects) as one transaction."""
        if not commands:
            return
        with self._lock:
            rc, _out, err = self._nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise NftError(rc, f"nftables: {(err or '').strip() or 'refused the batch'}")

    def list(self, what: str) -> list[dict]:
        """`list <what>` (e.g. "table inet ketch") as the JSON objects libnftables gives, [] if absent."""
        with self._lock:
            rc, out, _err = self._nft.cmd(f"list {what}")
        if rc != 0 or not out:
            return []
        return [o for o in json.loads(out).get("nftables", []) if "metainfo" not in o]
