"""What the Zarr backend needs without zarr-python: the manifest's name, the compressor names and
the group attributes that mark an imgtui store. ``imgtui.backends.zarr`` imports only this, so
listing the backends (every CLI command builds its flags from them) does not import zarr (~0.4-0.9 s);
the writer and reader import zarr when first used."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "imgtui-manifest.json"
COMPRESSORS = ("none", "zstd", "blosc", "gzip")


def read_group_attrs(path: Path) -> dict | None:
    """The ``imgtui`` attributes of the zarr group at ``path`` (None: not an imgtui zarr group)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = (meta.get("attributes") or {}).get("imgtui") if isinstance(meta.get("attributes"), dict) else None
    return attrs if isinstance(attrs, dict) and attrs.get("format") == "imgtui" else None
