#!/usr/bin/env python3
"""Samples the agent for bench/soak.sh every INTERVAL_S until STOP_FILE exists.

usage: soak_sample.py PID HTTP_PORT STATE_DIR CSV [INTERVAL_S] STOP_FILE EVENTS_FILE

One CSV row per sample:
  t_s          seconds since the sampler started
  rss_mb       VmRSS
  cpu_pct      utime + stime over the last interval, % of one core
  fds          entries of /proc/PID/fd
  ckpt_kb      size of STATE_DIR/checkpoints.json (blank when it was absent: the agent
               renames it away before renaming the new one in)
  ckpt_writes  logcatch_checkpoint_writes_total (all results): the agent exposes no
               write duration, so the write *rate* is what can be followed
  ckpt_entries logcatch_checkpoints
  deleted_mb   bytes of files the agent holds open that are deleted (fds whose link ends
               in " (deleted)", sized by fstat through /proc/PID/fd/N)
  deleted_n    how many such fds
  lag_mb       sum of logcatch_lag_bytes
  inflight_mb  logcatch_inflight_bytes
  tailers      logcatch_tailers{state="running"}
  phase        the last line of EVENTS_FILE ("start", "frozen", "resumed", ...)
  lazyfree_mb  LazyFree of /proc/PID/smaps_rollup: memory the allocator gave back with
               MADV_FREE, still counted in RSS until the kernel needs it (no memory
               pressure, no reclaim: RSS then stays at its high-water mark)
  anon_mb      Anonymous of /proc/PID/smaps_rollup (the heap, mostly)
  thp_mb       AnonHugePages of /proc/PID/smaps_rollup: anonymous memory in transparent
               huge pages (khugepaged fills a 2 MiB range the allocator left sparse)
"""
import os
import re
import sys
import time
import urllib.request

pid, port, state_dir, csv_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
interval, stop_file, events = float(sys.argv[5]), sys.argv[6], sys.argv[7]
hz = os.sysconf("SC_CLK_TCK")
RUNNING = 'state="running"'
sample_re = re.compile(r"^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$")


def metrics():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = sample_re.match(line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def total(ms, name, label=None):
    return sum(v for labels, v in ms.get(name, []) if label is None or label in labels)


def cpu_ticks():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def smaps_kb():
    """(LazyFree, Anonymous, AnonHugePages) in KiB."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("LazyFree", "Anonymous", "AnonHugePages"):
                found[key] = int(rest.split()[0])
    return found.get("LazyFree", 0), found.get("Anonymous", 0), found.get("AnonHugePages", 0)


def fds():
    n, deleted, deleted_n = 0, 0, 0
    d = f"/proc/{pid}/fd"
    for fd in os.listdir(d):
        n += 1
        try:
            target = os.readlink(f"{d}/{fd}")
            if target.endswith(" (deleted)"):
                deleted += os.stat(f"{d}/{fd}").st_size
                deleted_n += 1
        except OSError:
            pass
    return n, deleted, deleted_n


def phase():
    try:
        with open(events) as f:
            lines = f.read().split("\n")
        return [l for l in lines if l][-1].split(" ", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


start = time.time()
prev_t, prev_cpu = start, cpu_ticks()
with open(csv_path, "w") as out:
    out.write("t_s,rss_mb,cpu_pct,fds,ckpt_kb,ckpt_writes,ckpt_entries,deleted_mb,deleted_n,lag_mb,inflight_mb,tailers,phase,lazyfree_mb,anon_mb,thp_mb\n")
    while not os.path.exists(stop_file):
        time.sleep(max(0.0, interval - (time.time() - prev_t)))
        try:
            now, cpu = time.time(), cpu_ticks()
            n, deleted, deleted_n = fds()
            rss = rss_kb()
            lazyfree, anon, thp = smaps_kb()
        except OSError:
            break  # the agent is gone
        ms = metrics()
        # The agent renames checkpoints.json to checkpoints.prev.json before renaming
        # the new one in: the name is briefly absent. Look again; else leave it blank.
        ckpt = ""
        for _ in range(3):
            try:
                ckpt = os.stat(os.path.join(state_dir, "checkpoints.json")).st_size / 1024
                break
            except OSError:
                time.sleep(0.01)
        cpu_pct = 100.0 * (cpu - prev_cpu) / hz / (now - prev_t)
        prev_t, prev_cpu = now, cpu
        out.write(
            f"{now - start:.1f},{rss / 1024:.1f},{cpu_pct:.1f},{n},{ckpt if ckpt == '' else f'{ckpt:.1f}'},"
            f"{total(ms, 'logcatch_checkpoint_writes_total'):.0f},{total(ms, 'logcatch_checkpoints'):.0f},"
            f"{deleted / 2**20:.2f},{deleted_n},{total(ms, 'logcatch_lag_bytes') / 2**20:.2f},"
            f"{total(ms, 'logcatch_inflight_bytes') / 2**20:.2f},"
            f"{total(ms, 'logcatch_tailers', RUNNING):.0f},{phase()},{lazyfree / 1024:.1f},{anon / 1024:.1f},{thp / 1024:.1f}\n"
        )
        out.flush()
