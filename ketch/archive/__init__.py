"""Layer tars: apply (with overlay whiteouts and safe paths) and create, any compression.

    apply_layer(stream, root, lowers=()) -> ApplyResult(digest, diff_id, size, uncompressed_size, compression,
                                                        implied_dirs)
    fix_implied_dirs(root, implied_dirs, lowers)     after apply_layer(..., lowers=None)
    extract_archive(stream, root, dest)              docker cp in: copy mode (no whiteouts, symlinks in-root)
    create_layer(dirpath, out, *, compression="gzip", overlay_upper=False) -> LayerInfo(same fields)

See docs/storage.md for the safety rules.
"""

from ketch.archive.apply import ApplyResult, apply_layer, clean_name, extract_archive, fix_implied_dirs  # noqa: F401
from ketch.archive.compression import detect as detect_compression  # noqa: F401
from ketch.archive.create import LayerInfo, create_archive, create_layer, stat_in_root  # noqa: F401
