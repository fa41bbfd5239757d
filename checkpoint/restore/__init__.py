"""Collective restore: newest verified step, fastest good level, resharding."""
