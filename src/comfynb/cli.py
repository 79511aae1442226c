"""The ``comfynb`` command: ``comfynb demo``, ``comfynb simulator`` and ``comfynb worker``.

Example::

    $ comfynb demo                      # a sweep and a refine on the embedded simulator
    $ comfynb simulator --port 8188     # a ComfyUI double in the foreground
    $ comfynb worker --db lab.duckdb --server http://127.0.0.1:8188    # run the store's jobs
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

logger = logging.getLogger("comfynb.cli")

# as in comfynb.demo (not imported here: `comfynb --help` stays quick)
DEMO_DB = "comfynb-demo/demo.duckdb"
DEMO_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"


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

        server = parsed.server
        if server is None:  # COMFYUI_URL's first server, the notebooks' setting (core.settings)
            from .core.settings import settings
            from .errors import InvalidInput

            try:
                named = settings().servers
            except InvalidInput as exc:
                parser.error(str(exc))
            server = named[0] if named else None
        return run_demo(
            db=parsed.db, out=parsed.out, server=server, ckpt=parsed.ckpt, steps=parsed.steps
        )
    if parsed.command == "worker":
        db, servers, output_dir = _worker_settings(parser, parsed)
        return run_worker(
            db,
            servers,
            output_dir=output_dir,
            target_depth=parsed.target_depth,
            until_idle=parsed.until_idle,
            reroute_after=parsed.reroute_after,
        )
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfynb",
        description="Prompt experiments on ComfyUI, from a notebook. Start with: comfynb demo",
        epilog=(
            "Settings from the environment: COMFYUI_URL (your ComfyUI server(s)), "
            "COMFYUI_TOKEN, COMFYNB_DB, COMFYNB_OUTPUT; see the README."
        ),
    )
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser(
        "demo",
        help="sweep ComfyUI's default txt2img graph and refine the best (embedded simulator)",
        description=(
            "Start the embedded ComfyUI simulator (or use --server), sweep the default txt2img "
            "graph over 3 seeds x 2 cfg values in the store's run 'demo', refine the best "
            "candidate (the first picked, else the first), and print the candidates, a "
            "contact sheet and the lines that open the store in a notebook. Run again on the "
            "same --db: it continues, adding nothing done already."
        ),
    )
    demo.add_argument(
        "--db",
        default=DEMO_DB,
        metavar="FILE",
        help="the store's DuckDB file, created or reused (default: %(default)s)",
    )
    demo.add_argument(
        "--out",
        "--output-dir",
        dest="out",
        default=None,
        metavar="DIR",
        help="where images go (default: outputs beside the --db file)",
    )
    demo.add_argument(
        "--server",
        default=None,
        type=_server_arg,
        metavar="URL",
        help="a ComfyUI URL instead of the embedded simulator (default: $COMFYUI_URL if set)",
    )
    demo.add_argument(
        "--ckpt",
        default=DEMO_CHECKPOINT,
        metavar="NAME",
        help="the checkpoint file the graph loads (default: %(default)s)",
    )
    demo.add_argument(
        "--steps",
        type=_positive,
        default=20,
        metavar="N",
        help="sampler steps (default: %(default)s)",
    )
    commands.add_parser(
        "simulator", help="run the ComfyUI simulator (see: comfynb simulator --help)"
    )
    worker = commands.add_parser(
        "worker",
        help="run a store's jobs on ComfyUI servers, and serve the store to notebooks",
        description=(
            "Own the store's file, run its jobs on the servers until stopped (SIGTERM or "
            "Ctrl-C), and serve the store to notebooks: comfynb.open(DB) there reaches it "
            "through this process. One line per job transition on stderr."
        ),
    )
    worker.add_argument(
        "--db", help="the store's DuckDB file, created if missing (default: $COMFYNB_DB)"
    )
    worker.add_argument(
        "--server",
        action="append",
        type=_server_arg,
        help="a ComfyUI URL (http://host:port); repeat for several servers (default: $COMFYUI_URL)",
    )
    worker.add_argument(
        "--output-dir",
        default=None,
        help="where images go (default: $COMFYNB_OUTPUT, else outputs beside the file)",
    )
    worker.add_argument(
        "--target-depth",
        type=int,
        default=2,
        help="prompts kept queued on each server (default: %(default)s)",
    )
    worker.add_argument(
        "--until-idle",
        action="store_true",
        help=(
            "exit once nothing is pending or in flight (scripts), instead of waiting for jobs; "
            "exit 1 if jobs are left and no server could be used for --reroute-after seconds"
        ),
    )
    worker.add_argument(
        "--reroute-after",
        type=_seconds,
        default=10.0,
        help=(
            "seconds a server may stay down before its jobs go to the others (default: %(default)s)"
        ),
    )
    return parser


def _worker_settings(
    parser: argparse.ArgumentParser, parsed: argparse.Namespace
) -> tuple[str, list[str], str | None]:
    """``comfynb worker``'s file, servers and output folder: the flags, else the environment."""
    from .core.settings import DB, URL, settings
    from .errors import InvalidInput

    try:
        env = settings()
    except InvalidInput as exc:
        parser.error(str(exc))
    db = parsed.db or env.db
    if db is None:
        parser.error(f"the store's file is needed: --db FILE, or set {DB}")
    servers = parsed.server or list(env.servers)
    if not servers:
        parser.error(f"a server is needed: --server http://HOST:PORT, or set {URL}")
    return db, servers, parsed.output_dir or env.output


def _server_arg(value: str) -> str:
    """A ``--server`` value, checked at once (``core.urls``): the error shows what to write."""
    from .core.urls import server_url
    from .errors import InvalidInput

    try:
        server_url(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"a whole number from 1, got {value!r}")
    return number


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"a number of seconds from 0, got {value!r}")
    return seconds


def run_worker(
    db: str,
    servers: Sequence[str],
    *,
    output_dir: str | None = None,
    target_depth: int = 2,
    until_idle: bool = False,
    reroute_after: float = 10.0,
) -> int:
    """``comfynb worker``: own ``db``, serve it to notebooks, run its jobs until stopped.

    SIGTERM or Ctrl-C stops the worker at the end of its round (posted jobs recorded as
    submitted, claimed ones released: nothing ambiguous), removes the endpoint file and closes
    the file; a second signal interrupts at once. Returns the exit code: 0 after a clean stop,
    1 when the store or the servers could not be used (the message says why; with
    ``until_idle``, jobs left and no server usable for ``reroute_after`` seconds), 130 after
    a second signal.

    Example::

        $ comfynb worker --db lab.duckdb --server http://127.0.0.1:8188 --server http://gpu2:8188
    """
    from .errors import ComfynbError
    from .service.remote import serve
    from .store import Store
    from .worker.worker import Worker

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the log
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop waiting for the round to end
        logger.info("%s: stopping at the end of this round", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Store.open(db, output_dir) as store, serve(store, servers=servers):
            worker = Worker(store, servers, target_depth=target_depth, reroute_after=reroute_after)
            summary = worker.run(until_idle=until_idle, stop=stop)
        logger.info(
            "done: %d completed, %d failed, %d requeued in %.1f s",
            summary.completed,
            summary.failed,
            summary.requeued,
            summary.seconds,
        )
        if summary.stopped_by is not None:
            logger.error("stopped: %s", summary.stopped_by)
            return 1
        return 0
    except ComfynbError as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:  # a file it needs cannot be written (full disk, read-only folder)
        logger.error("cannot go on: %s", exc)
        return 1
    except KeyboardInterrupt:  # the second signal: the round was cut short
        logger.warning("interrupted; the next worker recovers the jobs left on the servers")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
