"""How a batch leaves the device: HTTP (``POST /v1/events``) or MQTT (a QoS 1 publish).

A transport sends one body (a MessagePack array of events, gzip-compressed when large) and says
what came back as ``(status, answer, retry_after)``: an HTTP status (0: no answer at all, try
again), the server's JSON answer, and its ``Retry-After`` in seconds.

* :class:`HttpTransport` (standard library): the server's answer says how many events it
  accepted, already had, or refused.
* :class:`MqttTransport` (paho-mqtt, only when asked for): ``mqtt://USER:PASSWORD@HOST:PORT``,
  publishing on ``devices/{device}/events`` (``?topic=`` changes it; ``{device}`` is
  replaced) at QoS 1. The broker's PUBACK is the answer (status 200, no counts): the broker
  holds the message for ``fluvial serve --mqtt``, which appends it before acknowledging it in
  turn. A broker refusing the login (bad credentials, not authorised) raises
  :class:`~fluvial.edge.client.EdgeAuthError` through the client. Note that an MQTT 3.1.1
  broker acknowledges a publish its ACL drops: a device must publish on its own topic.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from typing import Any, Protocol

import msgspec

__all__ = ["HttpTransport", "MqttTransport", "Transport", "open_transport"]

Answer = tuple[int, dict[str, Any], "float | None"]


class Transport(Protocol):
    def send(self, body: bytes, *, gzipped: bool) -> Answer:
        """Send one batch; (status, answer, retry_after)."""
        ...

    def close(self) -> None:
        """Let go of the connection."""
        ...


def open_transport(url: str, device: str, *, token: str | None, timeout_s: float) -> Transport:
    """The transport for ``url`` (``http://``, ``https://``, ``mqtt://``, ``mqtts://``)."""
    target = urllib.parse.urlsplit(url)
    if target.scheme in ("http", "https") and target.hostname:
        return HttpTransport(target, token=token, timeout_s=timeout_s)
    if target.scheme in ("mqtt", "mqtts") and target.hostname:
        return MqttTransport(target, device, timeout_s=timeout_s)
    raise ValueError(f"url {url!r}: give the server as http(s)://HOST:PORT, or a broker as "
                     "mqtt(s)://USER:PASSWORD@HOST:PORT")


class HttpTransport:
    """``POST /v1/events`` over one kept-alive connection (reopened after a failure)."""

    def __init__(self, target: urllib.parse.SplitResult, *, token: str | None, timeout_s: float) -> None:
        self.target, self.token, self.timeout_s = target, token, timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes, *, gzipped: bool) -> Answer:
        headers = {"Content-Type": "application/msgpack"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            if self._conn is None:
                kind = http.client.HTTPSConnection if self.target.scheme == "https" else http.client.HTTPConnection
                self._conn = kind(self.target.hostname or "", self.target.port, timeout=self.timeout_s)
            self._conn.request("POST", self.target.path.rstrip("/") + "/v1/events", body, headers)
            response = self._conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return 0, {}, None
        try:
            answer = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError:
            answer = {}
        retry = response.getheader("Retry-After")
        try:
            retry_after = None if retry is None else min(60.0, max(0.0, float(retry)))
        except ValueError:
            retry_after = None
        return response.status, answer if isinstance(answer, dict) else {}, retry_after

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class MqttTransport:
    """QoS 1 publishes through a broker; each :meth:`send` waits for its PUBACK."""

    def __init__(self, target: urllib.parse.SplitResult, device: str, *, timeout_s: float) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ImportError("the MQTT transport needs paho-mqtt: pip install paho-mqtt") from None
        query = urllib.parse.parse_qs(target.query)
        self.topic = query.get("topic", ["devices/{device}/events"])[0].replace("{device}", device)
        self.timeout_s = timeout_s
        self._refused: str | None = None
        self._connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=query.get("client_id", [""])[0],
                             protocol=mqtt.MQTTv311)
        if target.username is not None:
            client.username_pw_set(urllib.parse.unquote(target.username),
                                   None if target.password is None else urllib.parse.unquote(target.password))
        if target.scheme == "mqtts":
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self._connected.clear()
        self._client, self._host, self._port = client, target.hostname or "", target.port or (
            8883 if target.scheme == "mqtts" else 1883)
        self._started = False

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        else:
            self._refused = None
            self._connected.set()

    def send(self, body: bytes, *, gzipped: bool) -> Answer:
        try:
            if not self._started:
                self._client.connect(self._host, self._port, keepalive=30)
                self._client.loop_start()
                self._started = True
        except OSError:
            return 0, {}, None
        if not self._connected.wait(self.timeout_s):
            if self._refused is not None:
                return 401, {"error": f"the broker refused the login: {self._refused}"}, None
            return 0, {}, None
        info = self._client.publish(self.topic, body, qos=1)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError):   # not queued: the connection went away
            return 0, {}, None
        return (200, {}, None) if info.is_published() else (0, {}, None)

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
