"""What the engine needs from the layers below it: images and networks, as protocols.

ImageService: the engine asks for an image's config by name or ID, and for a container root
filesystem made from an image's layers. `ketch.images` implements it over the content
store and the overlay snapshotter; tests may implement it over a plain directory. The
image endpoints of the API (list, inspect, pull, ...) call the optional methods when
the service has them.
"""

from typing import AsyncIterator, Protocol, runtime_checkable

from ketch.images.record import Image
from ketch.network.model import Attachment, NetworkRequest


@runtime_checkable
class ImageService(Protocol):
    async def get_image(self, name_or_id: str) -> Image:
        """The image, or raise ketch.errors.NotFound("No such image: NAME")."""

    async def create_rootfs(self, image_id: str, key: str) -> None:
        """Make a writable root filesystem for container `key` on top of the image."""

    async def mount_rootfs(self, key: str) -> str:
        """Make the root filesystem of `key` available; return its host path (idempotent)."""

    async def unmount_rootfs(self, key: str) -> None:
        """Undo mount_rootfs (idempotent)."""

    async def remove_rootfs(self, key: str) -> None:
        """Delete the writable layer of `key` (idempotent)."""

    async def rootfs_usage(self, key: str) -> int:
        """Bytes used by the writable layer of `key`."""


class ImageEndpoints(Protocol):
    """Optional: what the /images endpoints delegate to (Docker JSON shapes)."""

    async def list_images(self, all_: bool = False, filters: dict | None = None) -> list[dict]: ...
    async def layers_size(self) -> int: ...
    async def inspect_image(self, name: str) -> dict: ...
    async def image_history(self, name: str) -> list[dict]: ...
    async def tag_image(self, name: str, repo: str, tag: str) -> None: ...
    async def remove_image(self, name: str, force: bool = False, noprune: bool = False) -> list[dict]: ...
    def pull_image(self, ref: str, tag: str, platform: str | None, auth: dict | None) -> AsyncIterator[dict]: ...
    def push_image(self, name: str, tag: str, auth: dict | None) -> AsyncIterator[dict]: ...
    def save_images(self, names: list[str]) -> AsyncIterator[bytes]: ...
    def load_images(self, stream: AsyncIterator[bytes], quiet: bool) -> AsyncIterator[dict]: ...


@runtime_checkable
class NetworkService(Protocol):
    """A container's network, called by the engine at create, start, exit, remove and restore.

    ketch.network.basic.BasicNetworks implements none/host/container:<x>/loopback; bridges and
    user networks implement the same calls.
    """

    def check(self, request: NetworkRequest) -> None:
        """At create: the mode and options are valid (an unknown network: NotFound)."""

    def settings(self, cid: str, request: NetworkRequest) -> dict:
        """Docker's NetworkSettings of a container that is not running."""

    async def attach(self, cid: str, request: NetworkRequest, etc_dir: str, join: str | None) -> Attachment:
        """At start: make the container's network and write hostname/hosts/resolv.conf into `etc_dir`;
        `join` is the namespace of a container:<x> mode. Returns the namespace to join and the settings."""

    async def detach(self, cid: str, request: NetworkRequest) -> dict:
        """At exit: release what attach made; return the NetworkSettings of the stopped container."""

    async def remove(self, cid: str, request: NetworkRequest) -> None:
        """At remove: forget the container (idempotent)."""

    async def restore(self, live: dict[str, NetworkRequest]) -> None:
        """After a ketchd restart: keep what belongs to the live containers, release the rest."""

    def names(self) -> list[str]:
        """The network plugins, for /info."""


def load_image_service(spec: str, data_root: str, insecure=(), registry_timeouts: tuple[float, float] | None = None,
                       mirrors=()):
    """Instantiate an image service from "module:callable", called with the data root (and the
    insecure registries, the registry timeouts (connect, read) and docker.io's mirrors, when there
    are any and the factory takes them)."""
    import importlib
    import inspect
    mod_name, _, attr = spec.partition(":")
    mod = importlib.import_module(mod_name)
    factory = getattr(mod, attr or "ImageService")
    kw: dict = {}
    if insecure:
        kw["insecure"] = tuple(insecure)
    if registry_timeouts and "registry_timeouts" in inspect.signature(factory).parameters:
        kw["registry_timeouts"] = registry_timeouts
    if mirrors:
        kw["mirrors"] = tuple(mirrors)
    return factory(data_root, **kw)
