"""``POST /v1/events``: events in, acknowledged once the log has them.

The order of refusals is the order of cost: a body too large by its
Content-Length, a failing log writer, the pending budget, the queue, memory
and the device's rates are all checked before a byte of the body is read;
then the body is read within its time limit, decoded, validated, and handed to
the log writer (group commit). Bad events are answered by index and kept in the
dead-letter log within the device's quota.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fluvial.api.common import Api, MsgspecJSON, error
from fluvial.server.auth import AuthError
from fluvial.server.ingest import AllRejected, IngestError, decompress, parse_body

__all__ = ["routes"]


def routes(api: Api) -> list[Route]:
    server = api.server

    @api.guard("ingest")
    async def post_events(request: Request) -> Response:
        from fluvial.server.limits import BodyTimeout, ClientGone, Shed, read_body

        limits = server.settings.server
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            if not length.isdigit():
                return error(400, f"invalid Content-Length {length[:40]!r}")
            return error(413, f"the body is {length} bytes; the server takes at most {limits.max_body_bytes} "
                               "(max_body_bytes): send fewer events per request")
        unavailable = server.writer.unavailable()
        if unavailable is not None:  # the log writer is failing: answer at once, without reading the body
            return _unavailable(unavailable)
        key = server.limits.key_of(request.state.grant, request.client.host if request.client else None)
        try:  # before a byte of the body is read: the pending budget, the queue, memory, the device's rates
            ticket = server.limits.admit(None if length is None else int(length), key, lagging=server.overloaded())
        except Shed as exc:
            return _shed(exc)
        try:  # (the body is not kept in this frame: _ingest lets it go once decoded)
            return await _ingest(request, ticket, await read_body(
                request.receive, ticket, max_bytes=limits.max_body_bytes,
                timeout_s=server.settings.limits.body_timeout_s))
        except Shed as exc:
            return _shed(exc)
        except BodyTimeout as exc:
            return error(408, exc.reason, {"Connection": "close"})
        except (ClientGone, IngestError) as exc:
            return error(exc.status, exc.reason)
        finally:
            ticket.release()

    async def _ingest(request: Request, ticket: Any, body: bytearray) -> Response:
        limits = server.settings.server
        grant = request.state.grant
        server.metrics.bytes_in += len(body)
        try:
            data = decompress(body, request.headers.get("content-encoding"), limits.max_body_bytes)
            if data is not body:
                ticket.hold(len(data))  # the inflated bytes count against the budget too
            parsed = parse_body(data, request.headers.get("content-type"), server.schemas,
                                max_events=limits.max_events_per_request)
            del body, data  # decoded: the bytes are not needed while the events wait for the log writer
        except AllRejected as exc:
            parsed = exc.parsed
            if grant is not None and grant.role == "device":
                _check_devices(grant, parsed)
            ticket.events(parsed.total)
            if not _may_keep(ticket, parsed.letters):
                raise _quota_refusal(ticket, exc.reason, parsed) from None
            failed = await _write([], parsed.letters)
            if failed is not None:
                return failed
            server.metrics.events_rejected += len(parsed.rejected)
            server.metrics.dead_letters += len(parsed.letters)
            return MsgspecJSON({"error": exc.reason, "status": 422, "accepted": 0, "duplicates": 0,
                                "rejected": [{"index": i, "reason": r} for i, r in parsed.rejected]},
                               status_code=422)
        except IngestError as exc:
            if exc.raw is not None:
                return await _keep_unreadable(request, exc, ticket)
            return error(exc.status, exc.reason)
        if grant is not None and grant.role == "device":
            _check_devices(grant, parsed)
        ticket.events(parsed.total)
        letters = parsed.letters if _may_keep(ticket, parsed.letters) else []
        future = server.writer.submit(parsed.events, letters)
        failed = await _write(parsed.events, letters, future)
        if failed is not None:
            return failed
        appended = future.result()
        server.metrics.accepted(appended.accepted)
        server.metrics.events_duplicate += appended.duplicates
        server.metrics.events_rejected += len(parsed.rejected)
        server.metrics.dead_letters += len(letters)
        answer = {"accepted": appended.accepted, "duplicates": appended.duplicates,
                  "rejected": [{"index": i, "reason": r} for i, r in parsed.rejected]}
        if len(letters) < len(parsed.letters):
            answer["warning"] = (f"the rejected events were NOT kept in the dead-letter log: {ticket.key} is over "
                                 "its dead-letter quota ([limits] dead_letter_bytes); fix what the device sends")
        return MsgspecJSON(answer)

    async def _keep_unreadable(request: Request, exc: IngestError, ticket: Any) -> Response:
        """Dead-letter a body refused as a whole (as received), within its device's quota."""
        from fluvial.log.deadletter import DeadLetter

        grant = request.state.grant
        assert exc.raw is not None
        source = "http" if grant is None else f"http:{grant.role}:{grant.device or grant.token_id}"
        letter = DeadLetter(reason=f"{exc.status}: {exc.reason}", source=source, line=None,
                            raw=exc.raw, at_ms=time.time_ns() // 1_000_000)
        if not _may_keep(ticket, [letter]):
            raise _quota_refusal(ticket, f"{exc.status}: {exc.reason}")
        failed = await _write([], [letter])
        if failed is not None:
            return failed
        server.metrics.dead_letters += 1
        return error(exc.status, exc.reason)

    def _may_keep(ticket: Any, letters: Any) -> bool:
        """Whether the dead letters fit the quota of the ticket's device (or client address)."""
        return not letters or server.limits.keep_dead_letters(ticket.key, sum(len(x.raw) for x in letters))

    def _quota_refusal(ticket: Any, what: str, parsed: Any = None) -> Exception:
        shed = server.limits.quota_refusal(ticket.key, what)
        if parsed is not None:  # every event of the body was invalid: say which, as a 422 would
            shed.rejected = [{"index": i, "reason": r} for i, r in parsed.rejected]
            server.metrics.events_rejected += len(parsed.rejected)
        return shed

    def _shed(exc: Any) -> Response:
        server.metrics.throttled += 1
        extra = {} if exc.rejected is None else {"accepted": 0, "duplicates": 0, "rejected": exc.rejected}
        return error(exc.status, exc.reason, {"Retry-After": str(exc.retry_after_s)}, **extra)

    async def _write(events: Any, letters: Any, future: Any = None) -> Response | None:
        """Hand events and dead letters to the log writer; the answer to give if that failed."""
        from fluvial.errors import ValidationError
        from fluvial.server.writer import LogUnavailable

        try:
            await asyncio.wrap_future(future if future is not None else server.writer.submit(events, letters))
        except LogUnavailable as exc:
            return _unavailable(exc)
        except ValidationError as exc:  # ingest let through what the log refuses: a bug, but this request's only
            return error(422, f"the log cannot store these events: {exc}; nothing of this request was stored")
        return None

    def _unavailable(exc: Any) -> Response:
        server.metrics.throttled += 1
        server.limits.refused("log_unavailable")
        return error(507 if exc.disk_full else 503, exc.reason, {"Retry-After": str(exc.retry_after_s)})

    def _check_devices(grant: Any, parsed: Any) -> None:
        from fluvial.server.ingest import devices_of

        for index, device in devices_of(parsed):
            if device != grant.device:
                raise AuthError(403, f"device token for {grant.device!r} cannot write events of device "
                                     f"{device!r} (event {index}); nothing was written")

    return [Route("/v1/events", post_events, methods=["POST"])]
