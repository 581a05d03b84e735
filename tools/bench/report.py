#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""make bench, host side: turns the guest's runs (bench.jsonl, and
codec.jsonl: the decoding figures of tools/bench/codec.sh), the test
devices' own command timings (--stats) and the guest's perf reports into
bench.json (every figure with its unit), bench.png (latency against
sessions, throughput against sessions, fps per streaming mode) and a
summary table on stdout (also written to bench.txt).

Each figure is the median of the runs, with the smallest and largest run
as its spread. Exits 1 when the runs are missing or the concurrency gate
fails: with --gate ratio (the default) 4 sessions of the delayed device
below MIN_RATIO x the G_FMT throughput of 1 session; with --gate in-flight
the device never held MIN_IN_FLIGHT delayed responses at once (a test of
the driver that does not depend on the CPU the host can spare). With
--max-eventq-notify X it also fails when the direct device got more than X
eventq notifications per event it sent (each notification is a trap out
of the guest)."""

import argparse
import gzip
import json
import os
import re
import statistics
import sys

MIN_RATIO = 3.0
# The decoding paths of tools/bench/codec.sh, in the order they are shown.
CODEC_PATHS = ["driver", "guest-software", "device-alone"]
CODEC_PATH_NAMES = {
    "driver": "FFmpeg h264_v4l2m2m through the driver",
    "guest-software": "FFmpeg h264 in software, in the guest",
    "device-alone": "host libavcodec alone (the device's floor)",
}
MIN_IN_FLIGHT = 4


def load_runs(path):
    runs = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
    return runs


def spread(values, unit):
    """Median of the runs and its spread, with the unit."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
        "unit": unit,
    }


def group(runs, test, keys):
    out = {}
    for r in runs:
        if r.get("test") == test:
            out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def parse_perf(path, limit=25):
    """Rows (percent, dso, symbol) of a perf report --stdio --sort dso,sym
    (with --children also children_percent)."""
    rows = []
    if not os.path.exists(path):
        return rows
    pat = re.compile(r"^\s+([0-9.]+)%\s+(?:([0-9.]+)%\s+)?(\S+)\s+\[[.kKuH]\]\s+(.*\S)\s*$")
    with open(path, errors="replace") as f:
        for line in f:
            m = pat.match(line)
            if not m:
                continue
            row = {"dso": m.group(3), "symbol": m.group(4)}
            if m.group(2):  # --children: total, then self
                row["children_percent"] = float(m.group(1))
                row["percent"] = float(m.group(2))
            else:
                row["percent"] = float(m.group(1))
            rows.append(row)
    return rows[:limit] if limit else rows


def irq_enable_sites(path):
    """From perf script -F ip,sym,symoff output: the samples that landed on
    an interrupt re-enable, by the call site (symbol+offset) that released
    the lock. A cpu-clock sample whose timer fired while interrupts were
    off is taken when they come back on, so these samples are time spent
    inside that call site's interrupts-off section."""
    if not os.path.exists(path):
        return None
    total = 0
    sites = {}
    frames = []

    def flush():
        nonlocal total
        if not frames:
            return
        total += 1
        if "irq_enable" in frames[0] or "irqrestore" in frames[0]:
            for f in frames[1:]:
                if "spin_unlock" not in f and "irq_enable" not in f:
                    sites[f] = sites.get(f, 0) + 1
                    break
        frames.clear()

    with gzip.open(path, "rt", errors="replace") as f:
        for line in f:
            parts = line.split()
            if not parts:
                flush()
                continue
            if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]+", parts[0]):
                frames.append(parts[1])
    flush()
    top = sorted(sites.items(), key=lambda kv: -kv[1])[:10]
    return {"samples": total,
            "sites": [{"site": k, "samples": v, "percent": round(100 * v / total, 2)} for k, v in top]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the guest run's results folder")
    ap.add_argument("--out", required=True, help="where bench.json, bench.png, bench.txt go")
    ap.add_argument("--meta", default="{}", help="JSON object merged into meta")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--gate", choices=["ratio", "in-flight"], default="ratio")
    ap.add_argument("--max-eventq-notify", type=float, default=None,
                    help="fail above this many eventq notifications per event (direct device)")
    a = ap.parse_args()

    runs = load_runs(os.path.join(a.dir, "bench.jsonl"))
    if not runs:
        sys.exit("no runs in bench.jsonl")
    # Decoding (tools/bench/codec.sh), when it ran.
    codec_path = os.path.join(a.dir, "codec.jsonl")
    if os.path.exists(codec_path):
        runs += load_runs(codec_path)
    meta = json.loads(a.meta)
    res = {"meta": meta}

    # Forwarded and local ioctls.
    ioctl = []
    for (dev, op, mode, n), rs in sorted(group(runs, "ioctl", ["device", "op", "mode", "sessions"]).items()):
        ioctl.append({
            "device": dev, "op": op, "mode": mode, "sessions": n,
            "ops_per_s": spread([r["ops_per_s"] for r in rs], "ops/s"),
            "lat_p50": spread([r["lat_p50_us"] for r in rs], "us"),
            "lat_p99": spread([r["lat_p99_us"] for r in rs], "us"),
            "lat_mean": spread([r["lat_mean_us"] for r in rs], "us"),
        })
        # CPU per call: the calling threads' own clocks (system calls
        # included) and the whole guest's /proc/stat.
        for key, name in (("process_cpu_us_per_op", "process_cpu_per_op"),
                          ("guest_cpu_us_per_op", "guest_cpu_per_op")):
            if all(key in r for r in rs):
                ioctl[-1][name] = spread([r[key] for r in rs], "us")
    res["ioctl"] = ioctl

    def find(dev, op, mode, n):
        for e in ioctl:
            if (e["device"], e["op"], e["mode"], e["sessions"]) == (dev, op, mode, n):
                return e
        return None

    # The device's own time per command, and the driver's share.
    floors = {}
    for dev in ("direct", "delayed"):
        p = os.path.join(a.dir, f"device-{dev}.json")
        if os.path.exists(p):
            with open(p) as f:
                floors[dev] = json.load(f)
    res["device_stats"] = floors
    # The driver's notifications per event the device sent.
    notify = {"devices": {}}
    for dev, st in floors.items():
        events = st.get("events_sent", 0)
        if events:
            eventq = st.get("notifications", {}).get("eventq", 0)
            notify["devices"][dev] = {
                "eventq_notifications": eventq, "events": events,
                "per_event": {"value": round(eventq / events, 3), "unit": "notifications/event"}}
    res["eventq_notifications"] = notify
    notify_ok = True
    if a.max_eventq_notify is not None:
        direct = notify["devices"].get("direct")
        notify_ok = bool(direct) and direct["per_event"]["value"] <= a.max_eventq_notify
        notify["max_per_event"] = a.max_eventq_notify
        notify["pass"] = notify_ok
    floor = {}
    direct_cmds = floors.get("direct", {}).get("commands", {})
    for op in ("G_FMT", "G_EXT_CTRLS", "QUERYCAP"):
        dev_cmd = direct_cmds.get(f"IOCTL VIDIOC_{op}")
        guest = find("direct", op, "threads", 1)
        entry = {"device_commands": dev_cmd["count"] if dev_cmd else 0}
        if dev_cmd:
            entry["device_p50"] = {"value": round(dev_cmd["p50"] / 1000, 3), "unit": "us"}
            entry["device_p99"] = {"value": round(dev_cmd["p99"] / 1000, 3), "unit": "us"}
        if guest:
            entry["guest_p50"] = {"value": guest["lat_p50"]["median"], "unit": "us"}
        if dev_cmd and guest and dev_cmd["p50"] > 0:
            entry["guest_to_device_p50_ratio"] = {
                "value": round(guest["lat_p50"]["median"] * 1000 / dev_cmd["p50"], 1), "unit": "x"}
        if op == "QUERYCAP" and guest:
            entry["answered_in_guest"] = dev_cmd is None
        floor[op] = entry
    res["device_floor"] = floor

    # Concurrency: the delayed device, 4 sessions against 1.
    conc = {"min_ratio": MIN_RATIO, "delay_ms": meta.get("delay_ms")}
    ok = True
    for mode in ("threads", "procs"):
        one, four = find("delayed", "G_FMT", mode, 1), find("delayed", "G_FMT", mode, 4)
        if not one or not four:
            continue
        ratio = four["ops_per_s"]["median"] / one["ops_per_s"]["median"]
        conc[mode] = {"ops_per_s_1": one["ops_per_s"]["median"], "ops_per_s_4": four["ops_per_s"]["median"],
                      "ratio_4_to_1": {"value": round(ratio, 2), "unit": "x"}, "pass": ratio >= MIN_RATIO}
        ok = ok and ratio >= MIN_RATIO
    if "threads" not in conc and "procs" not in conc:
        ok = False
    conc["pass"] = ok
    # Evidence that does not depend on spare CPU: a driver that sent one
    # command at a time could not pass 1/delay commands per second, and the
    # device counts how many delayed responses it held at once.
    try:
        delay_ms = float(meta.get("delay_ms"))
    except (TypeError, ValueError):
        delay_ms = 0
    if delay_ms > 0:
        best = max((e for e in ioctl if e["device"] == "delayed"), key=lambda e: e["ops_per_s"]["median"],
                   default=None)
        if best:
            conc["serial_bound_ops_per_s"] = {"value": round(1000 / delay_ms, 1), "unit": "ops/s"}
            conc["best"] = {"mode": best["mode"], "sessions": best["sessions"],
                            "ops_per_s": best["ops_per_s"]["median"], "unit": "ops/s"}
    inf = floors.get("delayed", {}).get("delayed_in_flight")
    if inf:
        conc["device_in_flight"] = inf
    conc["in_flight_pass"] = bool(inf) and inf["max"] >= MIN_IN_FLIGHT
    gate_ok = ok if a.gate == "ratio" else conc["in_flight_pass"]
    res["concurrency"] = conc

    # Open/close and mmap/munmap.
    oc = [r for r in runs if r.get("test") == "openclose"]
    if oc:
        res["open_close"] = {k: spread([r[f"{k}_p50_us"] for r in oc], "us")
                             for k in ("open", "close")}
    mm = [r for r in runs if r.get("test") == "mmap"]
    if mm:
        res["mmap"] = {k: spread([r[f"{k}_p50_us"] for r in mm], "us") for k in ("mmap", "munmap")}
        res["mmap"]["bytes"] = {"value": mm[0]["bytes"], "unit": "bytes"}

    # Streaming.
    stream = []
    for (mem, w, h), rs in sorted(group(runs, "stream", ["memory", "width", "height"]).items()):
        e = {"memory": mem, "width": w, "height": h}
        sup = [r for r in rs if r.get("supported")]
        if sup:
            e["supported"] = True
            e["fps"] = spread([r["fps"] for r in sup], "frames/s")
            e["process_cpu_per_frame"] = spread([r["process_cpu_us_per_frame"] for r in sup], "us")
            e["guest_cpu_per_frame"] = spread([r["guest_cpu_us_per_frame"] for r in sup], "us")
            e["frame_bytes"] = {"value": sup[0]["frame_bytes"], "unit": "bytes"}
        else:
            e["supported"] = False
            e["errno"] = rs[0].get("errno")
            e["error"] = rs[0].get("error")
        stream.append(e)
    res["stream"] = stream

    # Decoding: through the driver, in software in the guest, and the
    # device's library alone on the host (the floor).
    codec = []
    for (w, h, path), rs in sorted(group(runs, "codec", ["width", "height", "path"]).items(),
                                   key=lambda kv: (kv[0][0] * kv[0][1], CODEC_PATHS.index(kv[0][2])
                                                   if kv[0][2] in CODEC_PATHS else 99)):
        e = {"stream": rs[0]["stream"], "width": w, "height": h, "path": path,
             "frames": rs[0]["frames"], "fps": spread([r["fps"] for r in rs], "frames/s")}
        if "guest_cpu_us_per_frame" in rs[0]:
            e["guest_cpu_per_frame"] = spread([r["guest_cpu_us_per_frame"] for r in rs], "us")
        if "host_cpu_us_per_frame" in rs[0]:
            e["host_cpu_per_frame"] = spread([r["host_cpu_us_per_frame"] for r in rs], "us")
            e["threads"] = rs[0].get("threads")
        codec.append(e)
    res["codec"] = codec

    # perf, when the guest ran it.
    prof = {}
    self_rows = parse_perf(os.path.join(a.dir, "perf-self.txt"), limit=0)
    if self_rows:
        prof["event"] = "cpu-clock, whole guest (-a), during G_FMT from one session on the direct device"
        prof["top_self"] = self_rows[:20]
        prof["driver_self"] = [r for r in self_rows if "virtio_media" in r["dso"]][:15]
        prof["driver_self_total"] = {"value": round(sum(r["percent"] for r in self_rows
                                                       if "virtio_media" in r["dso"]), 2), "unit": "%"}
        prof["unit"] = "% of samples"
        sites = irq_enable_sites(os.path.join(a.dir, "perf-script.txt.gz"))
        if sites:
            prof["interrupts_off_sections"] = sites
    res["profile"] = prof

    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")

    table = summary(res)
    with open(os.path.join(a.out, "bench.txt"), "w") as f:
        f.write(table)
    print(table, end="")
    if not a.no_chart:
        chart(res, os.path.join(a.out, "bench.png"))
    return 0 if gate_ok and notify_ok else 1


def fmt(s):
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def summary(res):
    m = res["meta"]
    out = []
    out.append(f"virtio-media benchmark: {m.get('note', '')}")
    out.append(f"median of {m.get('runs', '?')} runs (min-max); host load {m.get('host_load_before', '?')}"
               f" before, {m.get('host_load_after', '?')} after")
    out.append("")
    out.append(f"{'device':8} {'ioctl':12} {'mode':7} {'sess':>4} {'ops/s':>26} {'p50 us':>26} {'p99 us':>26}"
               f" {'CPU us/op':>10} {'guest CPU':>10}")
    for e in res["ioctl"]:
        cpu = f"{e['process_cpu_per_op']['median']:.1f}" if "process_cpu_per_op" in e else "-"
        guest = f"{e['guest_cpu_per_op']['median']:.1f}" if "guest_cpu_per_op" in e else "-"
        out.append(f"{e['device']:8} {e['op']:12} {e['mode']:7} {e['sessions']:>4} {fmt(e['ops_per_s']):>26}"
                   f" {fmt(e['lat_p50']):>26} {fmt(e['lat_p99']):>26} {cpu:>10} {guest:>10}")
    out.append("")
    out.append("device floor (device's own time per command, direct device) against the guest round trip:")
    for op, e in res["device_floor"].items():
        if "device_p50" not in e and "guest_p50" not in e:
            out.append(f"  {op:12} not measured")
        elif "device_p50" in e:
            out.append(f"  {op:12} device p50 {e['device_p50']['value']:.1f} us, guest p50 "
                       f"{e.get('guest_p50', {}).get('value', float('nan')):.1f} us, ratio "
                       f"{e.get('guest_to_device_p50_ratio', {}).get('value', float('nan'))}x"
                       f" ({e['device_commands']} commands)")
        else:
            out.append(f"  {op:12} never reached the device (answered in the guest); guest p50 "
                       f"{e.get('guest_p50', {}).get('value', float('nan')):.1f} us")
    c = res["concurrency"]
    out.append("")
    out.append(f"concurrency, delayed device ({c.get('delay_ms')} ms per command), G_FMT ops/s 4 sessions / 1:")
    for mode in ("threads", "procs"):
        if mode in c:
            out.append(f"  {mode:7} {c[mode]['ops_per_s_4']:.1f} / {c[mode]['ops_per_s_1']:.1f} = "
                       f"{c[mode]['ratio_4_to_1']['value']}x  {'OK' if c[mode]['pass'] else 'FAIL'}"
                       f" (needs >= {c['min_ratio']}x)")
    if "serial_bound_ops_per_s" in c:
        out.append(f"  one command at a time would cap at {c['serial_bound_ops_per_s']['value']} ops/s; best:"
                   f" {c['best']['ops_per_s']} ops/s ({c['best']['sessions']} {c['best']['mode']})")
    if "device_in_flight" in c:
        d = c["device_in_flight"]
        out.append(f"  delayed responses the device held at once: max {d['max']}; depth at enqueue: "
                   + ", ".join(f"{k}: {v}" for k, v in d["at_enqueue"].items()))
    for dev, e in res.get("eventq_notifications", {}).get("devices", {}).items():
        out.append(f"  eventq notifications, {dev} device: {e['eventq_notifications']} for {e['events']}"
                   f" events ({e['per_event']['value']} per event)")
    if "open_close" in res:
        oc = res["open_close"]
        out.append("")
        out.append(f"open p50 {fmt(oc['open'])} us, close p50 {fmt(oc['close'])} us")
    if "mmap" in res:
        mm = res["mmap"]
        out.append(f"mmap p50 {fmt(mm['mmap'])} us, munmap p50 {fmt(mm['munmap'])} us"
                   f" ({mm['bytes']['value']} bytes)")
    if res["stream"]:
        out.append("")
        out.append(f"{'stream':8} {'size':>10} {'fps':>24} {'guest CPU us/frame':>26} {'process CPU us/frame':>26}")
        for e in res["stream"]:
            size = f"{e['width']}x{e['height']}"
            if e["supported"]:
                out.append(f"{e['memory']:8} {size:>10} {fmt(e['fps']):>24} {fmt(e['guest_cpu_per_frame']):>26}"
                           f" {fmt(e['process_cpu_per_frame']):>26}")
            else:
                out.append(f"{e['memory']:8} {size:>10} unsupported: {e['error']}")
    if res.get("codec"):
        out.append("")
        out.append("H.264 decoding, whole stream:")
        out.append(f"{'size':>10} {'path':44} {'fps':>24} {'guest CPU us/frame':>26} {'host CPU us/frame':>26}")
        for e in res["codec"]:
            size = f"{e['width']}x{e['height']}"
            guest = fmt(e["guest_cpu_per_frame"]) if "guest_cpu_per_frame" in e else "-"
            host = fmt(e["host_cpu_per_frame"]) if "host_cpu_per_frame" in e else "-"
            out.append(f"{size:>10} {CODEC_PATH_NAMES.get(e['path'], e['path']):44} {fmt(e['fps']):>24}"
                       f" {guest:>26} {host:>26}")
    p = res.get("profile")
    if p:
        out.append("")
        out.append(f"perf ({p['event']}): driver module self time {p['driver_self_total']['value']}% of samples;"
                   " top symbols:")
        for r in p["top_self"][:12]:
            out.append(f"  {r['percent']:6.2f}%  {r['dso']:18} {r['symbol']}")
        s = p.get("interrupts_off_sections")
        if s:
            out.append(f"samples taken at an interrupt re-enable, by the call site that re-enabled"
                       f" ({s['samples']} samples in all):")
            for e in s["sites"][:5]:
                out.append(f"  {e['percent']:6.2f}%  {e['site']}")
    return "\n".join(out) + "\n"


def chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.2))
    series = {}
    for e in res["ioctl"]:
        if e["op"] == "QUERYCAP":
            continue
        series.setdefault((e["device"], e["op"], e["mode"]), []).append(e)
    for (dev, op, mode), es in sorted(series.items()):
        es.sort(key=lambda e: e["sessions"])
        x = [e["sessions"] for e in es]
        label = f"{op} {mode} ({dev})"
        style = "-" if mode == "threads" else "--"
        line, = ax1.plot(x, [e["lat_p50"]["median"] for e in es], style, marker="o", label=label + " p50")
        ax1.plot(x, [e["lat_p99"]["median"] for e in es], ":", marker="x", color=line.get_color(),
                 label=label + " p99")
        ax2.errorbar(x, [e["ops_per_s"]["median"] for e in es],
                     yerr=[[e["ops_per_s"]["median"] - e["ops_per_s"]["min"] for e in es],
                           [e["ops_per_s"]["max"] - e["ops_per_s"]["median"] for e in es]],
                     fmt=style, marker="o", capsize=3, label=label)
    for ax, title, ylabel in ((ax1, "ioctl latency against sessions", "latency (us, log)"),
                              (ax2, "ioctl throughput against sessions", "operations/s (log)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 4, 8])
        ax.set_xticklabels(["1", "2", "4", "8"])
        ax.set_xlabel("sessions")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=6)
    ax2.legend(fontsize=7)
    labels, vals, errs = [], [], [[], []]
    for e in res["stream"]:
        labels.append(f"{e['memory']}\n{e['width']}x{e['height']}")
        if e["supported"]:
            f = e["fps"]
            vals.append(f["median"])
            errs[0].append(f["median"] - f["min"])
            errs[1].append(f["max"] - f["median"])
        else:
            vals.append(0)
            errs[0].append(0)
            errs[1].append(0)
    xs = range(len(labels))
    ax3.bar(xs, vals, yerr=errs, capsize=4, color="tab:blue")
    for i, e in enumerate(res["stream"]):
        if not e["supported"]:
            ax3.text(i, 0, "unsupported", rotation=90, ha="center", va="bottom", fontsize=9)
        else:
            ax3.text(i, vals[i], f"{vals[i]:.0f}", ha="center", va="bottom", fontsize=9)
    ax3.set_xticks(list(xs))
    ax3.set_xticklabels(labels)
    ax3.set_ylabel("frames/s")
    ax3.set_title("streaming, YUYV, 4 buffers")
    ax3.grid(True, axis="y", alpha=0.3)
    m = res["meta"]
    fig.suptitle(f"virtio-media, {m.get('note', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
