"""Not sd-scripts: the file a checkout must hold for kohya-wrap to take this folder as one (process tier).

The fake accelerate launcher (tests/fakes/launcher) runs tests/fakes/fake_trainer.py in its place.
"""
