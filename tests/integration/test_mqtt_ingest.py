"""MQTT ingest (``fluvial serve --mqtt``) through a real Mosquitto broker of the test's own.

The broker (the installed ``mosquitto``, on a free port) authenticates every client with a
password of its own; its ACL lets a device publish on ``devices/{its name}/events`` only,
and the server's bridge read them all; offline sessions keep every QoS 1 message.

* Devices publish batches of events at QoS 1 (JSON, NDJSON, MessagePack, gzip) while the
  server is SIGKILLed and restarted; some batches are published twice.  Once every batch
  the broker acknowledged is in, the views equal the brute force over exactly those
  events, each once.
* Hostile messages: unreadable bodies, an oversized one, invalid events, events of another
  device published on a device's own topic -- each is dead-lettered with its reason, and the
  honest events beside them count; a device publishing on another device's topic is stopped
  by the broker (its events appear nowhere).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from server_proc import ServerProcess

from fluvial.log import DeadLetterLog

pytestmark = pytest.mark.explicit_backends   # it names its backends: not in make test's spelled-out pass

FLOW = """import fluvial

mqtt_counts = fluvial.Pipeline("mqtt_counts")
readings = mqtt_counts.from_log("reading")
readings.map(lambda e: (e.device, 1)).aggregate_by_key(fluvial.Count()).to_view("per_device")
readings.map(lambda e: (e.payload["kind"], e.payload["value"])).aggregate_by_key(fluvial.Sum()).to_view("levels")
"""
BRIDGE = ("fluvial", "bridge-secret")
DEVICES = [f"dev-{i}" for i in range(6)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A Mosquitto of the test's own: passwords, an ACL, unbounded offline queues."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None or shutil.which("mosquitto_passwd") is None:
            from stores import REQUIRE_SERVICES

            why = "mosquitto (and mosquitto_passwd) are not installed: apt-get install mosquitto"
            if REQUIRE_SERVICES:
                pytest.fail(why)
            pytest.skip(why)
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        passwords, acl, conf = root / "passwords", root / "acl", root / "mosquitto.conf"
        passwords.touch()
        for user, password in [BRIDGE, *[(d, f"pw-{d}") for d in DEVICES]]:
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True,
                           capture_output=True)
        acl.write_text(f"user {BRIDGE[0]}\ntopic read devices/+/events\n\npattern write devices/%u/events\n")
        # started as root, mosquitto would switch to its own user, who cannot read the test's files
        stay = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{stay}listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
                        f"acl_file {acl}\nmax_queued_messages 0\nmax_inflight_messages 100\npersistence false\n")
        self.log = root / "mosquitto.log"
        with open(self.log, "wb") as err:   # the child has its own copy of the descriptor
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"mqtt://{BRIDGE[0]}:{BRIDGE[1]}@127.0.0.1:{self.port}?client_id=fluvial-test"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    yield b
    b.close()


class Device:
    """A device's MQTT client (paho-mqtt), logged in as itself, publishing at QoS 1."""

    def __init__(self, broker: Broker, name: str, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.name = name
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"device-{name}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(name, f"pw-{name}")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish(self, payload: bytes, device: str | None = None) -> None:
        """Publish on ``devices/{device}/events`` (default: its own topic); return once the broker acknowledged."""
        info = self.client.publish(f"devices/{device or self.name}/events", payload, qos=1)
        info.wait_for_publish(timeout=30)
        assert info.is_published(), f"the broker did not acknowledge a message of {self.name}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def encode(events: list[dict[str, Any]], how: str) -> bytes:
    if how == "json":
        return json.dumps(events).encode()
    if how == "ndjson":
        return b"\n".join(json.dumps(e).encode() for e in events)
    if how == "msgpack":
        return msgspec.msgpack.encode(events)
    return gzip.compress(json.dumps(events).encode())


def readings(rng: random.Random, device: str, seqs: Counter[str], n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        seqs[device] += 1
        out.append({"device": device, "kind": "reading", "ts": 1_700_000_000_000 + seqs[device] * 500,
                    "seq": seqs[device], "payload": {"kind": rng.choice(["temp", "hum", "co2"]),
                                                     "value": float(rng.randint(0, 100))}})
    return out


def brute_force(events: list[dict[str, Any]]) -> dict[str, dict[Any, Any]]:
    once = {(e["device"], e["seq"]): e for e in events}.values()
    levels: Counter[str] = Counter()
    for e in once:
        levels[e["payload"]["kind"]] += e["payload"]["value"]
    return {"per_device": dict(Counter(e["device"] for e in once)), "levels": dict(levels)}


def served(srv: ServerProcess) -> dict[str, dict[Any, Any]]:
    return {name: {r["key"]: r["value"] for r in srv.get(f"/v1/views/{name}")["rows"]}
            for name in ("per_device", "levels")}


def wait_views(srv: ServerProcess, want: dict[str, dict[Any, Any]], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (got := served(srv)) != want:
        assert time.monotonic() < deadline, (got, want)
        time.sleep(0.2)


def test_qos1_events_reach_the_views_exactly_once_across_server_kills(tmp_path: Path, broker: Broker) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    print(f"seed={seed}")
    flow = tmp_path / "flow.py"
    flow.write_text(FLOW)
    seqs: Counter[str] = Counter()
    acknowledged: list[dict[str, Any]] = []   # what the broker acknowledged (QoS 1 PUBACK)
    devices = [Device(broker, d) for d in DEVICES]
    srv = ServerProcess(tmp_path, flows=[flow], extra=["--mqtt", broker.url]).start()
    try:
        kills = sorted(rng.sample(range(10, 50), 2))
        for n in range(60):
            device = rng.choice(devices)
            batch = readings(rng, device.name, seqs, rng.randint(1, 40))
            device.publish(encode(batch, rng.choice(["json", "ndjson", "msgpack", "gzip"])))
            acknowledged.extend(batch)
            if rng.random() < 0.1:   # a device that did not see the broker's ack sends the batch again
                device.publish(encode(batch, "json"))
            if n in kills:
                srv.kill()   # messages delivered to it and not acknowledged yet come again
                for _ in range(rng.randint(1, 5)):   # published while the server is down: the broker keeps them
                    other = rng.choice(devices)
                    more = readings(rng, other.name, seqs, rng.randint(1, 40))
                    other.publish(encode(more, "msgpack"))
                    acknowledged.extend(more)
                srv.start()
        wait_views(srv, brute_force(acknowledged))
        assert "Traceback" not in srv.output()
    finally:
        for d in devices:
            d.close()
        srv.stop()


def test_hostile_messages_are_dead_lettered_and_honest_events_count(tmp_path: Path, broker: Broker) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    print(f"seed={seed}")
    flow = tmp_path / "flow.py"
    flow.write_text(FLOW)
    seqs: Counter[str] = Counter()
    honest: list[dict[str, Any]] = []
    devices = {d: Device(broker, d) for d in DEVICES[:3]}
    config = "[server]\nmax_body_bytes = 65536\n"
    with ServerProcess(tmp_path, flows=[flow], config=config, extra=["--mqtt", broker.url]) as srv:
        try:
            a, b = devices["dev-0"], devices["dev-1"]
            mixed = readings(rng, "dev-0", seqs, 5)
            forged = readings(rng, "dev-2", Counter({"dev-2": 10_000}), 2)   # dev-0 writing as dev-2
            invalid = {"device": "dev-0", "kind": "reading", "ts": "yesterday", "seq": 1, "payload": {}}
            a.publish(encode([*mixed, *forged, invalid], "json"))
            honest.extend(mixed)
            a.publish(b'{"device": "dev-0", "kind": "reading", "ts": 1, "se')             # cut short
            a.publish(b"\x1f\x8b not gzip at all")                                         # a broken gzip
            a.publish(b"\xc1\xc1\xc1")                                                     # not MessagePack
            a.publish(json.dumps(readings(rng, "dev-0", Counter(), 1) * 2000).encode())   # over 64 KiB
            # dev-1 publishing on dev-2's topic: the broker's ACL refuses it (Mosquitto may also close
            # the connection), on a connection of its own so that dev-1's honest one goes on
            intruder = Device(broker, "dev-1", client_id="device-dev-1-intruder")
            info = intruder.client.publish("devices/dev-2/events",
                                           encode(readings(rng, "dev-2", Counter({"dev-2": 20_000}), 3), "json"), qos=1)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=5)
            intruder.close()
            ok = readings(rng, "dev-1", seqs, 7)
            b.publish(encode(ok, "json"))
            honest.extend(ok)
            wait_views(srv, brute_force(honest))
            deadline = time.monotonic() + 60
            while True:
                with DeadLetterLog.open(srv.data_dir / "dead-letters", readonly=True) as dl:
                    letters = [x for x in dl.read() if x.source.startswith("mqtt:")]
                if len(letters) >= 7 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            for d in devices.values():
                d.close()
    reasons = [x.reason for x in letters]
    print(reasons)
    assert sum("a device publishes its own events only" in r for r in reasons) == 2   # the forged pair
    assert sum(r.startswith("event 7: $.ts:") for r in reasons) == 1   # the invalid event, with its path
    assert sum(r.startswith("400") for r in reasons) == 3   # cut short, broken gzip, not MessagePack
    assert sum(r.startswith("413") for r in reasons) == 1 and all(len(x.raw) <= 4096 for x in letters
                                                                  if x.reason.startswith("413"))
    assert len(letters) == 7
    assert all(x.source == "mqtt:devices/dev-0/events" for x in letters)
    # dev-1 publishing on dev-2's topic: the broker's ACL stops it; its events are nowhere
    assert "dev-2" not in served_after_stop(srv)


def served_after_stop(srv: ServerProcess) -> set[str]:
    """The devices the log holds (read after the server stopped)."""
    import fluvial

    with fluvial.open(srv.data_dir) as ws:
        return {e.device for p in range(ws.log.partitions) for e in ws.log.read(p, 0, max_records=100_000).events}


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:1883", "expected mqtt://"),
    ("mqtt://", "expected mqtt://"),
    ("mqtt://127.0.0.1:99999", "port"),
    ("mqtt://127.0.0.1:1883?qos=2", "unknown option 'qos'"),
    ("mqtt://127.0.0.1:1", "cannot connect to the broker"),
])
def test_a_bad_mqtt_url_or_an_absent_broker_is_refused_with_the_reason(tmp_path: Path, url: str, says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "fluvial.cli.main", "--data-dir", str(tmp_path / "data"),
                           "serve", "--port", "0", "--mqtt", url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_topic_filter_must_name_the_device_in_one_level() -> None:
    from fluvial.errors import ConfigError
    from fluvial.server.mqtt import device_level

    assert device_level("site/a/+/up") == 2
    for bad in ("devices/events", "devices/+/+/events", "devices/#", "devices/dev+/events"):
        with pytest.raises(ConfigError, match="exactly one"):
            device_level(bad)
