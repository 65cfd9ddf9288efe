"""Load scenarios behind ``ulak bench``: each prints a table and, with ``--json``, one JSON line."""
