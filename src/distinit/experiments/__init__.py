"""Experiments: stages run by one engine (`engine.py`), and the front ends that describe them:
`distinit chain` (a file of stages), `distinit demo` (Table 1) and `distinit reproduce` (the
papers' ablations, `catalog.py`)."""
