"""The GPU check's code (scripts/gpu_check.py is its entry point; its docstring says what the
check does). The parent process:

- arguments.py: the command line; routes to the parent or to a part's process (--child)
- parent.py: sets PYTHONPATH and the context, runs the parts in order within the deadline
- pythonpath.py: whether a module imports; wheels unpacked for PYTHONPATH
- runner.py: one part in a process of its own, stopped at its time limit
- report.py: the Markdown report
- plan.py: the parts, their sections and time limits

A part's process:

- child.py: runs part_KIND and writes its result
- part_env.py, part_amp.py, part_ddp.py, part_cli.py, part_bench.py, part_decode.py: the parts
- student.py: the student, its batch and gradient comparison (part_amp, part_ddp)
- run_distinit.py: `python -m distinit.cli` within a part's deadline

Shared: constants.py (paths, result names, tolerances), text.py, result_file.py.
"""
