"""Resolve a path inside a container root as the container would, never leaving the root.

Symlinks met on the way are read and followed relative to the root (an absolute target
restarts at the root, `..` stops at the root), like chroot would: a hostile
`/etc -> /host/etc` or `a -> ../../..` in an image cannot make ketchd read or write
the host's files.
"""

import os

from ketch.runtime.rootfs import secure_join


def resolve(root: str, path: str, follow_final: bool = True) -> str:
    """`path` inside the container root `root`, symlinks resolved within the root."""
    return secure_join(os.path.realpath(root), path, follow_final)
