"""A stand-in for `python -m accelerate.commands.launch`: the process boundary the process tier fakes.

train builds the real launch command (accelerate's flags, then sd-scripts' train_network.py and its
arguments). This module skips accelerate's flags and runs tests/fakes/fake_trainer.py in their place
with the script's arguments, plus the fake trainer's own options from $FAKE_TRAINER_ARGS (a JSON list)
and --launcher unless $FAKE_LAUNCHER is "0".
"""

import json
import os
import sys
from pathlib import Path

FAKE_TRAINER = Path(__file__).resolve().parents[3] / "fake_trainer.py"

args = sys.argv[1:]
script = next((i for i, a in enumerate(args) if a.endswith("train_network.py")), None)
if script is None:
    sys.exit("fake accelerate launch: no train_network.py in the command line")
own = json.loads(os.environ.get("FAKE_TRAINER_ARGS") or "[]")
launcher = [] if os.environ.get("FAKE_LAUNCHER") == "0" else ["--launcher"]
with open(os.environ["FAKE_LAUNCH_LOG"], "a") if os.environ.get("FAKE_LAUNCH_LOG") else open(os.devnull, "w") as log:
    log.write(json.dumps(sys.argv) + "\n")
os.execv(sys.executable, [sys.executable, str(FAKE_TRAINER), *launcher, *own, *args[script + 1:]])
