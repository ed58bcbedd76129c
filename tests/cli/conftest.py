from tests.images.conftest import ketch, registry  # noqa: F401  (the same fixtures)
