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


def _cmd_bench_binds(args: argparse.Namespace) -> int:
    from benchmarks.binds import run
    from gateway.runtime import tune_interpreter

    tune_interpreter()
    run(
        binds=args.binds,
        window=args.window,
        rtt_ms=args.rtt_ms,
        tps=args.tps,
        seconds=args.seconds,
        as_json=args.json,
    )
    return EXIT_OK


def _cmd_bench_simulator(args: argparse.Namespace) -> int:
    from benchmarks.simulator import run

    run(messages=args.messages, as_json=args.json)
    return EXIT_OK


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from benchmarks.pipeline import run
    from gateway.runtime import tune_interpreter

    tune_interpreter()
    run(
        messages=args.messages,
        backlog=args.backlog,
        rtt_ms=args.rtt_ms,
        binds=args.binds,
        window=args.window,
        store=args.store,
        memory_count=args.memory_messages,
        as_json=args.json,
    )
    return EXIT_OK


def _cmd_bench_http(args: argparse.Namespace) -> int:
    from benchmarks.http_ingress import run
    from gateway.runtime import tune_interpreter

    tune_interpreter()
    run(messages=args.messages, clients=args.clients, binds=args.binds, as_json=args.json)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(as_json=args.json)


def _cmd_bench_redis(args: argparse.Namespace) -> int:
    from benchmarks.redis_ingress import run
    from gateway.runtime import tune_interpreter

    tune_interpreter()
    run(
        args.messages,
        args.json,
        rtt_ms=args.rtt_ms,
        binds=args.binds,
        window=args.window,
        batch=args.batch,
        url=args.redis_url,
        entry_keys=not args.no_entry_keys,
    )
    return EXIT_OK


def _cmd_bench_recovery(args: argparse.Namespace) -> int:
    from benchmarks.recovery import run

    run(messages=args.messages, fill_tps=args.fill_tps, as_json=args.json)
    return EXIT_OK


def _cmd_smsc_sim(args: argparse.Namespace) -> int:
    from gateway.simulator import run_from_args

    return run_from_args(args)


def _cmd_run(args: argparse.Namespace) -> int:
    import trio

    from gateway.config import ConfigError, load_config
    from gateway.daemon import run_daemon
    from gateway.logs import configure

    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    configure(settings.log.level, settings.log.format)
    from gateway.runtime import tune_interpreter

    tune_interpreter()
    trio.run(run_daemon, settings)
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

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default="/etc/ulak/ulak.toml", help="the TOML config")
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser("check-config", help="validate a TOML config file")
    check.add_argument("file", help="path to the TOML config")
    check.set_defaults(handler=_cmd_check_config)

    bench = commands.add_parser("bench", help="run a load scenario")
    scenarios = bench.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    codec = scenarios.add_parser("codec", help="PDU encode/decode rates, ours vs smpplib")
    codec.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    codec.add_argument("--json", action="store_true", help="also print one JSON line")
    codec.set_defaults(handler=_cmd_bench_codec)

    binds = scenarios.add_parser("binds", help="submit throughput through the bind supervisor")
    binds.add_argument("--binds", type=int, default=1, help="binds (connections)")
    binds.add_argument("--window", type=int, default=100, help="outstanding submit_sm per bind")
    binds.add_argument("--rtt-ms", type=float, default=0.0, help="simulated SMSC round trip")
    binds.add_argument("--tps", type=float, default=None, help="per-bind TPS (default: none)")
    binds.add_argument("--seconds", type=float, default=5.0, help="measurement time")
    binds.add_argument("--json", action="store_true", help="also print one JSON line")
    binds.set_defaults(handler=_cmd_bench_binds)

    sim = scenarios.add_parser("simulator", help="SMSC simulator submit_sm rate per CPU second")
    sim.add_argument("--messages", type=int, default=200_000, help="submit_sm to send")
    sim.add_argument("--json", action="store_true", help="also print one JSON line")
    sim.set_defaults(handler=_cmd_bench_simulator)

    pipe = scenarios.add_parser("pipeline", help="the pipeline end to end, durable store")
    pipe.add_argument("--messages", type=int, default=50_000, help="messages for throughput")
    pipe.add_argument("--backlog", type=int, default=100_000, help="marketing flood before OTPs")
    pipe.add_argument("--rtt-ms", type=float, default=5.0, help="simulated SMSC round trip")
    pipe.add_argument("--binds", type=int, default=4, help="binds to the simulator")
    pipe.add_argument("--window", type=int, default=100, help="window per bind")
    pipe.add_argument("--store", default=None, help="postgresql://... (default: SQLite)")
    pipe.add_argument(
        "--memory-messages", type=int, default=1_000_000, help="queued for the memory figure"
    )
    pipe.add_argument("--json", action="store_true", help="also print one JSON line")
    pipe.set_defaults(handler=_cmd_bench_pipeline)

    http = scenarios.add_parser("http", help="HTTP ingress end to end: single and batch POSTs")
    http.add_argument("--messages", type=int, default=20_000, help="messages in batch mode")
    http.add_argument("--clients", type=int, default=16, help="concurrent single-POST clients")
    http.add_argument("--binds", type=int, default=4, help="the daemon's binds to the simulator")
    http.add_argument("--json", action="store_true", help="also print one JSON line")
    http.set_defaults(handler=_cmd_bench_http)

    demo = commands.add_parser("demo", help="simulator + daemon + a realistic mix, live")
    demo.add_argument("--json", action="store_true", help="also print the summary as JSON")
    demo.set_defaults(handler=_cmd_demo)

    redis = scenarios.add_parser("redis", help="Redis stream ingress end to end, durable SQLite")
    redis.add_argument("--messages", type=int, default=50_000, help="entries through the stream")
    redis.add_argument("--rtt-ms", type=float, default=5.0, help="simulated SMSC round trip")
    redis.add_argument("--binds", type=int, default=4, help="binds to the simulator")
    redis.add_argument("--window", type=int, default=100, help="window per bind")
    redis.add_argument("--batch", type=int, default=500, help="entries per XREADGROUP")
    redis.add_argument("--redis-url", default=None, help="default: $ULAK_REDIS_URL or local")
    redis.add_argument("--no-entry-keys", action="store_true", help="no entry-id idempotency keys")
    redis.add_argument("--json", action="store_true", help="also print one JSON line")
    redis.set_defaults(handler=_cmd_bench_redis)

    recovery = scenarios.add_parser("recovery", help="restart after kill -9 with a backlog")
    recovery.add_argument("--messages", type=int, default=100_000, help="accepted before kill")
    recovery.add_argument("--fill-tps", type=float, default=25.0, help="per-bind TPS while filling")
    recovery.add_argument("--json", action="store_true", help="also print one JSON line")
    recovery.set_defaults(handler=_cmd_bench_recovery)

    from gateway.simulator import add_arguments

    smsc = commands.add_parser("smsc-sim", help="run the SMSC simulator")
    add_arguments(smsc)
    smsc.set_defaults(handler=_cmd_smsc_sim)
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
