"""leadflow's streaming side: the qualification core and the processes around it.

- `core/`: the pure, deterministic qualification core (rules, scoring, lifecycle, accounts).
- `common/`: settings, codecs and Kafka clients, shared by every process.
- `worker/`, `collector/`: the Faust worker and the HTTP edge, thin shells around the core.
- `replay.py`: the core over a log, offline; `cli.py`: the one `leadflow` command line.
- `local/`: tooling for this machine (local broker, demo, generator), not production code.
- `errors.py`: the root of every error leadflow raises on purpose.
"""
