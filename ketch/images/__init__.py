"""Images: names to manifests, pull/push, unpack into snapshots, save/load/import, GC.

    from ketch.images import ImageService
    svc = ImageService("/var/lib/ketch")

See ketch/images/service.py and docs/images.md. ``ketch.images.engine.EngineImages`` is the
async face the daemon uses.
"""


def __getattr__(name):
    if name == "ImageService":
        from ketch.images.service import ImageService
        return ImageService
    if name == "EngineImages":
        from ketch.images.engine import EngineImages
        return EngineImages
    raise AttributeError(name)
