"""Every error fluvial raises derives from :class:`FluvialError`.

The tree::

    FluvialError
    ├── ConfigError            a setting, argument or flow definition is wrong
    │   └── FlowFileError      a flow file fails on import (fluvial.flowfile; has .tb)
    ├── SchemaError            a schema is malformed or its change is incompatible
    ├── ValidationError        an event does not match the message format (has .path)
    ├── DecodeError            bytes are not valid JSON / MessagePack / UTF-8
    ├── LogError               the event log cannot be opened, read or appended to
    │   ├── CorruptLogError    a record failed its checksum away from the tail
    │   ├── LogUnreachable     a replicated log cannot answer now (election, no quorum): retry
    │   └── LogUnavailable     the server's log writer takes nothing now: retry (server.writer; 503/507)
    ├── FlowError              a flow cannot be planned or run on a runner
    │   └── UnsupportedOperation   the runner cannot execute an operator
    ├── StoreError             the serving store cannot be read or written
    │   ├── StoreUnavailable   the store cannot be reached now (a restart): retry from the checkpoint
    │   ├── ViewNotFound       no view of that name exists
    │   ├── OwnedElsewhere     another live process holds what a runner would write (names it)
    │   └── Fenced             a commit's writer no longer owns what it writes: the commit is void
    │       ├── CheckpointFenced   another writer replaced the checkpoint it read: reload, go on
    │       └── LeaseLost          another process took the runner's lease over: stop
    ├── MissingDependency      an optional extra is not installed
    ├── IngestError            an HTTP ingest request refused as a whole (server.ingest; .status)
    │   ├── AllRejected        every event of a readable body is invalid (422, each dead-lettered)
    │   ├── Shed               refused to stay within the limits (server.limits; 429/503 + Retry-After)
    │   ├── BodyTimeout        the body did not arrive in time (408)
    │   └── ClientGone         the client left before its body was read
    └── AuthError              a request may not do what it asks (server.auth; 401/403)

The server's errors live in its modules (they carry HTTP statuses); the test
``tests/unit/test_public_api.py`` checks that every exception class in fluvial is in this tree.

Messages say what failed, where, and how to fix it.
"""

from __future__ import annotations


class FluvialError(Exception):
    """Root of every exception raised by fluvial."""


class ConfigError(FluvialError):
    """A setting, argument or flow definition is wrong."""


class SchemaError(FluvialError):
    """A schema is malformed, or a new version is incompatible with the old one."""


class ValidationError(FluvialError):
    """An event does not match its schema.

    Attributes:
        path: Where the problem is, as a JSON path (``$.payload.value``).
        reason: What is wrong there (``expected float, got str``).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class DecodeError(FluvialError):
    """Bytes could not be decoded (malformed JSON or MessagePack, bad UTF-8)."""


class LogError(FluvialError):
    """The event log cannot be opened, read or appended to."""


class LogUnreachable(LogError):
    """The log cannot be reached now (its servers restart, a leader is being elected, no quorum
    answers): nothing was read, and the same read may succeed later.  An append that fails so
    may or may not have been stored; resending it is safe (``(device, seq)``)."""


class CorruptLogError(LogError):
    """A record failed its checksum somewhere other than the tail of the log."""


class FlowError(FluvialError):
    """A flow cannot be planned or executed."""


class UnsupportedOperation(FlowError):
    """The chosen runner cannot execute an operator of the flow."""


class StoreError(FluvialError):
    """The serving store cannot be read or written."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (the server restarts, the network is down): nothing
    of the transaction that found it out was kept -- or, for a commit whose answer was
    lost, it may have been; a runner reloads its checkpoint to know -- and the same
    work may succeed once the store is back."""


class ViewNotFound(StoreError):
    """No view of that name exists in the store."""


class OwnedElsewhere(StoreError):
    """Another live process holds the resource a runner claims (a pipeline's speed
    layer, a batch publish); the message names it (pid, host, command, since when).

    Attributes:
        holder: The store's record of the holder (:class:`fluvial.state.ownership.Holder`).
    """

    def __init__(self, message: str, *, holder: object = None) -> None:
        super().__init__(message)
        self.holder = holder


class Fenced(StoreError):
    """A commit was refused because its writer no longer owns what it writes; the
    transaction is rolled back and nothing of it is visible (DESIGN principle 5)."""


class CheckpointFenced(Fenced):
    """A runner's checkpoint was replaced by another writer since the runner read it.

    The commit that found it out is rolled back; the runner reloads the checkpoint
    (a batch run handed over its cut-off) and goes on.
    """


class LeaseLost(Fenced):
    """Another process took over the resource this runner held (its epoch is gone):
    the runner's commit is void and it stops; the new owner goes on from the last
    committed checkpoint."""


class MissingDependency(FluvialError):
    """An optional dependency is not installed; the message names the extra."""
