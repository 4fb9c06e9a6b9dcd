"""MQTT ingest: ``fluvial serve --mqtt mqtt://BROKER`` takes in what devices publish.

Devices publish on ``devices/{device}/events`` (the topic filter is configurable:
``[server] mqtt_topic``, one ``+`` level naming the device) at QoS 1.  A message is
what ``POST /v1/events`` takes: a JSON array of events (or one object, or NDJSON),
or MessagePack, optionally gzip-compressed (told apart by their first bytes; MQTT
3.1.1 has no content type).  The server subscribes with paho-mqtt, and each
message goes through the same validation as an HTTP body.

Exactly once in effect, across server restarts:

* the bridge's session is persistent (``clean_session=False`` under a fixed client
  id): what the broker accepted while the server was down is delivered when it is
  back (set ``max_queued_messages 0`` in ``mosquitto.conf``, or high enough: by
  default Mosquitto keeps 1000 messages per offline session);
* a message is acknowledged (PUBACK) only once its events and dead letters are in
  the log (manual acknowledgements).  A server that dies before that gets the
  message again, and the log's ``(device, seq)`` de-duplication stores its events
  once;
* a message that cannot be used -- unreadable, over ``max_body_bytes``, invalid
  events, events of another device than its topic's -- is kept in the dead-letter
  log with the reason, then acknowledged (sending it again would not help);
* while the log cannot be written, nothing is acknowledged: the bridge tries again.

Who may publish as whom: an MQTT 3.1.1 subscriber is not told who published a
message, so a device's identity is bound at the broker.  Each device logs in with
credentials of its own (a username and password per device, or a client
certificate) and the broker's ACL lets it publish on its own topic only
(Mosquitto: ``pattern write devices/%u/events``).  The bridge binds the topic to
the events: an event whose ``device`` is not the topic's device is refused
(dead-lettered), so no device can write another's events.  The bridge itself logs
in with an account that may read ``devices/+/events``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fluvial.errors import ConfigError, MissingDependency, ValidationError
from fluvial.log.deadletter import DeadLetter
from fluvial.server.ingest import AllRejected, IngestError, ParsedBody, decompress, parse_body, raw_bytes

if TYPE_CHECKING:
    from fluvial.server.core import Server

__all__ = ["DEFAULT_TOPIC", "MqttBridge", "MqttEndpoint", "parse_mqtt_url"]

DEFAULT_TOPIC = "devices/+/events"
KEPT_BYTES = 4096
"""How much of an oversized message the dead-letter log keeps (the reason says how big it was)."""
_logger = logging.getLogger("fluvial.server")


@dataclass(frozen=True)
class MqttEndpoint:
    """Where the broker is, and how the bridge logs in."""

    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str

    def describe(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_mqtt_url(url: str, *, default_client_id: str = "fluvial-ingest") -> MqttEndpoint:
    """``mqtt://[USER[:PASSWORD]@]HOST[:PORT][?client_id=ID]`` (port 1883 by default).

    >>> parse_mqtt_url("mqtt://ingest:s3cret@broker.lan:1884?client_id=fluvial-a")
    MqttEndpoint(host='broker.lan', port=1884, username='ingest', password='s3cret', client_id='fluvial-a')
    >>> parse_mqtt_url("mqtt://127.0.0.1").port
    1883
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(f"--mqtt {url!r}: expected mqtt://[USER[:PASSWORD]@]HOST[:PORT][?client_id=ID]")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ConfigError(f"--mqtt {url!r}: the port is not a number from 1 to 65535") from None
    query = urllib.parse.parse_qs(parts.query)
    unknown = sorted(set(query) - {"client_id"})
    if unknown:
        raise ConfigError(f"--mqtt {url!r}: unknown option {unknown[0]!r} (known: client_id)")
    client_id = query.get("client_id", [default_client_id])[0]
    return MqttEndpoint(parts.hostname, port, urllib.parse.unquote(parts.username) if parts.username else None,
                        urllib.parse.unquote(parts.password) if parts.password else None, client_id)


def device_level(topic_filter: str) -> int:
    """Which level of ``topic_filter`` names the device (its one ``+``).

    >>> device_level("devices/+/events")
    1
    """
    levels = topic_filter.split("/")
    if levels.count("+") != 1 or "#" in levels or any(("+" in x or "#" in x) and len(x) > 1 for x in levels):
        raise ConfigError(f"mqtt_topic {topic_filter!r}: it needs exactly one '+' level, the device "
                          "(like devices/+/events), and no '#'")
    return levels.index("+")


class MqttBridge:
    """Subscribes to the broker and hands what devices publish to the server's log writer.

    paho's network thread only queues messages; one thread of the bridge reads them in
    groups, appends each group in one write, and acknowledges its messages after it.
    """

    def __init__(self, server: Server, url: str, *, topic: str = DEFAULT_TOPIC) -> None:
        self.server = server
        self.endpoint = parse_mqtt_url(url)
        self.topic = topic
        self.level = device_level(topic)
        self.messages = 0
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fluvial-mqtt", daemon=True)
        self._connected = threading.Event()
        self._client: Any = None

    def start(self) -> MqttBridge:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependency("MQTT ingest needs paho-mqtt: pip install 'fluvial[mqtt]'") from None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.endpoint.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        if self.endpoint.username is not None:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = lambda _c, _u, msg: self._inbox.put(msg)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client = client
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        except OSError as exc:
            raise ConfigError(f"--mqtt {self.endpoint.describe()}: cannot connect to the broker "
                              f"({exc.strerror or exc}); is it running?") from None
        client.loop_start()
        self._thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Stop taking messages; the ones not yet acknowledged are delivered again at the next start."""
        self._stop.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # -- paho's thread ----------------------------------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            _logger.warning("mqtt: the broker %s refused the connection: %s", self.endpoint.describe(), reason)
            return
        client.subscribe(self.topic, qos=1)   # again after every reconnection (a new session may have no subscription)
        self._connected.set()
        _logger.info("mqtt: subscribed to %s on %s", self.topic, self.endpoint.describe())

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            _logger.warning("mqtt: disconnected from %s (%s); reconnecting", self.endpoint.describe(), reason)

    # -- the bridge's thread ----------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                group = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(group) < 1000:
                try:
                    group.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            events: list[Any] = []
            letters: list[DeadLetter] = []
            for msg in group:
                got, kept = self._read(msg)
                events.extend(got)
                letters.extend(kept)
            if not self._append(events, letters):
                return   # stopped before the log took them: not acknowledged, delivered again
            for msg in group:
                self._client.ack(msg.mid, msg.qos)
            self.messages += len(group)

    def _append(self, events: list[Any], letters: list[DeadLetter]) -> bool:
        """Append (retrying while the log cannot be written); False if stopped first."""
        from fluvial.server.writer import LogUnavailable

        while not self._stop.is_set():
            try:
                appended = self.server.writer.submit(events, letters).result()
            except LogUnavailable as exc:
                _logger.warning("mqtt: the log cannot be written (%s); trying again in %d s", exc.reason,
                                exc.retry_after_s)
                self._stop.wait(max(1, exc.retry_after_s))
                continue
            except ValidationError as exc:   # ingest let through what the log refuses: keep it as a dead letter
                _logger.error("mqtt: the log refused events ingest accepted: %s", exc)
                kept = b"\n".join(raw_bytes(e) for e in events)
                refused = self._letter(f"the log cannot store these events: {exc}", kept, "mqtt")
                events, letters = [], [*letters, refused]
                continue
            metrics = self.server.metrics
            metrics.accepted(appended.accepted)
            metrics.events_duplicate += appended.duplicates
            metrics.dead_letters += len(letters)
            return True
        return False

    def _read(self, msg: Any) -> tuple[list[Any], list[DeadLetter]]:
        """The valid events of one message, and dead letters for the rest."""
        limits = self.server.settings.server
        levels = msg.topic.split("/")
        source = f"mqtt:{msg.topic}"[:300]
        payload = bytes(msg.payload)
        if len(levels) <= self.level:
            return [], [self._letter(f"topic {msg.topic!r} does not name a device ({self.topic})", payload, source)]
        device = levels[self.level]
        if len(payload) > limits.max_body_bytes:
            return [], [self._letter(f"413: the message is {len(payload)} bytes; the server takes at most "
                                     f"{limits.max_body_bytes} (max_body_bytes): publish fewer events per message "
                                     f"(the first {KEPT_BYTES} bytes are kept)", payload[:KEPT_BYTES], source)]
        try:
            data = decompress(payload, "gzip" if payload[:2] == b"\x1f\x8b" else None, limits.max_body_bytes)
            head = bytes(data[:64]).lstrip()
            ctype = "application/json" if head[:1] in (b"[", b"{") else "application/msgpack"
            parsed = parse_body(data, ctype, self.server.schemas, max_events=limits.max_events_per_request,
                                source=source)
        except AllRejected as exc:
            parsed = exc.parsed
        except IngestError as exc:
            raw = exc.raw if exc.raw is not None else payload[:KEPT_BYTES]
            return [], [self._letter(f"{exc.status}: {exc.reason}", raw, source)]
        self.server.metrics.bytes_in += len(payload)
        return self._own_events(parsed, device, source)

    def _own_events(self, parsed: ParsedBody, device: str, source: str) -> tuple[list[Any], list[DeadLetter]]:
        """Refuse the events a device published as another one."""
        events, letters = [], list(parsed.letters)
        for index, event in zip(parsed.indices, parsed.events):
            if event.device == device:
                events.append(event)
                continue
            letters.append(self._letter(f"403: event {index} of a message on the topic of device {device!r} "
                                        f"is of device {event.device!r}: a device publishes its own events only",
                                        raw_bytes(event), source))
        self.server.metrics.events_rejected += len(parsed.rejected) + len(letters) - len(parsed.letters)
        return events, letters

    @staticmethod
    def _letter(reason: str, raw: bytes, source: str) -> DeadLetter:
        return DeadLetter(reason=reason, source=source, line=None, raw=raw, at_ms=time.time_ns() // 1_000_000)
