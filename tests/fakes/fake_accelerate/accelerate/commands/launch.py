"""A stand-in for `python -m accelerate.commands.launch ... train_network.py ARGS`, for the sweep's process tests.

On PYTHONPATH (tests/fakes/fake_accelerate) it shadows the real accelerate for the trainer process only:
the planned command line of a real plan then starts tests/fakes/fake_trainer.py --launcher with the
script's arguments. $KW_FAKE_TRAINER_RULES (JSON) adds fake-trainer options per variant:
{"network_dim=8": ["--crash-at", "3"], "*": ["--step-delay", "0.2"]} matches config.toml values.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef,import-not-found]

FAKE_TRAINER = Path(__file__).resolve().parents[3] / "fake_trainer.py"


def main() -> None:
    argv = sys.argv[1:]
    script = next(i for i, a in enumerate(argv) if a.endswith(".py"))
    rest = argv[script + 1:]
    config = rest[rest.index("--config_file") + 1]
    flat: dict = {}
    for key, value in tomllib.loads(Path(config).read_text()).items():
        flat.update(value) if isinstance(value, dict) else flat.__setitem__(key, value)
    extra: list[str] = []
    for match, options in json.loads(os.environ.get("KW_FAKE_TRAINER_RULES") or "{}").items():
        key, _, want = match.partition("=")
        if match == "*" or (key in flat and str(flat[key]).lower() == want.lower()):
            extra += options
    os.execv(sys.executable, [sys.executable, str(FAKE_TRAINER), "--launcher", *extra, *rest])


if __name__ == "__main__":
    main()
