"""hypotheses layer."""
