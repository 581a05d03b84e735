#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Host side of a guest's host actions (run-guest.sh --host-actions).

A guest test asks the host to act at a moment it chooses: it writes

    === VM-HOST-ACTION SEQ VERB ARGS... ===

on its /dev/ttyS2 (tools/vm/guest-host-action.sh does it), which QEMU joins
to the UNIX socket this program listens on. The program performs the action
and answers on the same line

    === VM-HOST-DONE SEQ ok|fail TEXT ===

Verbs:
    device_del ID       unplug device ID (QMP device_del) and wait until QEMU
                        reports it gone (DEVICE_DELETED), which needs the
                        guest to release it
    device_add [bus=PORT] FLAGS..
                        start a new test device with these flags on a new
                        socket and plug it into root port PORT (by default
                        the first free one); the answer's TEXT starts with
                        its ID (vfuN)
    kill ID [SIGNAL]    send SIGNAL (default KILL) to the process of device
                        ID and wait until it is gone
    qmp JSON            one QMP command; TEXT is QEMU's answer
    after SECONDS VERB ARGS..
                        answers at once and performs VERB ARGS SECONDS
                        later (its result goes to the log only): for an
                        action that must come while the guest cannot ask,
                        such as waking it from suspend to idle

Devices are named vfu0, vfu1, ... as run-guest.sh attaches them (the QEMU
device ID); run-guest.sh passes the initial ones as --device ID:PID:PORT
(PORT, the PCIe root port, is empty without run-guest.sh --hotplug: such a
device sits on the root bus and cannot be unplugged).
The program ends when QEMU closes the line, stopping the devices it started.
Devices it starts get --no-msix, as run-guest.sh --hotplug gives the
initial ones: QEMU 11.1.3 aborts when it unplugs a vfio-user device that has
MSI-X (and when the process of one without MSI-X dies: do not kill these).
Everything it does is logged to OUT/host-actions.log.

QMP is a line of JSON each way; its few messages are handled here with the
standard library rather than adding a QMP package to the rig's installs.
"""

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

ANSWER_TIMEOUT_S = 120


def now():
    return time.strftime("%H:%M:%S")


class Qmp:
    """A QMP client on QEMU's server socket: commands and the events seen."""

    def __init__(self, path, log):
        self.log = log
        self.events = []
        self.buffer = b""
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        greeting = self.read_message(deadline)
        if "QMP" not in greeting:
            raise RuntimeError(f"not a QMP greeting: {greeting}")
        self.command({"execute": "qmp_capabilities"})

    def fileno(self):
        return self.sock.fileno()

    def read_message(self, deadline):
        """The next message; events are also kept in self.events."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError("QMP: no message in time")
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP: QEMU closed the socket")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if "event" in message:
            self.log(f"qmp event {json.dumps(message)}")
            self.events.append(message)
        return message

    def poll_events(self):
        """Reads whatever QEMU sent without waiting."""
        while select.select([self.sock], [], [], 0)[0] or b"\n" in self.buffer:
            self.read_message(time.monotonic() + 1)

    def command(self, cmd, timeout=30):
        self.log(f"qmp -> {json.dumps(cmd)}")
        self.sock.sendall(json.dumps(cmd).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            message = self.read_message(deadline)
            if "return" in message or "error" in message:
                self.log(f"qmp <- {json.dumps(message)}")
                return message

    def wait_event(self, name, match, timeout):
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("event") == name and match(event.get("data", {})):
                    del self.events[i]
                    return event
            self.read_message(deadline)


class Device:
    def __init__(self, dev_id, pid, port, proc=None):
        self.id = dev_id
        self.pid = pid
        self.port = port
        self.proc = proc  # set for devices this program started
        self.plugged = True

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        # Not our child: a zombie its parent has not reaped is dead too.
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state not in ("Z", "X")


class HostActions:
    def __init__(self, args):
        self.out = args.out
        self.vfu_bin = args.vfu_bin
        self.logfile = open(os.path.join(self.out, "host-actions.log"), "a", buffering=1)
        self.devices = {}
        for spec in args.device:
            dev_id, pid, port = spec.split(":")
            self.devices[dev_id] = Device(dev_id, int(pid), port)
        self.ports = args.ports.split(",") if args.ports else []
        self.next_index = len(self.devices)
        self.qmp = None
        self.scheduled = []  # (monotonic time due, verb, args)

    def log(self, text):
        self.logfile.write(f"[{now()}] {text}\n")

    def free_port(self):
        used = {d.port for d in self.devices.values() if d.plugged}
        for port in self.ports:
            if port not in used:
                return port
        return None

    def device(self, dev_id):
        if dev_id not in self.devices:
            raise ValueError(f"no device {dev_id} (known: {' '.join(self.devices)})")
        return self.devices[dev_id]

    def do_device_del(self, args):
        if len(args) != 1:
            raise ValueError("usage: device_del ID")
        dev = self.device(args[0])
        start = time.monotonic()
        answer = self.qmp.command({"execute": "device_del", "arguments": {"id": dev.id}})
        if "error" in answer:
            raise RuntimeError(answer["error"].get("desc", str(answer)))
        self.qmp.wait_event("DEVICE_DELETED", lambda d: d.get("device") == dev.id,
                            ANSWER_TIMEOUT_S - 10)
        dev.plugged = False
        return f"{dev.id} removed from {dev.port} after {time.monotonic() - start:.1f} s"

    def do_device_add(self, flags):
        if flags and flags[0].startswith("bus="):
            port = flags.pop(0).removeprefix("bus=")
            if port not in self.ports:
                raise ValueError(f"no root port {port} (ports: {' '.join(self.ports)})")
            if any(d.port == port and d.plugged for d in self.devices.values()):
                raise RuntimeError(f"root port {port} is in use")
        else:
            port = self.free_port()
            if port is None:
                ports = " ".join(self.ports) or "none without run-guest.sh --hotplug"
                raise RuntimeError(f"no free root port (ports: {ports})")
        dev_id = f"vfu{self.next_index}"
        self.next_index += 1
        sock = os.path.join(self.out, f"{dev_id}.sock")
        logf = open(os.path.join(self.out, f"{dev_id}.log"), "w")
        proc = subprocess.Popen([self.vfu_bin, "--socket", sock, "--no-msix"] + flags,
                                stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        dev = Device(dev_id, proc.pid, port, proc)
        dev.plugged = False
        self.devices[dev_id] = dev
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the device did not create {sock} (see {dev_id}.log)")
            time.sleep(0.1)
        answer = self.qmp.command({"execute": "device_add", "arguments": {
            "driver": "vfio-user-pci", "id": dev_id, "bus": port,
            "socket": {"path": sock, "type": "unix"}}})
        if "error" in answer:
            raise RuntimeError(answer["error"].get("desc", str(answer)))
        dev.plugged = True
        return f"{dev_id} on {port}"

    def do_kill(self, args):
        if len(args) not in (1, 2):
            raise ValueError("usage: kill ID [SIGNAL]")
        dev = self.device(args[0])
        signum = signal.Signals["SIG" + args[1].upper().removeprefix("SIG")] if len(args) == 2 \
            else signal.SIGKILL
        if not dev.alive():
            raise RuntimeError(f"{dev.id} (pid {dev.pid}) is not running")
        os.kill(dev.pid, signum)
        deadline = time.monotonic() + 10
        while dev.alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dev.id} (pid {dev.pid}) still runs 10 s after {signum.name}")
            time.sleep(0.05)
        return f"{dev.id} (pid {dev.pid}) ended by {signum.name}"

    def do_qmp(self, args):
        answer = self.qmp.command(json.loads(" ".join(args)))
        return json.dumps(answer)

    def do_after(self, args):
        if len(args) < 2:
            raise ValueError("usage: after SECONDS VERB ARGS...")
        delay = float(args[0])
        self.scheduled.append((time.monotonic() + delay, args[1], args[2:]))
        return f"{' '.join(args[1:])} in {delay:g} s"

    def run_scheduled(self):
        """Performs the scheduled actions that are due; returns the time
        until the next one (None when there is none)."""
        now_s = time.monotonic()
        due = [a for a in self.scheduled if a[0] <= now_s]
        self.scheduled = [a for a in self.scheduled if a[0] > now_s]
        for _, verb, args in due:
            try:
                self.log(f"scheduled {verb} {' '.join(args)}: ok {self.perform(verb, args)}")
            except Exception as e:  # logged, there is no one to answer
                self.log(f"scheduled {verb} {' '.join(args)}: fail {type(e).__name__}: {e}")
        if not self.scheduled:
            return None
        return max(0.0, min(a[0] for a in self.scheduled) - time.monotonic())

    def perform(self, verb, args):
        handlers = {
            "device_del": self.do_device_del,
            "device_add": self.do_device_add,
            "kill": self.do_kill,
            "qmp": self.do_qmp,
            "after": self.do_after,
        }
        if verb not in handlers:
            raise ValueError(f"unknown action {verb} (known: {' '.join(handlers)})")
        return handlers[verb](args)

    def serve(self, conn):
        buffer = b""
        while True:
            readable = select.select([conn, self.qmp], [], [], self.run_scheduled())[0]
            if self.qmp in readable:
                self.qmp.poll_events()
            if conn not in readable:
                continue
            data = conn.recv(4096)
            if not data:
                self.log("QEMU closed the line")
                return
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                if not line.startswith("=== VM-HOST-ACTION ") or not line.endswith(" ==="):
                    continue
                words = line[len("=== VM-HOST-ACTION "):-len(" ===")].split()
                if len(words) < 2:
                    continue
                seq, verb, args = words[0], words[1], words[2:]
                self.log(f"guest asks {seq}: {verb} {' '.join(args)}")
                try:
                    verdict, text = "ok", self.perform(verb, args)
                except Exception as e:  # every failure goes back to the guest
                    verdict, text = "fail", f"{type(e).__name__}: {e}"
                text = " ".join(str(text).split())
                self.log(f"answer {seq}: {verdict} {text}")
                conn.sendall(f"=== VM-HOST-DONE {seq} {verdict} {text} ===\n".encode())

    def stop_devices(self):
        for dev in self.devices.values():
            if dev.proc is None or dev.proc.poll() is not None:
                continue
            # Give a device that exits on disconnect time to finish.
            try:
                dev.proc.wait(5)
            except subprocess.TimeoutExpired:
                dev.proc.terminate()
                try:
                    dev.proc.wait(5)
                except subprocess.TimeoutExpired:
                    dev.proc.kill()
                    dev.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the run's folder")
    parser.add_argument("--listen", required=True, help="socket QEMU joins to the guest's ttyS2")
    parser.add_argument("--qmp", required=True, help="QEMU's QMP socket")
    parser.add_argument("--vfu-bin", required=True, help="the test device program")
    parser.add_argument("--ports", default="", help="PCIe root ports, comma-separated")
    parser.add_argument("--device", action="append", default=[], help="ID:PID:PORT")
    args = parser.parse_args()

    actions = HostActions(args)
    # run-guest.sh ends it with SIGTERM when QEMU is gone: stop the devices.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(args.listen):
        os.unlink(args.listen)
    listener.bind(args.listen)
    listener.listen(1)
    # QEMU connects when it starts; it may fail to start, and then never will.
    if not select.select([listener], [], [], 120)[0]:
        actions.log("QEMU did not connect in 120 s")
        return 1
    conn, _ = listener.accept()
    listener.close()
    os.unlink(args.listen)
    try:
        actions.qmp = Qmp(args.qmp, actions.log)
        actions.log("ready")
        actions.serve(conn)
    except (EOFError, ConnectionError) as e:
        actions.log(f"QEMU went away: {e}")
    finally:
        actions.stop_devices()
    return 0


if __name__ == "__main__":
    sys.exit(main())
