#!/usr/bin/env python3
"""The applications of a node: N log files, each appended RATE lines a second.

usage: node_writer.py DIR N RATE [--writes-per-s W] [--tick-ms T] [--format raw|cri]
                      [--counts PATH] [--ready PATH]

Creates DIR/f00000.log … (raw) or kubelet-style DIR/pod-00000_bench_app-<id>.log (cri)
and appends to every file RATE lines a second in W writes (default min(RATE, 10): one
line per write up to 10 a second, then RATE/W lines per write), the files staggered over
the second on a tick of T ms (default 100: every file written 10 times a second is
written at the same instant; 10 spreads them over ten instants, as a node's
applications write at times of their own). Every message starts `<unix time of the
write, µs> <file> <seq>` so a consumer can tell which line of which file it is and when
it was written; lines are 100 B (raw) or 100 B of message (cri). In CRI format, every
10th line of a file is a 300 B message written as `P`, `P`, `F` fragments (in one
write), the others as one `F` line.
Once every file has been written at least once (after the first second), it creates
the file PATH (--ready). On SIGTERM it writes {"written": lines, "per_file": [...]} to PATH (--counts) and exits.
"""
import argparse
import datetime
import json
import os
import signal
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("n", type=int)
ap.add_argument("rate", type=int)
ap.add_argument("--writes-per-s", type=int)
ap.add_argument("--tick-ms", type=int, default=100)
ap.add_argument("--format", choices=["raw", "cri"], default="raw")
ap.add_argument("--counts")
ap.add_argument("--ready")
a = ap.parse_args()
writes = a.writes_per_s or min(a.rate, 10)
if 10 % writes or a.rate % writes:
    sys.exit(f"node_writer: --writes-per-s {writes} must divide 10 and RATE {a.rate}")
if a.tick_ms <= 0 or 100 % a.tick_ms:
    sys.exit(f"node_writer: --tick-ms {a.tick_ms} must divide 100")
per_write = a.rate // writes
tick_s = a.tick_ms / 1000
stride = 10 // writes * (100 // a.tick_ms)  # a file is written on every stride-th tick

os.makedirs(a.dir, exist_ok=True)


def name(i):
    if a.format == "cri":
        return f"pod-{i:05d}_bench_app-{i:064x}.log"
    return f"f{i:05d}.log"


fds = [os.open(os.path.join(a.dir, name(i)), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for i in range(a.n)]
seq = [0] * a.n
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
PAD = "abcdefghijklmnopqrstuvwxyz0123456789" * 10


def raw_lines(i, now):
    out = []
    for _ in range(per_write):
        head = f"{now:.6f} {i:05d} {seq[i]:09d} "
        out.append(head + PAD[: 99 - len(head)] + "\n")
        seq[i] += 1
    return "".join(out)


def cri_lines(i, now):
    ts = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    out = []
    for _ in range(per_write):
        head = f"{now:.6f} {i:05d} {seq[i]:09d} "
        if seq[i] % 10 == 5:
            msg = head + (PAD * 2)[: 300 - len(head)]
            out.append(f"{ts} stdout P {msg[:100]}\n{ts} stdout P {msg[100:200]}\n{ts} stdout F {msg[200:]}\n")
        else:
            out.append(f"{ts} stdout F {head}{PAD[: 100 - len(head)]}\n")
        seq[i] += 1
    return "".join(out)


lines = cri_lines if a.format == "cri" else raw_lines
start, tick = time.time(), 0
while not stop:
    phase = tick % stride
    for i in range(phase, a.n, stride):
        os.write(fds[i], lines(i, time.time()).encode())
    tick += 1
    if tick == stride and a.ready:
        open(a.ready, "w").close()
    time.sleep(max(0.0, start + tick * tick_s - time.time()))
if a.counts:
    with open(a.counts + ".partial", "w") as f:
        json.dump({"written": sum(seq), "per_file": seq}, f)
    os.rename(a.counts + ".partial", a.counts)
