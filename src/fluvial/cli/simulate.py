"""``fluvial simulate``."""
