"""The sample stage: images from a run's checkpoints (generate.py) and the session records the report reads (session.py)."""
