"""Experiments: stages (`runner.Stage`) run by one runner (`runner.run_stage`, scheduled by
`parallel.run_graph` or, in order, `runner.run_stages`), and the front ends that describe them:
`distinit chain` (a file of stages), `distinit demo` (Table 1), `distinit reproduce` (the papers'
ablations, `catalog.py`) and `distinit real-demo`."""
