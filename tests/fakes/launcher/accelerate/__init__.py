"""A stand-in for the `accelerate` package, on the trainer's PYTHONPATH only (tests/fakes/run_dir.py)."""
