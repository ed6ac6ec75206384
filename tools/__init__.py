"""Development tools kept out of the wheel (run from the repository root: ``python -m tools...``)."""
