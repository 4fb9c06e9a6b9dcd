"""``fluvial token``."""
