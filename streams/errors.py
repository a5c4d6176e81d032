"""leadflow's exceptions: one root, one small subclass per failure a caller may handle."""


class LeadflowError(Exception):
    """Root of every error leadflow raises on purpose."""


class RulesError(LeadflowError):
    """The rules file cannot be read or is invalid."""


class InvalidEventError(LeadflowError):
    """An input message is not a valid leadflow event; `reason` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidStateError(LeadflowError):
    """A stored lead state cannot be decoded (written by an incompatible version)."""


class BrokerUnreachableError(LeadflowError):
    """No Kafka broker answered at the configured address."""


class TopicMissingError(LeadflowError):
    """A topic leadflow reads does not exist on the broker."""


class WorkerCrashedError(LeadflowError):
    """The stream worker stopped on an error; the message says why, in one line."""
