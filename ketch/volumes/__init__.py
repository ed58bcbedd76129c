"""Volumes: the local driver (`local.py`), Docker's copy-up (`copyup.py`) and the service that
owns volume records, their users and Docker's shapes (`service.py`). Below the engine, beside
network: imports only ketch.linux and the shared modules."""

from ketch.volumes.service import ANONYMOUS_LABEL, Volume, VolumeService

__all__ = ["ANONYMOUS_LABEL", "Volume", "VolumeService"]
