"""The image record the engine and every image service share: an image's ID, names and config.

Kept in the images layer (below the engine) so that there is one definition: the engine's
ImageService protocol (ketch/engine/ports.py) returns it and every implementation builds it.
"""

from dataclasses import dataclass, field


@dataclass
class Image:
    id: str                       # "sha256:<hex>" of the image config
    repo_tags: list[str]          # ["busybox:latest"]
    config: dict                  # the OCI image config JSON (with "config": {...}, "rootfs", ...)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    created: str = ""             # RFC 3339

    @property
    def run_config(self) -> dict:
        return self.config.get("config") or {}
