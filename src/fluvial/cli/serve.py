"""``fluvial serve``."""
