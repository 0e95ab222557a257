"""EMMA's data engine around the simulator: the oracle re-rendering of recorded states with new appearances and the
geometry-breaking editor baseline (`edits.py`)."""
