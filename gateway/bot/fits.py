"""Fitted intent models kept on disk, so that a restarted gateway does not fit them again.

A fit takes a second or more of CPU per knowledge base (the shipped sample's: about one), and every
start paid it for the sample and again for each tenant's stored knowledge base. A fit depends only
on what it is trained on, the model's settings and the code and library versions, so those are
the key (``TrainingSet.key``): a changed knowledge base, a new Kefu or a new scikit-learn simply
misses and fits afresh. A model is a pickle, compressed (the sample's is 13 MB raw, 6 MB packed)
and written to a temporary file renamed into place, so readers never see half a file; the oldest
beyond ``keep`` are removed. Pickles run code when loaded: the folder must be as trusted as the
data directory it lives in by default.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zlib
from pathlib import Path
from typing import Any

log = logging.getLogger("kefu.bot")

SUFFIX = ".fit"


class FitCache:
    """A folder of fitted models by key; any failure to read or write is a miss, never an error."""

    def __init__(self, folder: str | Path, keep: int = 32) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def get(self, key: str) -> Any | None:
        path = self.folder / f"{key}{SUFFIX}"
        try:
            packed = path.read_bytes()
        except OSError:
            return None
        try:
            found = pickle.loads(zlib.decompress(packed))
        except Exception:  # damaged, or written by code that no longer loads: fit again
            log.warning("bot model %s unreadable; fitting again", path, exc_info=True)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: kept longest
        return found

    def put(self, key: str, fitted: Any) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            packed = zlib.compress(pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL), 1)
            fd, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(packed)
                os.replace(temporary, self.folder / f"{key}{SUFFIX}")
            except BaseException:
                os.unlink(temporary)
                raise
            self.prune()
        except OSError:
            log.warning("bot model not kept in %s", self.folder, exc_info=True)

    def prune(self) -> None:
        """Remove the least recently used models beyond ``keep``."""
        models = sorted(self.folder.glob(f"*{SUFFIX}"), key=modified, reverse=True)
        for old in models[self.keep:]:
            old.unlink(missing_ok=True)


def modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile (another process pruning)
        return 0.0
