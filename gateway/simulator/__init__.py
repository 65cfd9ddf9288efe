"""The SMSC simulator (``ulak smsc-sim``): the other end of our binds in tests, demo and bench.

It runs the SMSC side of :class:`protocols.session.Session` over trio TCP and adds what an
operator's SMSC decides: accounts and bind limits, a response delay, a TPS limit answered with
ESME_RTHROTTLED, a window limit answered with ESME_RMSGQFUL, hex message ids, receipts after a
delay with a mix of final states (some before their submit_sm_resp), MO messages, connection
drops and a peer that stops answering enquire_link. Every submit_sm received is logged as a JSON
line and kept in memory for tests.

Start it inside a nursery::

    handle = await nursery.start(serve_simulator, SimulatorSettings(tps_limit=100))
    ... connect to 127.0.0.1:handle.port ...
"""

from __future__ import annotations

from ._cli import add_arguments, run_from_args, settings_from_args
from ._log import SubmitRecord
from ._server import SimulatorHandle, serve_simulator
from ._settings import RECEIPT_STATES, MoMessage, SimulatorSettings, parse_receipt_mix
from ._stats import BindStats, SimulatorStats

__all__ = [
    "RECEIPT_STATES",
    "BindStats",
    "MoMessage",
    "SimulatorHandle",
    "SimulatorSettings",
    "SimulatorStats",
    "SubmitRecord",
    "add_arguments",
    "parse_receipt_mix",
    "run_from_args",
    "serve_simulator",
    "settings_from_args",
]
