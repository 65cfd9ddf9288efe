"""The Ulak daemon: config, bind supervision, routing, scheduling, HTTP API and the CLI."""
