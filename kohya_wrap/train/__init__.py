"""The train stage: launch the planned trainer, follow it, stop it safely, verify and record its output.

- job.py: what train reads from RUN_DIR/plan.json
- runner.py: run_training() -> TrainResult (events.jsonl, train.log, run.json)
- outcome.py: how a run ended, its exit code and advice
- verify.py: the LoRA checks against the plan
- manifest.py: run.json (versions, hashes, checkpoints)
"""
