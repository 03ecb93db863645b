"""Bulwark core: jobs, rounds, transports, clients and the CLI."""
