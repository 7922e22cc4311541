"""Observations of reference photos and samples, cached on disk so that a second `score` skips them.

Key: the file's sha256 and the identity model's id (dlib version + pipeline version), so an edited
photo or a changed model is looked at again. One small .npz per photo, written atomically; a
cache entry that cannot be read is treated as absent and rewritten.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.faceid import Observation
from kohya_wrap.fsutil import atomic_write_bytes, user_cache_dir

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

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
        entry = self.get_entry(sha256)
        return None if entry is None else entry[0]

    def get_entry(self, sha256: str) -> tuple[Observation, NDArray[np.float32] | None] | None:
        """The observation and the variety thumbnail (None when not stored) of a file, or None."""
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
                        wide=data["wide"].astype(np.float32) if "wide" in data.files else None,
                        wide_mask=data["wide_mask"].astype(bool) if "wide_mask" in data.files else None,
                    )
                thumb = data["thumb"].astype(np.float32) if "thumb" in data.files else None
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return found, thumb

    def put(self, sha256: str, observation: Observation, thumb: NDArray[np.float32] | None = None) -> None:
        import numpy as np

        path = self._path(sha256)
        if path is None:
            return
        arrays: dict[str, NDArray[np.generic]] = {"faces": np.array(observation.faces)}
        if thumb is not None:
            arrays["thumb"] = np.asarray(thumb, dtype=np.float32)
        if observation.has_face:
            embedding, chip, mask = observation.face_arrays()
            arrays.update(
                embedding=embedding,
                chip=chip.astype(np.float32),
                mask=mask.astype(bool),
                box=np.array(observation.box or (0, 0, 0, 0)),
            )
            if observation.wide is not None and observation.wide_mask is not None:
                arrays.update(wide=observation.wide.astype(np.float32), wide_mask=observation.wide_mask.astype(bool))
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=True, **arrays)  # numpy's default, said so the keywords type-check
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:
            pass  # a read-only cache only costs time
