"""The bottom layer every process shares: settings, wire formats (codecs) and Kafka clients.

It may import the core and `schemas`, never a process (worker, collector, projector, local
tooling, CLI).
"""
