"""kohya-wrap: photos -> prepare -> plan -> train -> report, over kohya-ss sd-scripts."""

__version__ = "0.1.0"
