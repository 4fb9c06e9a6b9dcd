"""fluvial: IoT event data on the Lambda and Kappa architectures."""

__version__ = "0.1.0"
