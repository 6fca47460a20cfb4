"""File checksums shared by the model store and the backups."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 22


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()
