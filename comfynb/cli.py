"""The ``comfynb`` command: ``comfynb demo`` and ``comfynb simulator``.

Example::

    $ comfynb demo                      # a txt2img prompt through the client, on the embedded simulator
    $ comfynb simulator --port 8188     # a ComfyUI double in the foreground
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``comfynb`` command line; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "simulator":
        from .simulator.__main__ import main as simulator_main

        return simulator_main(args[1:], prog="comfynb simulator")
    parser = _parser()
    parsed = parser.parse_args(args)
    if parsed.command == "demo":
        from .demo import run_demo

        return run_demo(out_dir=parsed.out, server=parsed.server, steps=parsed.steps)
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfynb", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser(
        "demo", help="queue a txt2img prompt and collect its image (embedded simulator by default)"
    )
    demo.add_argument(
        "--out", default="comfynb-demo", help="folder for the images (default: %(default)s)"
    )
    demo.add_argument(
        "--server", default=None, help="a ComfyUI URL instead of the embedded simulator"
    )
    demo.add_argument("--steps", type=int, default=20, help="sampler steps (default: %(default)s)")
    commands.add_parser(
        "simulator", help="run the ComfyUI simulator (see: comfynb simulator --help)"
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
