"""The presets kohya-wrap ships (TOML files), found with importlib.resources."""
