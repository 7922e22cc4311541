"""A stand-in for `python -m accelerate.commands.launch`: the process boundary the process tier fakes.

train builds the real launch command (accelerate's flags, then sd-scripts' train_network.py and its
arguments). On the trainer's PYTHONPATH only (tests/fakes/launcher), this module skips accelerate's
flags and runs tests/fakes/fake_trainer.py in their place with the script's arguments, plus the fake
trainer's own options:
- $FAKE_TRAINER_ARGS: a JSON list, for every run;
- $KW_FAKE_TRAINER_RULES: JSON {"network_dim=8": ["--crash-at", "3"], "*": ["--step-delay", "0.2"]},
  options for the runs whose config.toml holds that value (a sweep's variants);
- --launcher (a child process, as accelerate starts one) unless $FAKE_LAUNCHER is "0".
$FAKE_LAUNCH_LOG, when set, gets the command line as one JSON line.
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


def _rule_options(script_args: list[str]) -> list[str]:
    rules = json.loads(os.environ.get("KW_FAKE_TRAINER_RULES") or "{}")
    if not rules or "--config_file" not in script_args:
        return []
    flat: dict[str, object] = {}
    config = Path(script_args[script_args.index("--config_file") + 1])
    for key, value in tomllib.loads(config.read_text()).items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    extra: list[str] = []
    for match, options in rules.items():
        key, _, want = match.partition("=")
        if match == "*" or (key in flat and str(flat[key]).lower() == want.lower()):
            extra += options
    return extra


def main() -> None:
    args = sys.argv[1:]
    script = next((i for i, a in enumerate(args) if a.endswith("train_network.py")), None)
    if script is None:
        sys.exit("fake accelerate launch: no train_network.py in the command line")
    script_args = args[script + 1 :]
    own = json.loads(os.environ.get("FAKE_TRAINER_ARGS") or "[]") + _rule_options(script_args)
    launcher = [] if os.environ.get("FAKE_LAUNCHER") == "0" else ["--launcher"]
    if os.environ.get("FAKE_LAUNCH_LOG"):
        with open(os.environ["FAKE_LAUNCH_LOG"], "a") as log:
            log.write(json.dumps(sys.argv) + "\n")
    os.execv(sys.executable, [sys.executable, str(FAKE_TRAINER), *launcher, *own, *script_args])


if __name__ == "__main__":
    main()
