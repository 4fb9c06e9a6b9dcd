"""Opening a NATS log waits out the answers a cluster gives while it cannot serve yet
(``fluvial.log.nats.log._patiently``), and gives up at once on the others."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.errors import APIError, ServiceUnavailableError

from fluvial.log.nats import log as nats_log


def attempts(failures: list[Exception]) -> tuple[list[int], object]:
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "opened"

    return calls, attempt


@pytest.mark.parametrize("error", [
    APIError(code=500, description="error creating store for stream", err_code=10049),
    APIError(code=503, description="JetStream system temporarily unavailable", err_code=10008),
    ServiceUnavailableError(code=503, description="no leader"),
    TimeoutError(),
], ids=["10049-streams-dir-race", "10008-unavailable", "503", "timeout"])
def test_transient_answers_are_tried_again(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    calls, attempt = attempts([error, error])
    assert asyncio.run(nats_log._patiently(attempt)) == "opened"   # type: ignore[arg-type]
    assert len(calls) == 3


def test_other_api_errors_are_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    wrong = APIError(code=400, description="stream name already in use", err_code=10058)
    calls, attempt = attempts([wrong])
    with pytest.raises(APIError) as info:
        asyncio.run(nats_log._patiently(attempt))   # type: ignore[arg-type]
    assert info.value.err_code == 10058 and len(calls) == 1


def test_it_gives_up_after_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nats_log, "OPEN_PATIENCE_S", 0.3)
    calls, attempt = attempts([TimeoutError()] * 100)
    with pytest.raises(TimeoutError):
        asyncio.run(nats_log._patiently(attempt))   # type: ignore[arg-type]
    assert 1 < len(calls) < 10


_real_sleep = asyncio.sleep


async def _no_sleep(delay: float) -> None:
    await _real_sleep(0)
