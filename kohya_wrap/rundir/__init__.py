"""The run directory's one owner: its file names, the plan record, the run manifest, the lock, and the
fold of its events. Every stage reads and writes a run directory through this package
(docs/run-directory.md describes the layout)."""

from kohya_wrap.rundir.fold import LossPoint, RunFold, SavedFile, fold_events, format_duration, resume_command
from kohya_wrap.rundir.layout import (
    ACCELERATE_CONFIG, CONFIG_TOML, DATASET_DIR, DATASET_TOML, EVENTS_JSONL, LOCK_FILE, OUTPUT_DIR, PLAN_FILES, PLAN_JSON,
    REPORT_HTML, RUN_FILES, RUN_JSON, SAMPLE_PROMPTS, SAMPLES_DIR, SCORE_JSON, TENSORBOARD_DIR, TRAIN_LOG, RunPaths,
    is_planned, paths,
)
from kohya_wrap.rundir.lock import LockHolder, RunBusy, RunLock, lock_holder
from kohya_wrap.rundir.manifest import (
    Attempt, FileEntry, RunManifest, read_manifest, read_manifest_json, record_score, write_manifest,
)
from kohya_wrap.rundir.plan_record import (
    LaunchRequest, Machines, Plan, PlanSubset, check_new_run_dir, read_plan, write_plan,
)

__all__ = [
    "ACCELERATE_CONFIG", "CONFIG_TOML", "DATASET_DIR", "DATASET_TOML", "EVENTS_JSONL", "LOCK_FILE", "OUTPUT_DIR", "PLAN_FILES",
    "PLAN_JSON", "REPORT_HTML", "RUN_FILES", "RUN_JSON", "SAMPLE_PROMPTS", "SAMPLES_DIR", "SCORE_JSON",
    "TENSORBOARD_DIR", "TRAIN_LOG", "Attempt", "FileEntry", "LaunchRequest", "LockHolder", "LossPoint", "Machines",
    "Plan", "PlanSubset", "RunBusy", "RunFold", "RunLock", "RunManifest", "RunPaths", "SavedFile", "check_new_run_dir",
    "fold_events", "format_duration", "is_planned", "lock_holder", "paths", "read_manifest", "read_manifest_json",
    "read_plan", "record_score", "resume_command", "write_manifest", "write_plan",
]
