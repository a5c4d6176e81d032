"""leadflow's exceptions: one root, one small subclass per failure a caller may handle."""


class LeadflowError(Exception):
    """Root of every error leadflow raises on purpose."""


class RulesError(LeadflowError):
    """The rules file cannot be read or is invalid."""


class InvalidEventError(LeadflowError):
    """An input message is not a valid leadflow event; `reason` says why, in one line.

    `kind` names the failure for the dead-letter topic when it is more than "invalid" (e.g.
    `too_large`); None leaves it to the reader of that input."""

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class InvalidStateError(LeadflowError):
    """A stored lead state cannot be decoded (written by an incompatible version)."""


class BrokerUnreachableError(LeadflowError):
    """No Kafka broker answered at the configured address."""


class TopicMissingError(LeadflowError):
    """A topic leadflow reads does not exist on the broker."""


class WorkerCrashedError(LeadflowError):
    """The stream worker stopped on an error; the message says why, in one line."""


class CannotListenError(LeadflowError):
    """A process cannot listen where its settings say (the port is taken, or the address is
    not this machine's); the message names the setting to change."""


class DataDirError(LeadflowError):
    """A worker's data directory cannot be created, or another worker process holds it."""


class SendFailedError(LeadflowError):
    """The broker did not acknowledge a record leadflow had to send; the message says which
    and why."""
