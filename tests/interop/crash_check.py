#!/usr/bin/env python3
"""Crash test: kill -9 the broker mid-burst, restart it, and check that nothing it
acknowledged was lost and that no QoS 2 message was delivered twice.

Usage: crash_check.py --port PORT --broker 'COMMAND' [--host HOST] [--seed N] [--rounds N]
                      [--window N] [--gentle] [--log FILE] [--pid-file FILE]

COMMAND starts the broker listening on HOST:PORT with a data directory; `{shards}` in it is
replaced by each start's shard count (a command without it, e.g. Mosquitto's, ignores it).
scripts/crash-test.sh builds it; this script starts, kills and restarts the broker itself.

The test, with paho-mqtt 2.x (callback API version 2), all in this one process:

* Three subscribers with persistent sessions (CleanSession=0, fixed client ids) subscribe once,
  on the first start, and wait for their SUBACK: `off1` (QoS 1, crash/q1/#) disconnects at once
  and stays offline until the end, so its messages queue in the broker; `on1` (QoS 1,
  crash/q1/# and crash/e1/#) and `on2` (QoS 2, crash/q2/#) are online in every round, reconnecting with the
  same paho client object (so paho keeps its own QoS 2 state) after each restart.
* Each round (ROUNDS of them): start the broker (--shards 2; one later round 3, one 1), connect
  everyone (CONNACK Session Present must be 1 for on1 and on2 after a restart), then three new
  clean-session publishers (QoS 1 on crash/q1/<n>, QoS 2 on crash/q2/<n>, and QoS 1 on
  crash/e1/<n>, which only the online on1 keeps: no offline queue holds it, only on1's
  in-flight state; each payload a unique id such as r3-q1-000123) publish as fast as a
  window of WINDOW in flight allows, for a random
  0.3-1.5 s, and the broker is killed with SIGKILL in mid-burst. A message counts as
  acknowledged only if its PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived before the kill.
* In two of the rounds, before the kill, retained QoS 1 messages go to crash/ret/{a,b,c} (each
  PUBACK awaited) and then crash/ret/b is cleared with an empty retained message.
* Last start (no kill): off1, on1 and on2 reconnect (Session Present must be 1) and take
  everything until nothing arrives for QUIET seconds. Then: every acknowledged QoS 1 id reached
  off1 and on1 at least once (duplicates are allowed and counted), every acknowledged crash/e1
  id reached on1 at least once (before the kill or after), every acknowledged QoS 2 id
  reached on2 and no id reached on2 twice, and a fresh subscriber to crash/ret/# gets exactly
  a and c with their last payloads. Finally the broker must exit on SIGTERM.

Prints the seed (replay a run with --seed), one `PASS name` or `FAIL name: why` line per check
and a summary; exits 1 if anything failed, 2 on bad usage. Every wait has a timeout.
"""

import argparse
import collections
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

import paho.mqtt.client as mqtt

WINDOW = 50  # QoS 1/2 messages in flight per publisher (default of --window)
ROUNDS = 5  # rounds, each ended by a kill -9
BURST = (0.3, 1.5)  # seconds of publishing before the kill
QUIET = 3.0  # the final drain ends after this long without a message...
DRAIN_LIMIT = 45.0  # ...or after this long in any case
START_TIMEOUT = 20.0  # for the broker to listen after a (re)start
CONNECT_TIMEOUT = 10.0  # for a client to get its CONNACK, retrying refused connections
ACK_TIMEOUT = 10.0  # for a SUBACK or the PUBACK of a retained message
STOP_TIMEOUT = 10.0  # for the broker to exit on SIGTERM
EXAMPLES = 5  # missing or duplicate ids shown in a failure

Q1_FILTER, Q2_FILTER, RET_FILTER = "crash/q1/#", "crash/q2/#", "crash/ret/#"
# QoS 1 kept only by the online on1 (no offline queue has it): its in-flight state alone.
E1_FILTER = "crash/e1/#"
RET_TOPICS = ("crash/ret/a", "crash/ret/b", "crash/ret/c")
CLEARED = "crash/ret/b"


class Failed(Exception):
    """Something the test cannot go on without (the broker does not start, a client cannot
    connect): reported as a FAIL line, and the run stops."""


# --- the broker ---------------------------------------------------------------------------------


class Broker:
    """The broker process, started from the command template, killed and restarted."""

    def __init__(self, template, host, port, log_path, pid_file):
        self.template = template
        self.host = host
        self.port = port
        self.log_path = log_path
        self.pid_file = pid_file
        self.proc = None
        self.starts = 0

    def start(self, shards):
        """Starts the broker and waits until it accepts TCP connections on the port."""
        self.starts += 1
        argv = shlex.split(self.template.format(shards=shards))
        with open(self.log_path, "a") as log:
            log.write(f"=== start {self.starts}: {' '.join(argv)}\n")
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            except OSError as e:
                raise Failed(f"cannot run {argv[0]}: {e}") from e
        self._write_pid(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            status = self.proc.poll()
            if status is not None:
                self._reaped()
                raise Failed(
                    f"broker exited with status {status} at start {self.starts} before it "
                    f"listened (its log is below)"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise Failed(
            f"broker did not listen on {self.host}:{self.port} within {START_TIMEOUT:.0f} s "
            f"at start {self.starts} (its log is below)"
        )

    def kill(self, sig=signal.SIGKILL):
        """Sends `sig` (SIGKILL after STOP_TIMEOUT if that is not enough) and reaps it. Returns
        its exit status if it had exited on its own already."""
        if self.proc is None:
            return None
        early = self.proc.poll()
        if early is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        self._reaped()
        return early

    def stop(self):
        """SIGTERM; returns its exit status, or None if it had to be killed after STOP_TIMEOUT."""
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            status = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._reaped()
        return status

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            return "(no broker log)"
        return "".join("  | " + line for line in tail).rstrip()

    def _write_pid(self, pid):
        if self.pid_file:
            with open(self.pid_file, "w") as f:
                f.write(f"{pid}\n")

    def _reaped(self):
        self.proc = None
        if self.pid_file:
            open(self.pid_file, "w").close()


# --- clients ------------------------------------------------------------------------------------


class Peer:
    """A paho client whose network loop runs in a thread while connected. It does not reconnect
    by itself: after a kill the loop ends, and `connect` is called again after the restart."""

    def __init__(self, host, port, client_id, clean_session):
        self.host = host
        self.port = port
        self.name = client_id
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
            reconnect_on_failure=False,
        )
        self.cond = threading.Condition()
        self.connack = None  # (return code, session present) of the latest CONNACK
        self.subacks = {}
        self.received = collections.Counter()  # payload -> deliveries
        self.messages = []  # (topic, payload, retain flag) of every message
        self.last_message = 0.0
        self.on_ack = None  # called on each PUBACK/PUBCOMP
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connack = (reason_code.value, bool(flags.session_present))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.subacks[mid] = [rc.value for rc in reason_codes]
            self.cond.notify_all()

    def _on_message(self, client, userdata, message):
        payload = message.payload.decode("utf-8", "replace")
        with self.cond:
            self.received[payload] += 1
            self.messages.append((message.topic, payload, bool(message.retain)))
            self.last_message = time.monotonic()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if self.on_ack is not None:
            self.on_ack()

    def connect(self):
        """Connects, retrying while the broker refuses, until CONNACK 0 or CONNECT_TIMEOUT.
        Returns the CONNACK's Session Present flag."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        why = "no attempt"
        while time.monotonic() < deadline:
            with self.cond:
                self.connack = None
            try:
                self.client.connect(self.host, self.port, keepalive=30)
            except OSError as e:  # refused while the broker restarts
                why = f"{type(e).__name__}: {e}"
                time.sleep(0.1)
                continue
            self.client.loop_start()
            with self.cond:
                wait = max(0.1, min(5.0, deadline - time.monotonic()))
                self.cond.wait_for(lambda: self.connack is not None, wait)
                connack = self.connack
            if connack is not None and connack[0] == 0:
                return connack[1]
            why = "no CONNACK" if connack is None else f"CONNACK {connack[0]}"
            self.halt()
            time.sleep(0.1)
        raise Failed(f"{self.name} cannot connect within {CONNECT_TIMEOUT:.0f} s: {why}")

    def subscribe(self, topic, qos):
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: subscribe returned {rc}")
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacks, ACK_TIMEOUT):
                raise Failed(f"{self.name}: no SUBACK for {topic} within {ACK_TIMEOUT:.0f} s")
            if self.subacks[mid] != [qos]:
                raise Failed(f"{self.name}: SUBACK {self.subacks[mid]} for {topic} at QoS {qos}")

    def publish_acked(self, topic, payload, qos, retain=False):
        """Publishes and waits for the acknowledgement; returns whether it came in time."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(ACK_TIMEOUT)
        except (RuntimeError, ValueError):  # paho: the connection is gone, or the queue is full
            return False
        return info.is_published()

    def disconnect(self):
        """Sends DISCONNECT (the session stays, for CleanSession=0) and stops the loop."""
        self.client.disconnect()
        self.halt()

    def halt(self):
        """Stops the network loop (after a kill it has ended by itself already)."""
        self.client.loop_stop()

    def snapshot(self):
        """A copy of the deliveries so far: payload -> count."""
        with self.cond:
            return collections.Counter(self.received)

    def deliveries(self):
        with self.cond:
            return sum(self.received.values())

    def last_message_at(self):
        with self.cond:
            return self.last_message


class Publisher(Peer):
    """A clean-session publisher that publishes unique ids from a thread, `window` of them in
    flight (published, not yet acknowledged) at most."""

    def __init__(self, host, port, round_no, kind, window):
        super().__init__(host, port, f"crash-pub-{kind}-r{round_no}", clean_session=True)
        self.round_no = round_no
        self.kind = kind  # "q1", "q2" or "e1": the topic's first level after crash/
        self.qos = int(kind[1])
        self.client.max_inflight_messages_set(window)  # paho holds back none of them
        self.window = threading.Semaphore(window)
        self.on_ack = self.window.release
        self.sent = []  # (id, MQTTMessageInfo)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self.stopping.is_set():
            if not self.window.acquire(timeout=0.1):
                continue
            n += 1
            msg_id = f"r{self.round_no}-{self.kind}-{n:06d}"
            info = self.client.publish(f"crash/{self.kind}/{n}", msg_id, qos=self.qos)
            self.sent.append((msg_id, info))
            if info.rc != mqtt.MQTT_ERR_SUCCESS:  # the connection is gone: the broker was killed
                break

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.halt()

    def acked(self):
        """Ids whose PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived."""
        return [msg_id for msg_id, info in self.sent if acknowledged(info)]


def acknowledged(info):
    """Whether paho got the PUBACK/PUBCOMP (is_published raises for a failed publish)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


# --- the test -----------------------------------------------------------------------------------


class Run:
    """One crash test run: the schedule from the seed, the clients, and what they saw."""

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        rounds = args.rounds
        # Start i (1-based) uses shards[i - 1]; start rounds + 1 is the final one.
        self.shards = [2] * (rounds + 1)
        later = list(range(2, rounds + 1))
        if len(later) >= 2:
            three, one = self.rng.sample(later, 2)
            self.shards[three - 1], self.shards[one - 1] = 3, 1
        self.bursts = [round(self.rng.uniform(*BURST), 2) for _ in range(rounds)]
        self.retained_rounds = sorted(self.rng.sample(range(1, rounds + 1), min(2, rounds)))
        self.broker = Broker(args.broker, args.host, args.port, args.log, args.pid_file)
        host, port = args.host, args.port
        self.off1 = Peer(host, port, "crash-off1", clean_session=False)
        self.on1 = Peer(host, port, "crash-on1", clean_session=False)
        self.on2 = Peer(host, port, "crash-on2", clean_session=False)
        self.acked = {"q1": [], "q2": [], "e1": []}  # acknowledged ids per publisher kind
        self.sent = {"q1": 0, "q2": 0, "e1": 0}
        self.retained_want = None  # {topic: payload} after the last retained round
        self.problems = collections.defaultdict(list)  # check name -> why, for the report
        self.failed = 0
        self.passed = 0

    # Reporting

    def report(self, name, why=None):
        if why is None:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {why}", flush=True)

    def note(self, check, why):
        """A problem seen during the rounds, reported with its check at the end."""
        print(f"  ! {why}", flush=True)
        self.problems[check].append(why)

    # Phases

    def subscribe_all(self):
        """First start: the three persistent sessions subscribe; off1 goes offline."""
        for peer, topic, qos in (
            (self.off1, Q1_FILTER, 1),
            (self.on1, Q1_FILTER, 1),
            (self.on1, E1_FILTER, 1),
            (self.on2, Q2_FILTER, 2),
        ):
            peer.connect()
            peer.subscribe(topic, qos)
        self.off1.disconnect()

    def reconnect(self, peers, when):
        for peer in peers:
            if not peer.connect():
                why = f"{peer.name}: Session Present 0 {when}"
                self.note("session present after restarts", why)

    def publish_retained(self, round_no):
        """Retained QoS 1 on a, b and c, then b cleared, each acknowledged; returns why not."""
        peer = Peer(self.args.host, self.args.port, f"crash-ret-r{round_no}", clean_session=True)
        peer.connect()
        try:
            want = {}
            for topic in RET_TOPICS:
                payload = f"{topic.rsplit('/', 1)[1]}-r{round_no}"
                if not peer.publish_acked(topic, payload, 1, retain=True):
                    return f"no PUBACK for retained {topic} in round {round_no}"
                want[topic] = payload
            if not peer.publish_acked(CLEARED, b"", 1, retain=True):
                return f"no PUBACK for clearing {CLEARED} in round {round_no}"
            del want[CLEARED]
            self.retained_want = want
            return None
        finally:
            peer.disconnect()

    def crash_round(self, round_no):
        """Publishes for the round's burst time, then kills the broker mid-burst."""
        args = self.args
        pubs = [
            Publisher(args.host, args.port, round_no, kind, args.window)
            for kind in ("q1", "q2", "e1")
        ]
        for pub in pubs:
            pub.connect()
        started = time.monotonic()
        for pub in pubs:
            pub.start()
        if round_no in self.retained_rounds:
            why = self.publish_retained(round_no)
            if why is not None:
                self.note("retained messages survive", why)
        time.sleep(max(0.0, started + self.bursts[round_no - 1] - time.monotonic()))
        early = self.broker.kill(signal.SIGTERM if args.gentle else signal.SIGKILL)
        if early is not None:
            why = f"broker exited with status {early} by itself in round {round_no}"
            self.note("broker runs until killed", why)
        for pub in pubs:
            pub.stop()
        self.on1.halt()
        self.on2.halt()
        line = [
            f"round {round_no}: shards {self.shards[round_no - 1]},",
            f"{'stopped' if args.gentle else 'killed'} after {self.bursts[round_no - 1]:.2f} s;",
        ]
        for pub in pubs:
            acked = pub.acked()
            self.acked[pub.kind].extend(acked)
            self.sent[pub.kind] += len(pub.sent)
            line.append(f"{pub.kind} {len(acked)} acked of {len(pub.sent)} sent,")
        line.append(f"on1 has {self.on1.deliveries()}, on2 {self.on2.deliveries()}")
        if round_no in self.retained_rounds:
            line.append("(+ retained)")
        print(" ".join(line), flush=True)

    def drain(self):
        """Waits until off1, on1 and on2 got nothing for QUIET seconds (DRAIN_LIMIT at most)."""
        began = time.monotonic()
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            last = max([began] + [p.last_message_at() for p in (self.off1, self.on1, self.on2)])
            if now - last >= QUIET:
                print(f"drained in {now - began:.1f} s", flush=True)
                return
            if now - began >= DRAIN_LIMIT:
                print(f"  ! still receiving after {DRAIN_LIMIT:.0f} s; checking now", flush=True)
                return

    def fetch_retained(self):
        """What a fresh clean subscriber to crash/ret/# gets: sorted (topic, payload, retain)."""
        peer = Peer(self.args.host, self.args.port, "crash-ret-check", clean_session=True)
        peer.connect()
        try:
            peer.subscribe(RET_FILTER, 1)
            began = time.monotonic()
            while time.monotonic() - began < 5.0:
                time.sleep(0.1)
                with peer.cond:
                    if time.monotonic() - max(began, peer.last_message) >= 1.0:
                        break
            with peer.cond:
                return sorted(peer.messages)
        finally:
            peer.disconnect()

    # Checks

    def check_arrived(self, name, peer, kind):
        """Every acknowledged id of this publisher kind reached the peer at least once."""
        received = collections.Counter(
            {i: c for i, c in peer.snapshot().items() if f"-{kind}-" in i}
        )
        qos = int(kind[1])
        acked = self.acked[kind]
        missing = sorted(i for i in acked if received[i] == 0)
        dups = sum(c - 1 for c in received.values() if c > 1)
        acked_set = set(acked)
        unacked = sum(1 for i in received if i not in acked_set)
        print(
            f"{peer.name}: {len(acked)} acknowledged QoS {qos}, {len(received)} distinct ids "
            f"received ({sum(received.values())} deliveries, {dups} duplicates, {unacked} "
            f"delivered though not acknowledged), {len(missing)} missing",
            flush=True,
        )
        if missing:
            by_round = collections.Counter(i.split("-", 1)[0] for i in missing)
            rounds = ", ".join(f"{r} {c}" for r, c in sorted(by_round.items()))
            self.report(
                name,
                f"{len(missing)} of {len(acked)} acknowledged messages missing (by round: "
                f"{rounds}), e.g. {', '.join(missing[:EXAMPLES])}",
            )
        else:
            self.report(name)

    def check_no_duplicates(self, name, peer):
        received = peer.snapshot()
        dups = sorted(i for i, c in received.items() if c > 1)
        if dups:
            examples = ", ".join(f"{i} x{received[i]}" for i in dups[:EXAMPLES])
            self.report(name, f"{len(dups)} ids delivered more than once, e.g. {examples}")
        else:
            self.report(name)

    def check_retained(self, got):
        name = "retained messages survive"
        if self.problems[name]:
            self.report(name, "; ".join(self.problems[name]))
            return
        if self.retained_want is None:
            self.report(name, "no round published retained messages")
            return
        want = sorted((t, p, True) for t, p in self.retained_want.items())
        if got != want:
            self.report(name, f"a fresh subscriber to {RET_FILTER} got {got}, want {want}")
        else:
            self.report(name)

    def report_problems(self, name):
        why = self.problems.get(name)
        if not why:
            self.report(name)
        elif len(why) <= 4:
            self.report(name, "; ".join(why))
        else:
            self.report(name, f"{'; '.join(why[:4])}; and {len(why) - 4} more")

    # The whole run

    def run(self):
        args = self.args
        print(
            f"seed {args.seed} (replay with --seed {args.seed}); {args.rounds} "
            f"{'SIGTERM stops' if args.gentle else 'kills'}; shards per "
            f"start {self.shards}; bursts {self.bursts} s; retained in rounds "
            f"{self.retained_rounds}",
            flush=True,
        )
        began = time.monotonic()
        try:
            for round_no in range(1, args.rounds + 1):
                self.broker.start(self.shards[round_no - 1])
                if round_no == 1:
                    self.subscribe_all()
                else:
                    self.reconnect([self.on1, self.on2], f"on restart {round_no}")
                self.crash_round(round_no)
            self.broker.start(self.shards[args.rounds])
            self.reconnect([self.on1, self.on2, self.off1], "on the final restart")
            self.drain()
            retained = self.fetch_retained()
        except Failed as e:
            self.report("crash test ran", str(e))
            return self.summary(began)
        except Exception as e:  # a bug here, or paho surprising us: a failure with its trace
            traceback.print_exc(file=sys.stdout)
            self.report("crash test ran", f"{type(e).__name__}: {e}")
            return self.summary(began)

        self.report_problems("session present after restarts")
        self.report_problems("broker runs until killed")
        self.check_arrived("acknowledged QoS 1 reached offline off1", self.off1, "q1")
        self.check_arrived("acknowledged QoS 1 reached online on1", self.on1, "q1")
        self.check_arrived("acknowledged QoS 1 kept by online on1 only reached it", self.on1, "e1")
        self.check_arrived("acknowledged QoS 2 reached online on2", self.on2, "q2")
        self.check_no_duplicates("QoS 2 delivered once to on2", self.on2)
        self.check_retained(retained)

        for peer in (self.off1, self.on1, self.on2):
            peer.disconnect()
        status = self.broker.stop()
        if status is None:
            self.report("broker exits on SIGTERM", f"still running after {STOP_TIMEOUT:.0f} s")
        elif status != 0:
            self.report("broker exits on SIGTERM", f"exit status {status}")
        else:
            self.report("broker exits on SIGTERM")
        return self.summary(began)

    def summary(self, began):
        print(
            f"{self.passed} passed, {self.failed} failed in {time.monotonic() - began:.0f} s "
            f"(seed {self.args.seed}; {len(self.acked['q1'])} of {self.sent['q1']} QoS 1, "
            f"{len(self.acked['e1'])} of {self.sent['e1']} QoS 1 for on1 only and "
            f"{len(self.acked['q2'])} of {self.sent['q2']} QoS 2 messages acknowledged)",
            flush=True,
        )
        if self.failed:
            print(f"broker log ({self.args.log}), last lines:", flush=True)
            print(self.broker.log_tail(), flush=True)
        return 1 if self.failed else 0

    def close(self):
        """Whatever happened: no broker and no client loop left behind."""
        self.broker.kill()
        for peer in (self.off1, self.on1, self.on2):
            try:
                peer.halt()
            except Exception:
                pass


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--broker", required=True, help="starts the broker; {shards} is replaced")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=None, help="replay a run (default: a random one)")
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"kills (default {ROUNDS})")
    p.add_argument("--log", default="crash-broker.log", help="broker output, appended")
    p.add_argument("--pid-file", default=None, help="holds the running broker's pid")
    p.add_argument(
        "--gentle",
        action="store_true",
        help="stop the broker with SIGTERM instead of SIGKILL: a control run, which a broker "
        "that saves its state on shutdown passes",
    )
    p.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help=f"messages in flight per publisher (default {WINDOW})",
    )
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.window < 1:
        p.error("--window must be at least 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    return args


def main():
    args = parse_args()
    # SIGTERM (from the wrapper's trap or `timeout`) unwinds like an exception, so that the
    # broker is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = Run(args)
    try:
        return run.run()
    finally:
        run.close()


if __name__ == "__main__":
    sys.exit(main())
