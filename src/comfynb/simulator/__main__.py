"""Run the simulator in the foreground: ``python -m comfynb.simulator --port 8188 --root DIR``.

Example::

    $ python -m comfynb.simulator --port 8188 --root /tmp/sim --comfyui-version 0.8.0 \\
          --fault http_500_rate=0.1 --seed 7
    comfynb simulator (ComfyUI 0.8.0) on http://127.0.0.1:8188, root /tmp/sim
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "python -m comfynb.simulator") -> argparse.ArgumentParser:
    """The command line of the simulator (``comfynb simulator`` reuses it)."""
    from .specs import DEFAULT_VERSION, SERVER_VERSIONS

    parser = argparse.ArgumentParser(prog=prog, description="A simulated ComfyUI server.")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8188, help="0: a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--root", default=None, help="folder for input/, output/, temp/ (default: a temp folder)"
    )
    parser.add_argument(
        "--comfyui-version",
        choices=SERVER_VERSIONS,
        default=DEFAULT_VERSION,
        dest="version",
        help="behave as this ComfyUI (default: %(default)s)",
    )
    parser.add_argument(
        "--node-seconds", type=float, default=0.0, help="simulated time per node (default: 0)"
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.0,
        help="simulated time per sampler step (default: 0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random faults (default: 0)"
    )
    parser.add_argument(
        "--checkpoints",
        default=None,
        metavar="NAMES",
        help=(
            "the checkpoint files it has, comma-separated; '' for none, as a server without "
            "model files (default: the SD 1.5 and SDXL ones ComfyUI's default graphs load)"
        ),
    )
    parser.add_argument(
        "--faults", default=None, help='fault set as JSON, e.g. {"http_500_rate": 0.1}'
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one fault, e.g. http_500_rate=0.1 (repeatable; added to --faults)",
    )
    return parser


def _faults(args: argparse.Namespace) -> dict[str, Any]:
    from .faults import Faults, parse_fault_args

    faults: dict[str, Any] = json.loads(args.faults) if args.faults else {}
    faults.update(parse_fault_args(args.fault))
    Faults().set(faults)  # raises ValueError on an unknown key
    return faults


def _stop_on_sigterm(stop: threading.Event) -> None:
    """Make SIGTERM stop the server cleanly (as Ctrl-C does), when we run on the main thread."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


def main(
    argv: Sequence[str] | None = None,
    *,
    stop: threading.Event | None = None,
    prog: str = "python -m comfynb.simulator",
) -> int:
    """Serve until Ctrl-C, SIGTERM or ``stop`` is set; return the exit status.

    Example::

        main(["--port", "8188", "--root", "sim"], prog="comfynb simulator")
    """
    from . import Simulator

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        faults = _faults(args)
    except ValueError as exc:
        parser.error(f"bad fault set: {exc}")
    sim = Simulator(
        root=args.root,
        version=args.version,
        host=args.host,
        port=args.port,
        seed=args.seed,
        node_seconds=args.node_seconds,
        step_seconds=args.step_seconds,
        faults=faults or None,
        checkpoints=(
            None
            if args.checkpoints is None
            else [name.strip() for name in args.checkpoints.split(",") if name.strip()]
        ),
    )
    waiter = stop or threading.Event()
    _stop_on_sigterm(waiter)
    try:
        sim.start()
    except OSError as exc:  # the port is taken, the address is not this machine's
        print(
            f"{prog}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
            "pick another --port (0: a free one) or --host",
            file=sys.stderr,
        )
        return 1
    with sim:
        print(
            f"comfynb simulator (ComfyUI {args.version}) on {sim.url}, root {sim.root}", flush=True
        )
        try:
            while not waiter.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
