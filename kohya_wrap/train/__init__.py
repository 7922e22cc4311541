"""The train stage: resolve the machine, launch the planned trainer, follow it, stop it safely, verify
and record its output.

- machine.py: where the run trains (interpreter, sd-scripts checkout, GPUs, precision), at launch
- runner.py: prepare_run() (the exact command, --dry-run) and run_training() -> TrainResult
- outcome.py: how a run ended, its exit code and advice
- verify.py: the LoRA checks against the plan
- manifest.py: what run.json records of the environment and the base model
"""
