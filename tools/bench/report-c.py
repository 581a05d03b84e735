#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""make bench-c, host side: turns the guest's runs (bench-c.jsonl, one JSON
line per v4l2-bench run tagged with its driver, "ours" or "c") into
bench-c.json and the table bench-c.txt (also printed): for each figure
the median of the rounds of each driver, with the smallest and largest
round as its spread, ours/C of the medians, and the median of the rounds'
own ratios (each round runs both drivers back to back, so a slow stretch
of the host weighs on both sides of its ratio). Exits 1 when a figure has
no run of either driver."""

import argparse
import json
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import load_runs, spread  # noqa: E402  (the same medians as make bench)

# (label, unit, better, run filter, value key); "better": which way is good.
STREAMS = [("mmap", 640, 480), ("mmap", 1920, 1080), ("userptr", 1920, 1080)]
FIGURES = [
    ("G_FMT p50, 1 thread", "us", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 1}, "lat_p50_us"),
    ("G_FMT p99, 1 thread", "us", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 1}, "lat_p99_us"),
    ("G_FMT ops/s, 1 thread", "ops/s", "higher", {"test": "ioctl", "op": "G_FMT", "sessions": 1}, "ops_per_s"),
    ("G_FMT program CPU/op, 1 thread", "us", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 1},
     "process_cpu_us_per_op"),
    ("G_FMT guest CPU/op, 1 thread", "us", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 1},
     "guest_cpu_us_per_op"),
    ("G_FMT sleeps/op, 1 thread", "sleeps", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 1},
     "sleeps_per_op"),
    ("G_FMT ops/s, 4 threads", "ops/s", "higher", {"test": "ioctl", "op": "G_FMT", "sessions": 4}, "ops_per_s"),
    ("G_FMT p50, 4 threads", "us", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 4}, "lat_p50_us"),
    ("G_FMT p99, 4 threads", "us", "lower", {"test": "ioctl", "op": "G_FMT", "sessions": 4}, "lat_p99_us"),
    ("open p50", "us", "lower", {"test": "openclose"}, "open_p50_us"),
    ("close p50", "us", "lower", {"test": "openclose"}, "close_p50_us"),
    ("mmap p50 (one 640x480 buffer)", "us", "lower", {"test": "mmap"}, "mmap_p50_us"),
    ("munmap p50", "us", "lower", {"test": "mmap"}, "munmap_p50_us"),
] + [
    (f"stream {mem.upper()} {w}x{h} {what}", unit, better, {"test": "stream", "memory": mem, "width": w, "height": h}, key)
    for mem, w, h in STREAMS
    for what, unit, better, key in [
        ("fps", "frames/s", "higher", "fps"),
        ("program CPU/frame", "us", "lower", "process_cpu_us_per_frame"),
        ("guest CPU/frame", "us", "lower", "guest_cpu_us_per_frame"),
    ]
]
DRIVERS = ["ours", "c"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the guest run's results folder (bench-c.jsonl)")
    ap.add_argument("--meta", default="{}", help="JSON object merged into meta")
    a = ap.parse_args()

    runs = load_runs(os.path.join(a.dir, "bench-c.jsonl"))
    if not runs:
        sys.exit("no runs in bench-c.jsonl")
    meta = json.loads(a.meta)
    rows = []
    complete = True
    for label, unit, better, sel, key in FIGURES:
        row = {"figure": label, "unit": unit, "better": better}
        for drv in DRIVERS:
            rs = [r for r in runs if r.get("driver") == drv and all(r.get(k) == v for k, v in sel.items())]
            sup = [r for r in rs if r.get("supported", True)]
            if sup:
                row[drv] = spread([r[key] for r in sup], unit)
            elif rs:
                row[drv] = {"unsupported": rs[0].get("error", "refused")}
            else:
                row[drv] = None
                complete = False
        add_ratios(row, paired_ratios(runs, sel, key))
        rows.append(row)
    rows += alternating_rows(runs)
    # Rounds each driver finished (a guest that crashed exported fewer).
    meta["rounds_done"] = {drv: len({r.get("run") for r in runs if r.get("driver") == drv}) for drv in DRIVERS}
    res = {"meta": meta, "figures": rows}
    with open(os.path.join(a.dir, "bench-c.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    table = summary(res)
    with open(os.path.join(a.dir, "bench-c.txt"), "w") as f:
        f.write(table)
    print(table, end="")
    return 0 if complete else 1


def add_ratios(row, per_round):
    """Adds to a figure's row ours/C of the two medians, and the median and
    spread of `per_round`, the rounds' own ratios, when there are any."""
    ours, c = row["ours"], row["c"]
    if ours and c and "median" in ours and "median" in c and c["median"]:
        row["ours_over_c"] = round(ours["median"] / c["median"], 3)
    if per_round:
        row["paired_ratio"] = {"median": round(statistics.median(per_round), 3),
                               "min": round(min(per_round), 3), "max": round(max(per_round), 3),
                               "rounds": len(per_round)}


def alternating_rows(runs):
    """The rows of v4l2-bench's alternate runs (ours as node a, C as b, in
    turn from one thread); per round: the median of that run's own pairs'
    latency ratios, and its CPU ratio."""
    oc = [r for r in runs if r.get("test") == "alternate" and r.get("op") == "openclose"]
    alt = [r for r in runs if r.get("test") == "alternate" and r.get("op") == "G_FMT"]
    figures = []
    if oc:
        figures += [(f"{what} p50, alternating", oc, f"a_{what}_p50_us", f"b_{what}_p50_us",
                     [r[f"{what}_pair_p50_ratio"] for r in oc]) for what in ("open", "close")]
    if alt:
        figures += [
            ("G_FMT p50, alternating in 1 thread", alt, "a_p50_us", "b_p50_us",
             [r["pair_p50_ratio"] for r in alt]),
            ("G_FMT program CPU/op, alternating", alt, "a_cpu_us_per_op", "b_cpu_us_per_op",
             [r["a_cpu_us_per_op"] / r["b_cpu_us_per_op"] for r in alt if r["b_cpu_us_per_op"]]),
        ]
    out = []
    for label, rs, ka, kb, per_round in figures:
        row = {"figure": label, "unit": "us", "better": "lower",
               "ours": spread([r[ka] for r in rs], "us"), "c": spread([r[kb] for r in rs], "us")}
        add_ratios(row, per_round)
        out.append(row)
    return out


def paired_ratios(runs, sel, key):
    """ours/C of each round that has a supported run of both drivers."""
    by_round = {}
    for r in runs:
        if all(r.get(k) == v for k, v in sel.items()) and r.get("supported", True) and key in r:
            by_round.setdefault(r.get("run"), {})[r.get("driver")] = r[key]
    return [d["ours"] / d["c"] for d in by_round.values() if "ours" in d and d.get("c")]


def cell(s):
    if s is None:
        return "no run"
    if "unsupported" in s:
        return "unsupported"
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def summary(res):
    m = res["meta"]
    done = m.get("rounds_done", {})
    out = [
        f"virtio-media, our driver against the C driver ({m.get('c_driver', '?')}), one boot: {m.get('note', '')}",
        f"ours: {m.get('commit', '?')}; {m.get('date', '?')}; median of the rounds (min-max), the drivers' runs"
        f" interleaved; rounds done: ours {done.get('ours', '?')}, C {done.get('c', '?')} of {m.get('runs', '?')}",
        f"guest: {m.get('guest', '?')}",
        f"host load {m.get('host_load_before', '?')} before, {m.get('host_load_after', '?')} after"
        f" ({m.get('host_cores', '?')} cores); ours on virtio ID 42, C on ID 48, same capture backend, no delay",
        "",
        f"{'figure':42} {'unit':8} {'better':6} {'ours':>26} {'C':>26} {'ours/C':>7} {'per round (min-max)':>20}",
    ]
    for r in res["figures"]:
        ratio = f"{r['ours_over_c']:.2f}" if "ours_over_c" in r else "-"
        p = r.get("paired_ratio")
        paired = f"{p['median']:.2f} ({p['min']:.2f}-{p['max']:.2f})" if p else "-"
        out.append(f"{r['figure']:42} {r['unit']:8} {r['better']:6} {cell(r['ours']):>26} {cell(r['c']):>26}"
                   f" {ratio:>7} {paired:>20}")
    out.append("")
    out.append("ours/C: of the two medians; per round: the median of each round's own ratio (its spread in"
               " brackets); for the alternating p50 rows, a round's ratio is the median of its pairs' ratios.")
    out.append("C's USERPTR rows: the C driver with allow_userptr=1 for those runs only (it refuses USERPTR"
               " by default).")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
