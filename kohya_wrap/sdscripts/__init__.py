"""Everything kohya-wrap knows about kohya-ss sd-scripts lives in this package.

Script and argument names, the dataset folder convention, the TOML formats it reads, the log
lines it prints and the files it writes. An sd-scripts upgrade touches this package and
nothing else. The rest of kohya-wrap talks to it through plain dataclasses.
"""

REPOSITORY_URL = "https://github.com/kohya-ss/sd-scripts.git"
PINNED_TAG = "v0.10.1"
PINNED_COMMIT = "ae72efb92babe89ff8e70f057e42db68440e8d61"
TRAIN_SCRIPT = "train_network.py"
# Relative to the kohya-wrap source tree (a git submodule).
SUBMODULE_PATH = "third_party/sd-scripts"
ENV_VAR = "KOHYA_WRAP_SD_SCRIPTS"
