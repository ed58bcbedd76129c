"""Resolve a path inside a container root as the container would, never leaving the root.

Symlinks met on the way are read and followed relative to the root (an absolute target
restarts at the root, `..` stops at the root), like chroot would: a hostile
`/etc -> /host/etc` or `a -> ../../..` in an image cannot make ketchd read or write
the host's files.
"""

import os

from ketch.errors import InvalidArgument

_MAX_LINKS = 40


def resolve(root: str, path: str, follow_final: bool = True) -> str:
    root = os.path.realpath(root)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        if os.path.islink(candidate) and (parts or follow_final):
            links += 1
            if links > _MAX_LINKS:
                raise InvalidArgument(f"resolve `{path}` in container: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return os.path.join(root, *done)
