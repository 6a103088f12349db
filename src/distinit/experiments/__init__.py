"""Experiments: stages (`runner.Stage`) run by one runner (`runner.run_stage`, scheduled by
the one scheduler `parallel.run_graph`, in order or side by side), and the front ends that describe them:
`distinit chain` (a file of stages), `distinit demo` (Table 1), `distinit reproduce` (the papers'
ablations, `catalog.py`) and `distinit real-demo`."""
