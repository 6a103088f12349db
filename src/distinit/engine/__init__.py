"""The training engine: the Method contract, the one loop, checkpoints, processes and devices."""
