"""Print the data.cache_dir that `distinit COMMAND ARGS...` resolves to (defaults, the YAML file,
then key=value overrides): the folder launch.sh copies to a node's local disk
(DISTINIT_STAGE_TO). Usage: python scripts/slurm/cache_dir.py COMMAND [ARGS...]"""

from __future__ import annotations

import sys

from distinit.config import config_from_args
from distinit.errors import UserError, one_line
from distinit.methods import any_config_class


def main(argv: list[str]) -> int:
    # CONFIG.yaml and key=value only: not the command, pretrain's METHOD, flags or their values.
    args = [a for a in argv[1:] if not a.startswith("-") and ("=" in a or a.endswith(".yaml"))]
    try:
        print(config_from_args(args, any_config_class()).data.cache_dir)
    except UserError as e:
        print(f"launch.sh: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
