"""``ulak smsc-sim``: the simulator as a process (the coordinator wires the subcommand here)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from typing import TextIO

import trio

from gateway.clock import PreciseClock

from ._server import SimulatorHandle, serve_simulator
from ._settings import MoMessage, SimulatorSettings, parse_receipt_mix

__all__ = ["add_arguments", "run_from_args", "settings_from_args"]


def _account(spec: str) -> tuple[str, str]:
    system_id, sep, password = spec.partition(":")
    if not sep or not system_id:
        raise argparse.ArgumentTypeError(f"account must be SYSTEM_ID:PASSWORD, got {spec!r}")
    return system_id, password


def _mo(spec: str) -> MoMessage:
    try:
        return MoMessage.parse(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mix(spec: str) -> dict[str, float]:
    try:
        return parse_receipt_mix(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(spec: str) -> float:
    value = float(spec)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {spec}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (``ulak smsc-sim`` and ``python -m``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=2775, help="TCP port (0: ephemeral)")
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        type=_account,
        metavar="SYSTEM_ID:PASSWORD",
        help="an account that may bind (repeatable; default ulak:secret)",
    )
    parser.add_argument("--max-binds", type=int, default=8, help="binds per account")
    parser.add_argument(
        "--rtt-ms", type=float, default=0.0, help="delay of everything the simulator sends"
    )
    parser.add_argument(
        "--release-spin-us",
        type=float,
        default=0.0,
        help="busy-wait before each delayed response for exact timing (costs CPU)",
    )
    parser.add_argument("--tps", type=float, default=None, help="per-bind submit_sm/s limit")
    parser.add_argument(
        "--max-window", type=int, default=None, help="unanswered submit_sm per bind allowed"
    )
    parser.add_argument(
        "--receipts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send delivery receipts when registered_delivery asks",
    )
    parser.add_argument(
        "--receipt-delay-ms", type=float, default=0.0, help="time from submit_sm to its receipt"
    )
    parser.add_argument(
        "--receipt-mix",
        type=_mix,
        default={"DELIVRD": 1.0},
        metavar="STATE=WEIGHT,...",
        help='final states and weights, e.g. "DELIVRD=0.9,UNDELIV=0.1"',
    )
    parser.add_argument(
        "--receipt-ids",
        choices=("hex", "decimal"),
        default="hex",
        help="how the message id is written in the receipt text",
    )
    parser.add_argument(
        "--early-receipts",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="fraction of receipts sent before their submit_sm_resp",
    )
    parser.add_argument(
        "--deliver-window",
        type=int,
        default=100,
        help="receipts and MO awaiting deliver_sm_resp per bind",
    )
    parser.add_argument(
        "--drop-after", type=int, default=None, metavar="N", help="close after N PDUs received"
    )
    parser.add_argument(
        "--mo",
        action="append",
        type=_mo,
        default=[],
        metavar="FROM:TO:TEXT",
        help="MO message delivered after the first receiver bind (repeatable)",
    )
    parser.add_argument(
        "--enquire-link-s",
        type=float,
        default=None,
        help="send enquire_link after this many idle seconds (off by default)",
    )
    parser.add_argument(
        "--no-enquire-link-resp",
        action="store_true",
        help="never answer enquire_link (a dead peer)",
    )
    parser.add_argument("--log", default=None, metavar="FILE", help="JSON-lines submit log")
    parser.add_argument("--seed", type=int, default=0, help="receipt states and early receipts")
    parser.add_argument(
        "--status-interval-s", type=float, default=None, help="print the status line this often"
    )


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    """Build settings from parsed options; raises ValueError on inconsistent values."""
    accounts = dict(args.accounts) if args.accounts else {"ulak": "secret"}
    return SimulatorSettings(
        host=args.host,
        port=args.port,
        accounts=accounts,
        max_binds_per_account=args.max_binds,
        response_delay_s=args.rtt_ms / 1000.0,
        release_spin_s=args.release_spin_us / 1_000_000.0,
        tps_limit=args.tps,
        max_window=args.max_window,
        receipts=args.receipts,
        receipt_delay_s=args.receipt_delay_ms / 1000.0,
        receipt_mix=args.receipt_mix,
        receipt_id_format=args.receipt_ids,
        early_receipt_fraction=args.early_receipts,
        deliver_window=args.deliver_window,
        drop_after_pdus=args.drop_after,
        mo_messages=tuple(args.mo),
        enquire_link_interval_s=args.enquire_link_s,
        stop_answering_enquire_link=args.no_enquire_link_resp,
        log_path=args.log,
        keep_records=False,  # a long-running process must not grow a list per message
        seed=args.seed,
    )


def _print(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


async def _main(
    settings: SimulatorSettings, status_interval_s: float | None, clock: PreciseClock
) -> None:
    out = sys.stdout
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.watch)
        # Signals are caught before the "listening" line, so a supervisor that stops us as
        # soon as it has read the line always gets a clean exit.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) as signals:
            handle: SimulatorHandle = await nursery.start(serve_simulator, settings)
            _print(out, f"ulak smsc-sim listening on {settings.host}:{handle.port}")
            if status_interval_s:
                nursery.start_soon(_status_loop, handle, status_interval_s, out)
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    for name, value in handle.stats.as_dict().items():
                        _print(out, f"{name}: {value}")
                    continue
                _print(out, f"stopping: {handle.status_line()}")
                nursery.cancel_scope.cancel()
                return


async def _status_loop(handle: SimulatorHandle, interval_s: float, out: TextIO) -> None:
    while True:
        await trio.sleep(interval_s)
        _print(out, handle.status_line())


def run_from_args(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM; return the exit code (0, or 2 on bad options)."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"smsc-sim: {exc}", file=sys.stderr)
        return 2
    # The simulator allocates a few short-lived objects per PDU and keeps few cycles: collect
    # the young generation less often, and never rescan what exists at start (imports).
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    failure: BaseException | None = None
    try:
        clock = PreciseClock()
        trio.run(_main, settings, args.status_interval_s, clock, clock=clock)
    except* OSError as group:  # the port is taken, the log file cannot be opened, ...
        failure = group.exceptions[0]
    if failure is not None:
        print(f"smsc-sim: {failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.simulator", description="Ulak SMSC simulator (SMPP 3.4)"
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
