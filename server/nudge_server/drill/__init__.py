"""The fault drill: steady Decide and ReportOutcome load against private Redis and PostgreSQL
servers while they are killed, stopped, hung and restarted, then a check from PostgreSQL that
no user got more prompts in a local day than the cap, that every answered decision and every
acknowledged outcome is logged exactly once, and that no call got INTERNAL.

Run it with `scripts/fault-drill` (or `python -m nudge_server.drill --help`). The pieces:

- `plan`: which faults happen when, the users and their time zones (pure);
- `services`: the private redis-server, PostgreSQL cluster and `nudge serve` processes;
- `load`: the load generator, which records every call's outcome on the client side;
- `checks`: the figures and verdicts from the client's records and PostgreSQL's rows (pure);
- `run`: the command line, the timeline and the clean-up.
"""
