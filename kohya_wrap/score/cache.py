"""Observations of reference photos, cached on disk so that a second `score` skips them.

Key: the file's sha256 and the identity model's id (dlib version + pipeline version), so an edited
photo or a changed model is looked at again. One small .npz per photo, written atomically; a
cache entry that cannot be read is treated as absent and rewritten.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kohya_wrap.faceid import Observation
from kohya_wrap.fsutil import atomic_write_bytes, user_cache_dir

CACHE_FOLDER = "score-cache"


def default_cache_dir() -> Path:
    return user_cache_dir() / CACHE_FOLDER


class ObservationCache:
    def __init__(self, folder: Path | None, model_id: str) -> None:
        self.folder = None if folder is None else Path(folder) / model_id
        self.hits = 0
        self.misses = 0

    def _path(self, sha256: str) -> Path | None:
        return None if self.folder is None else self.folder / sha256[:2] / f"{sha256}.npz"

    def get(self, sha256: str) -> Observation | None:
        import numpy as np

        path = self._path(sha256)
        if path is None or not path.is_file():
            self.misses += 1
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                faces = int(data["faces"])
                if faces == 0:
                    found = Observation(faces=0)
                else:
                    box = tuple(int(v) for v in data["box"])
                    found = Observation(
                        faces=faces,
                        embedding=data["embedding"].astype(np.float64),
                        chip=data["chip"].astype(np.float32),
                        mask=data["mask"].astype(bool),
                        box=(box[0], box[1], box[2], box[3]),
                    )
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return found

    def put(self, sha256: str, observation: Observation) -> None:
        import numpy as np

        path = self._path(sha256)
        if path is None:
            return
        arrays: dict[str, Any] = {"faces": np.array(observation.faces)}
        if observation.has_face:
            arrays.update(
                embedding=observation.embedding,
                chip=observation.chip.astype(np.float32),
                mask=observation.mask.astype(bool),
                box=np.array(observation.box or (0, 0, 0, 0)),
            )
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:
            pass  # a read-only cache only costs time
