"""Snapshots: layer directories keyed by ChainID and container roots over them (overlay).

See ketch/snapshots/overlay.py for the model, docs/storage.md for the layout.
"""

from ketch.snapshots.mount import Mount, mount_all, unmount  # noqa: F401
from ketch.snapshots.overlay import ACTIVE, COMMITTED, VIEW, OverlaySnapshotter  # noqa: F401
from ketch.snapshots.unpack import DetachedUnpack, unpack_layer  # noqa: F401
