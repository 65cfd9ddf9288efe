"""The config file of a daemon run on this machine against the SMSC simulator: ``ulak demo``,
the benchmarks that start ``ulak run`` and the daemon tests all write theirs here.

One tenant with a known API key (stored as its SHA-256, as in any config), one route to the
simulator, and the store in the same folder (durable SQLite)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

__all__ = ["simulator_config"]


def simulator_config(
    folder: Path,
    port: int,
    *,
    tenant: str,
    api_key: str,
    sender: str,
    route: str = "sim",
    binds: int = 4,
    window: int = 100,
    quiet_hours: tuple[dt.time, dt.time] | None = None,
    route_extra: str = "",
    tenant_extra: str = "",
    extra: str = "",
) -> Path:
    """Write ``folder/ulak.toml`` and return its path.

    Args:
        port: the simulator's SMPP port on 127.0.0.1.
        quiet_hours: (start, end) of the marketing quiet hours; None turns them off.
        route_extra: more TOML keys of the route (e.g. ``"tps = 50"``).
        tenant_extra: more TOML keys of the tenant (e.g. its ``callback_url``).
        extra: more TOML tables, at the end (e.g. ``[redis]``).
    """
    if quiet_hours is None:
        quiet = "enabled = false"
    else:
        start, end = quiet_hours
        quiet = f'start = "{start:%H:%M}"\nend = "{end:%H:%M}"'
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    path = folder / "ulak.toml"
    path.write_text(
        f"""
[http]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{folder / "ulak.db"}"
[quiet_hours]
{quiet}
[[tenants]]
name = "{tenant}"
api_key_sha256 = "{digest}"
require_opt_in = false
default_sender = "{sender}"
{tenant_extra}
[[routes]]
name = "{route}"
prefixes = [""]
host = "127.0.0.1"
port = {port}
system_id = "ulak"
password = "secret"
bind = "transceiver"
binds = {binds}
window = {window}
{route_extra}
{extra}
""",
        encoding="utf-8",
    )
    return path
