"""Images: names to manifests, pull/push, unpack into snapshots, save/load/import, GC.

    from ketch.images import ImageService
    svc = ImageService("/var/lib/ketch")

See ketch/images/service.py and docs/images.md. ``ketch.images.async_service.AsyncImageService`` is the
async face the daemon uses.
"""


def __getattr__(name):
    if name == "ImageService":
        from ketch.images.service import ImageService
        return ImageService
    if name == "AsyncImageService":
        from ketch.images.async_service import AsyncImageService
        return AsyncImageService
    raise AttributeError(name)
