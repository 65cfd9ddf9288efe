"""Class queues, ingress and the durable stores (SQLite and PostgreSQL)."""
