#!/usr/bin/env python3
"""Per-container reconciliation for bench/soak.sh: the lost segments of each container
(LOST_JSON, written by soak_account.py: [key, first, end, fate, t_closed, t_deleted,
missing, bytes]) against what the agent logged for that container's tailer (AGENT_LOG):
"closed a deleted file the sink has not taken yet" (released at the deleted-file bounds,
with lost_bytes) and "... deleted before it was read" (skipped, lost_bytes = its last
size seen). The totals soak_account.py checks can hide a file lost uncounted in one
container behind a file counted twice in another; this cannot.

usage: soak_reconcile.py LOST_JSON AGENT_LOG

Prints, per kind of difference, how many containers and bytes, a few examples, and a
verdict: FAIL when a container lost more files than the agent counted for it (silent
loss), or lost bytes it did not count where it skipped nothing (a skipped file's size is
the last one seen, so only containers without skips are held to their bytes), or
counted as lost bytes that were delivered (a batch a tailer held while waiting for room
in flight is either shipped or counted when its file is released, never both).
"""
import collections
import json
import re
import sys

lost_path, log_path = sys.argv[1:3]
lost = json.load(open(lost_path))
lost_files = collections.Counter()
lost_bytes = collections.Counter()
for key, _first, _end, _fate, _closed, _deleted, _missing, nbytes in lost:
    lost_files[key] += 1
    lost_bytes[key] += nbytes

link = re.compile(r"tailer=\S*/containers/([^_\s]+)_([^_\s]+)_(\S+)-[0-9a-f]{64}\.log")
counted_files = collections.Counter()
counted_bytes = collections.Counter()
skips = collections.Counter()
for line in open(log_path, errors="replace"):
    released = "closed a deleted file the sink has not taken yet" in line
    skipped = "was deleted before it was read" in line
    if not (released or skipped):
        continue
    m = link.search(line)
    b = re.search(r"lost_bytes=(\d+)", line)
    if not m or not b:
        continue
    key = f"{m.group(2)}/{m.group(1)}/{m.group(3)}"
    if released and int(b.group(1)) == 0:
        continue  # released with nothing unshipped: no line lost
    counted_files[key] += 1
    counted_bytes[key] += int(b.group(1))
    skips[key] += skipped

silent_files, uncounted_bytes, overcounted = [], [], []
for key in set(lost_files) | set(counted_files):
    if lost_files[key] > counted_files[key]:
        silent_files.append((key, lost_files[key], counted_files[key], lost_bytes[key]))
    diff = counted_bytes[key] - lost_bytes[key]
    if diff < 0 and not skips[key]:
        uncounted_bytes.append((key, -diff))
    elif diff > 0:
        overcounted.append((key, diff))

print(f"per container: {len(silent_files)} lost more files than the agent counted "
      f"({sum(s[1] - s[2] for s in silent_files)} files, {sum(s[3] for s in silent_files):,} bytes of their lost lines); "
      f"{len(uncounted_bytes)} without skips lost {sum(b for _, b in uncounted_bytes):,} bytes more than counted; "
      f"{len(overcounted)} counted {sum(b for _, b in overcounted):,} bytes more than lost (delivered after all)")
for key, lf, cf, nb in sorted(silent_files, key=lambda s: -s[3])[:5]:
    print(f"  e.g. {key}: {lf} segments lost ({nb:,} bytes), {cf} files counted")
verdict = []
if silent_files:
    verdict.append(f"{len(silent_files)} containers lost files the agent did not count")
if uncounted_bytes:
    verdict.append(f"{len(uncounted_bytes)} containers lost bytes the agent did not count")
if overcounted:
    verdict.append(f"{len(overcounted)} containers had bytes counted lost that were delivered")
print("RECONCILE PASS" if not verdict else "RECONCILE FAIL: " + "; ".join(verdict))
