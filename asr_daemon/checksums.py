"""File checksums and fsync, shared by the model store, the uploads and the backups."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK = 1 << 22


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (a rename in it), to disk. Blocking."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
