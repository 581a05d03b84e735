#!/usr/bin/env python3
"""Splits single-session G_FMT calls into phases from a guest trace.

Reads the ftrace text of tools/vm/tests/bench-c.sh's BENCH_TRACE runs
(raw_syscalls sys_enter/sys_exit of ioctl, sched_switch, sched_waking,
irq_handler_entry) and prints, per file, the median of each phase of the
calls that slept once:

  submit   ioctl entry to the program's sleep (the driver's submitting
           side and the notification's trap, in which the test device
           runs the command)
  device   sleep to the device interrupt that preceded the wakeup
  irq      that interrupt to the program's wakeup (the driver's handler)
  wake     wakeup to the program running again (IPI, idle exit)
  return   running again to the ioctl's exit (the driver's waiting side)

Usage: trace-phases.py TRACE.txt[.gz]...
"""
import gzip
import re
import statistics
import sys

LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+):\s+(?P<event>\w+):\s*(?P<rest>.*)$")
PHASES = ("submit", "device", "irq", "wake", "return", "total")


def events(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if m:
                yield m["event"], int(m["pid"]), float(m["ts"]) * 1e6, m["rest"]


def fields(rest):
    return dict(re.findall(r"(\w+)=(\S+)", rest))


def phases(path):
    calls, odd = [], 0
    call = None  # the G_FMT in progress: pid and phase timestamps
    for event, pid, ts, rest in events(path):
        if event == "sys_enter" and rest.startswith("NR 16 "):
            call = {"pid": pid, "start": ts}
        elif call is None:
            continue
        elif event == "sched_switch":
            f = fields(rest)
            if int(f.get("prev_pid", -1)) == call["pid"] and "sleep" not in call:
                call["sleep"] = ts
            elif int(f.get("next_pid", -1)) == call["pid"] and "waking" in call and "run" not in call:
                call["run"] = ts
        elif event == "irq_handler_entry" and "virtio" in rest and "sleep" in call and "waking" not in call:
            call["irq"] = ts
        elif event == "sched_waking" and int(fields(rest).get("pid", -1)) == call["pid"]:
            call.setdefault("waking", ts)
        elif event == "sys_exit" and pid == call["pid"] and rest.startswith("NR 16 "):
            if all(k in call for k in ("sleep", "irq", "waking", "run")):
                calls.append({
                    "submit": call["sleep"] - call["start"],
                    "device": call["irq"] - call["sleep"],
                    "irq": call["waking"] - call["irq"],
                    "wake": call["run"] - call["waking"],
                    "return": ts - call["run"],
                    "total": ts - call["start"],
                })
            else:
                odd += 1
            call = None
    return calls, odd


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("%-28s %6s %6s" % ("trace (medians, us)", "calls", "other") +
          "".join("%9s" % p for p in PHASES))
    for path in sys.argv[1:]:
        calls, odd = phases(path)
        name = re.sub(r"^.*trace-gfmt-|\.txt(\.gz)?$", "", path)
        if not calls:
            print("%-28s %6d %6d  (no call with one sleep)" % (name, 0, odd))
            continue
        print("%-28s %6d %6d" % (name, len(calls), odd) +
              "".join("%9.1f" % statistics.median(c[p] for c in calls) for p in PHASES))


if __name__ == "__main__":
    main()
