"""Content-addressed blob store (containerd content/local, OCI image layout on disk).

See ketch/content/store.py and docs/storage.md.
"""

from ketch.content.store import ContentStore, TeeReader, Writer  # noqa: F401
