#!/usr/bin/env python3
"""A simulated kubelet + container runtime for bench/soak.sh (issue #23).

usage: soak_kubelet.py ROOT DURATION_S MANIFEST_JSON

Under ROOT it keeps a node's log layout:
  var/log/pods/<ns>_<pod>_<uid>/<container>/0.log           (CRI lines)
  var/log/containers/<pod>_<ns>_<container>-<id>.log         (symlink to that 0.log)
PODS pods are alive at a time; every second one pod is created and one (chosen at
random) stops writing, and its pod directory and symlinks are removed GC_MIN_S..GC_MAX_S
later, as container garbage collection does. One more pod, "chatty", lives the whole
run and writes CHATTY_RATE lines/s, rotated at CHATTY_ROTATE_BYTES (several rotations a
second). Rotation is the kubelet's: older uncompressed rotated files are gzipped
(`<name>.gz`, through `<name>.tmp`), the oldest removed so that at most MAX_FILES files
(0.log included) are kept, then `0.log` is renamed to `0.log.<YYYYmmdd-HHMMSS>` (a
`-<n>` suffix when that second is taken) and a new `0.log` is opened.

Each line carries a unique id, `soak <ns>/<pod>/<container> <seq> <len> <padding>`:
the message is exactly <len> bytes, a function of container and seq
(bench/soak_lines.py) so that the accountant knows the on-disk bytes of a line it never
received. About one line in LONG_EVERY is 20–50 KB and written as 16 KiB `P` fragments
followed by an `F` (the runtime's split). A tenth go to stderr.
Rates: 90 % of containers log-uniform in 1–100 lines/s, 10 % in 100–2,000 (the mean is
about 80 lines/s per container, so 300 pods stay within what one Python process and a
memory-backed broker can take for 30 minutes). SEED makes the run repeatable.

The manifest (written at the end, and every 10 s so a crash leaves one) lists, per
container, the lines written and every file segment: [first_seq, end_seq, fate,
t_closed, t_deleted, bytes] (seconds since the start: rotated away or stopped; gzipped or
removed; the file's size), fate
being "live" (its 0.log when the run ended, on disk), "rotated" (renamed by rotation,
still on disk uncompressed at the end), "deleted" (removed by rotation beyond MAX_FILES,
or gzipped and its original unlinked — compression counts as deleted for the agent,
which skips compressed files) and "gc" (0.log or the newest rotated file of a stopped
pod, removed with its pod directory GC_MIN_S..GC_MAX_S after the pod's last line).
"""
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import uuid

from soak_lines import FRAGMENT, message_length

root, duration, manifest_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
env = os.environ.get
PODS = int(env("PODS", "300"))
CHURN_S = float(env("CHURN_S", "1"))
ROTATE_BYTES = int(env("ROTATE_BYTES", str(10 << 20)))
CHATTY_RATE = float(env("CHATTY_RATE", "4000"))
CHATTY_ROTATE_BYTES = int(env("CHATTY_ROTATE_BYTES", str(128 << 10)))
MAX_FILES = int(env("MAX_FILES", "5"))
GC_MIN_S, GC_MAX_S = float(env("GC_MIN_S", "5")), float(env("GC_MAX_S", "10"))
LONG_EVERY = int(env("LONG_EVERY", "1000"))
TICK = 0.1
rng = random.Random(int(env("SEED", "23")))
pods_dir = os.path.join(root, "var/log/pods")
links_dir = os.path.join(root, "var/log/containers")
os.makedirs(pods_dir, exist_ok=True)
os.makedirs(links_dir, exist_ok=True)


def log_uniform(lo, hi):
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def cri_time():
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


class Container:
    def __init__(self, pod, name, rate, rotate_bytes):
        self.pod, self.name, self.rate, self.rotate_bytes = pod, name, rate, rotate_bytes
        self.key = f"{pod.ns}/{pod.name}/{name}"
        self.dir = os.path.join(pod.dir, name)
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "0.log")
        cid = hashlib.sha256(self.key.encode()).hexdigest()
        self.link = os.path.join(links_dir, f"{pod.name}_{pod.ns}_{name}-{cid}.log")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.symlink(self.path, self.link)
        self.size = 0
        self.seq = 0
        self.owed = rng.random()
        self.segment_start = 0
        self.segments = []  # [first, end, fate, t_closed, t_deleted, bytes]
        self.started = round(time.time() - START, 2)
        self.rotated = []  # [(name, segment index)], oldest first
        self.rotations = 0

    def line(self, now_s):
        seq = self.seq
        self.seq += 1
        stream = "stderr" if seq % 10 == 7 else "stdout"
        head = f"soak {self.key} {seq} "
        total = message_length(self.key, seq, LONG_EVERY)
        # The message is exactly `total` bytes: head, its length, padding.
        body = head + f"{total} "
        msg = body + ("abcdefghijklmnopqrstuvwxyz0123456789" * (total // 36 + 2))[: total - len(body)]
        ts = cri_time()
        if len(msg) <= FRAGMENT:
            return f"{ts} {stream} F {msg}\n"
        parts = [msg[i:i + FRAGMENT] for i in range(0, len(msg), FRAGMENT)]
        return "".join(f"{ts} {stream} {'P' if i < len(parts) - 1 else 'F'} {p}\n" for i, p in enumerate(parts))

    def write(self, dt, now_s):
        self.owed += self.rate * dt
        n = int(self.owed)
        self.owed -= n
        while n > 0:
            chunk = []
            size = self.size
            # Lines up to the rotation size, then rotate (between whole lines, as the
            # runtime's reopen happens between writes).
            while n > 0 and size < self.rotate_bytes:
                line = self.line(now_s).encode()
                chunk.append(line)
                size += len(line)
                n -= 1
            data = b"".join(chunk)
            os.write(self.fd, data)
            self.size = size
            if self.size >= self.rotate_bytes:
                self.rotate()

    def rotate(self):
        index = len(self.segments)
        self.segments.append([self.segment_start, self.seq, "rotated", round(time.time() - START, 2), None, self.size])
        self.segment_start = self.seq
        # Compress the uncompressed rotated files (kubelet: all but the one renamed now).
        for i, (name, seg) in enumerate(self.rotated):
            if name.endswith(".gz"):
                continue
            src = os.path.join(self.dir, name)
            with open(src, "rb") as f_in, gzip.open(src + ".tmp", "wb", compresslevel=1) as f_out:
                shutil.copyfileobj(f_in, f_out)
            os.rename(src + ".tmp", src + ".gz")
            os.unlink(src)
            self.segments[seg][2] = "deleted"
            self.segments[seg][4] = round(time.time() - START, 2)
            self.rotated[i] = (name + ".gz", seg)
        # Keep MAX_FILES - 1 rotated files beside the new 0.log.
        while len(self.rotated) >= MAX_FILES - 1:
            name, seg = self.rotated.pop(0)
            os.unlink(os.path.join(self.dir, name))
            if self.segments[seg][2] != "deleted":
                self.segments[seg][2] = "deleted"
                self.segments[seg][4] = round(time.time() - START, 2)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name, n = f"0.log.{stamp}", 1
        while os.path.exists(os.path.join(self.dir, name)) or os.path.exists(os.path.join(self.dir, name + ".gz")):
            name, n = f"0.log.{stamp}-{n}", n + 1
        os.rename(self.path, os.path.join(self.dir, name))
        self.rotated.append((name, index))
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = 0
        self.rotations += 1

    def stop(self):
        self.segments.append([self.segment_start, self.seq, "live", round(time.time() - START, 2), None, self.size])
        os.close(self.fd)
        self.fd = None

    def summary(self):
        segs = list(self.segments)
        if self.fd is not None:
            segs.append([self.segment_start, self.seq, "live", None, None, self.size])
        return {"lines": self.seq, "rate": round(self.rate, 1), "rotations": self.rotations, "started": self.started, "segments": segs}


class Pod:
    counter = 0

    def __init__(self, chatty=False):
        idx = Pod.counter
        Pod.counter += 1
        self.ns = "soak-chatty" if chatty else f"ns{idx % 4}"
        self.name = "chatty" if chatty else f"p{idx:05d}-{rng.getrandbits(20):05x}"
        self.uid = str(uuid.UUID(int=rng.getrandbits(128)))
        self.dir = os.path.join(pods_dir, f"{self.ns}_{self.name}_{self.uid}")
        os.makedirs(self.dir)
        if chatty:
            self.containers = [Container(self, "chatty", CHATTY_RATE, CHATTY_ROTATE_BYTES)]
        else:
            names = ["app", "sidecar"] if idx % 3 == 0 else ["app"]
            self.containers = [
                Container(self, c, log_uniform(1, 100) if rng.random() < 0.9 else log_uniform(100, 2000), ROTATE_BYTES)
                for c in names
            ]

    def stop(self):
        for c in self.containers:
            c.stop()

    def remove(self):
        t = round(time.time() - START, 2)
        for c in self.containers:
            for seg in c.segments:
                if seg[2] != "deleted":
                    seg[2], seg[4] = "gc", t
            os.unlink(c.link)
        shutil.rmtree(self.dir)


done = []  # containers of stopped pods
stats = {"created": 0, "stopped": 0, "removed": 0}


def write_manifest(final):
    containers = {c.key: c.summary() for c in done}
    for p in alive:
        for c in p.containers:
            containers[c.key] = c.summary()
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"final": final, "stats": stats, "long_every": LONG_EVERY, "containers": containers}, f)
    os.rename(tmp, manifest_path)


START = time.time()
alive = [Pod(chatty=True)] + [Pod() for _ in range(PODS)]
stats["created"] = len(alive)
gc_queue = []  # (remove_at, pod)
start = time.time()
tick = 0
next_churn = start + CHURN_S
next_manifest = start + 10
last = start
while True:
    now = time.time()
    if now - start >= duration:
        break
    dt, last = now - last, now
    for p in alive:
        for c in p.containers:
            c.write(dt, now)
    if now >= next_churn:
        next_churn += CHURN_S
        victim = alive.pop(rng.randrange(1, len(alive)))  # never the chatty pod (index 0)
        victim.stop()
        done.extend(victim.containers)
        gc_queue.append((now + rng.uniform(GC_MIN_S, GC_MAX_S), victim))
        alive.append(Pod())
        stats["created"] += 1
        stats["stopped"] += 1
    for item in [g for g in gc_queue if g[0] <= now]:
        gc_queue.remove(item)
        item[1].remove()
        stats["removed"] += 1
    if now >= next_manifest:
        next_manifest += 10
        write_manifest(False)
    tick += 1
    time.sleep(max(0.0, start + tick * TICK - time.time()))

# The end of the run: every container stops; directories stay (the agent drains them).
for p in alive:
    p.stop()
    done.extend(p.containers)
alive = []
write_manifest(True)
lines = sum(c.seq for c in done)
print(f"kubelet: {stats['created']} pods created, {stats['stopped']} stopped, {stats['removed']} removed; "
      f"{len(done)} containers wrote {lines} lines", flush=True)
