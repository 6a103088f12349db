"""The argument parser of every `distinit` command: a bad argument is one line, not a usage dump.

argparse prints the usage and then the error on a second line and exits; here the error is a
`UserError`, which `distinit.cli` prints as `distinit COMMAND: error: ...` (exit code 2) like
every other bad input. `--help` still prints the full usage.
"""

from __future__ import annotations

import argparse

from distinit.errors import UserError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's hook for every bad argument
        raise UserError(f"{message} (see {self.prog} --help)")
