"""`distinit synth OUT_DIR --seed N [--size small|medium] [--preview PNG]`."""

from __future__ import annotations

from distinit.arguments import Parser
from distinit.data.synth.generate import generate_world
from distinit.data.synth.world import SIZES


def main(argv: list[str]) -> int:
    parser = Parser(
        prog="distinit synth",
        description="Write the synthetic world: object and scene stills, an unlabeled video "
                    "corpus and a labeled action set in HMDB-51 format. Deterministic for a "
                    "seed; a folder that already holds the same world is left as it is.",
    )
    parser.add_argument("out_dir", help="folder to write the world into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", choices=list(SIZES), default="small",
                        help="world size (default small; tiny is for tests)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: all cores; the output does not depend on it)")
    parser.add_argument("--preview", metavar="PNG", help="also write a picture of sample stills and frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    world = generate_world(args.out_dir, seed=args.seed, size=args.size, workers=args.workers,
                           progress=not args.quiet)
    print(world.summary())
    if args.preview:
        from distinit.data.synth.preview import write_preview

        print(f"preview: {write_preview(world, args.preview)}")
    return 0
