"""OCI distribution client: auth, manifests, blobs with range and retry, uploads, cross-repo mount.

    from ketch.registry import RegistryClient
    async with RegistryClient() as c:
        m = await c.get_manifest("busybox")            # FetchedManifest, digest verified
        r = await c.open_blob(m.ref, layer.digest, size=layer.size)   # BlobReader, resumes

See docs/registry.md.
"""

from ketch.registry.auth import Credentials, config_path, load_credentials, remove_credentials, save_credentials
from ketch.registry.client import BlobReader, FetchedManifest, RegistryClient, is_loopback, logout, mirror_url

__all__ = ["BlobReader", "Credentials", "FetchedManifest", "RegistryClient", "config_path", "is_loopback",
           "load_credentials", "logout", "mirror_url", "remove_credentials", "save_credentials"]
