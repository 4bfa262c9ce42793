"""Ablations: every model x every seed under one recipe, and what is noise (``yololab compare``)."""
