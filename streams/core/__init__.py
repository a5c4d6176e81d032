"""The qualification core: rules, scoring, the lead lifecycle and the account roll-up.

Pure and deterministic: no I/O, no clock, no randomness; it imports only `schemas`,
`streams.errors` and the standard library (pydantic and tomllib for the rules file). The worker,
`leadflow replay` and the tests call the same functions, so the same log gives the same stage
changes, byte for byte.
"""
