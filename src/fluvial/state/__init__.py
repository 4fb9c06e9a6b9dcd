"""State: checkpoints, operator state, and who owns what (leases and epochs)."""
