#!/usr/bin/env python3
"""Interop checks of a running SurgeMQ broker with paho-mqtt 2.x (callback API version 2).

Usage: paho_check.py HOST PORT

Prints one `PASS name` or `FAIL name: why` line per check and exits non-zero if any failed.
Every wait has a timeout, so the script never hangs on a broker that does not answer.
"""

import subprocess
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

TIMEOUT = 8.0


class Failed(Exception):
    pass


class Peer:
    """A paho client with its network loop in a thread and its messages in a list."""

    def __init__(self, host, port, name, protocol=mqtt.MQTTv311, will=None):
        self.name = name
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"paho-{name}-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
            clean_session=True,
        )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos=qos, retain=retain)
        self.connected = threading.Event()
        self.connect_rc = None
        self.subacks = {}
        self.suback_event = threading.Condition()
        self.messages = []
        self.message_event = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            self.stop()
            raise Failed(f"{name}: no CONNACK within {TIMEOUT} s")
        if self.connect_rc != 0:
            self.stop()
            raise Failed(f"{name}: CONNACK {self.connect_rc}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code.value if hasattr(reason_code, "value") else reason_code
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.suback_event:
            self.subacks[mid] = [rc.value for rc in reason_codes]
            self.suback_event.notify_all()

    def _on_message(self, client, userdata, message):
        with self.message_event:
            self.messages.append(
                (message.topic, bytes(message.payload), message.qos, bool(message.retain))
            )
            self.message_event.notify_all()

    def subscribe(self, topic, qos):
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: subscribe returned {rc}")
        with self.suback_event:
            if not self.suback_event.wait_for(lambda: mid in self.subacks, TIMEOUT):
                raise Failed(f"{self.name}: no SUBACK for {topic}")
            if self.subacks[mid] != [qos]:
                raise Failed(f"{self.name}: SUBACK {self.subacks[mid]} for {topic} at QoS {qos}")

    def publish(self, topic, payload, qos, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            raise Failed(f"{self.name}: publish to {topic} at QoS {qos} not acknowledged")

    def wait_messages(self, count, timeout=TIMEOUT):
        with self.message_event:
            self.message_event.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def stop(self, disconnect=True):
        if disconnect:
            self.client.disconnect()
        self.client.loop_stop()


def expect(got, want, what):
    if got != want:
        raise Failed(f"{what}: got {got!r}, want {want!r}")


def check_qos_round_trips(host, port):
    sub = Peer(host, port, "sub")
    pub = Peer(host, port, "pub")
    try:
        sub.subscribe("paho/qos/#", 2)
        want = []
        for qos in (0, 1, 2):
            payload = f"paho at QoS {qos} \u2713".encode()
            pub.publish(f"paho/qos/{qos}", payload, qos)
            want.append((f"paho/qos/{qos}", payload, qos, False))
        got = sub.wait_messages(3)
        expect(got, want, "messages received")
        time.sleep(0.3)
        expect(len(sub.messages), 3, "message count after a pause (no duplicates)")
    finally:
        sub.stop()
        pub.stop()


def check_mqtt31(host, port):
    sub = Peer(host, port, "sub31", protocol=mqtt.MQTTv31)
    pub = Peer(host, port, "pub31", protocol=mqtt.MQTTv31)
    try:
        sub.subscribe("paho/v31", 1)
        pub.publish("paho/v31", b"speaking 3.1", 1)
        expect(sub.wait_messages(1), [("paho/v31", b"speaking 3.1", 1, False)], "MQTT 3.1")
    finally:
        sub.stop()
        pub.stop()


def check_retained(host, port):
    pub = Peer(host, port, "retainer")
    try:
        pub.publish("paho/retained", b"kept", 1, retain=True)
        late = Peer(host, port, "late")
        try:
            late.subscribe("paho/retained", 1)
            expect(late.wait_messages(1), [("paho/retained", b"kept", 1, True)], "retained")
        finally:
            late.stop()
        # An empty retained message clears it.
        pub.publish("paho/retained", b"", 1, retain=True)
        later = Peer(host, port, "later")
        try:
            later.subscribe("paho/retained", 1)
            time.sleep(0.5)
            expect(later.messages, [], "after clearing")
        finally:
            later.stop()
    finally:
        pub.stop()


def will_child(host, port, topic):
    """Runs in a child process: connects with a will, says so, then waits to be killed."""
    peer = Peer(host, port, "will-child", will=(topic, b"gone", 1, False))
    print("ready", flush=True)
    time.sleep(60)
    peer.stop()


def check_will(host, port):
    topic = f"paho/will/{uuid.uuid4().hex[:8]}"
    watcher = Peer(host, port, "watcher")
    try:
        watcher.subscribe(topic, 1)
        child = subprocess.Popen(
            [sys.executable, __file__, "--will-child", host, str(port), topic],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = [None]
            reader = threading.Thread(target=lambda: line.__setitem__(0, child.stdout.readline()))
            reader.start()
            reader.join(TIMEOUT)
            if line[0] != "ready\n":
                raise Failed(f"will client did not connect (said {line[0]!r})")
        finally:
            child.kill()  # SIGKILL: no DISCONNECT
            child.wait(TIMEOUT)
        expect(watcher.wait_messages(1), [(topic, b"gone", 1, False)], "will")
    finally:
        watcher.stop()


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--will-child":
        will_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    checks = [
        ("paho QoS 0/1/2 publish+subscribe", check_qos_round_trips),
        ("paho MQTT 3.1 client", check_mqtt31),
        ("paho retained message", check_retained),
        ("paho will on SIGKILL", check_will),
    ]
    failed = 0
    for name, check in checks:
        try:
            check(host, port)
            print(f"PASS {name}", flush=True)
        except Exception as e:  # any error is a failed check, with its reason
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
