"""The ``ulak`` command line.

Exit codes (DESIGN §4): 0 ok, 2 usage or config error, 1 any other failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _cmd_bench_codec(args: argparse.Namespace) -> int:
    from benchmarks.codec import run

    run(seconds=args.seconds, as_json=args.json)
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config

    try:
        load_config(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: ok")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ulak", description="Ulak SMPP 3.4 SMS gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a TOML config file")
    check.add_argument("file", help="path to the TOML config")
    check.set_defaults(handler=_cmd_check_config)

    bench = commands.add_parser("bench", help="run a load scenario")
    scenarios = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    codec = scenarios.add_parser("codec", help="PDU encode/decode rates, ours vs smpplib")
    codec.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    codec.add_argument("--json", action="store_true", help="also print one JSON line")
    codec.set_defaults(handler=_cmd_bench_codec)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        code: int = handler(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return code


if __name__ == "__main__":
    sys.exit(main())
