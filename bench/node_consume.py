#!/usr/bin/env python3
"""The reader of bench/node.sh: what reached Kafka, when, and how late.

usage: node_consume.py BROKER TOPIC N PREFIX

Reads every partition of TOPIC from its beginning with librdkafka (PyPI confluent-kafka,
assigned partitions, no group) and notes for each record the time it was consumed and
the `<write time> <file> <seq>` at the start of its value (bench/node_writer.py).
Writes PREFIX.allseen (the consume time at which every one of the N files had a record
in the topic) once that happens. Once PREFIX.params exists — JSON {"launch": t,
"w0": t, "w1": t, "counts": path of the writer's counts} — it reads until every line
the writer wrote is in (or nothing came for 15 s), then prints one line:
  startup_s=<launch → every file in the topic> window_lines=<records consumed in [w0, w1]>
  p50_ms= p99_ms= max_ms=<consume − write time of the lines written in [w0, w1]>
  written= delivered=<distinct lines> duplicates= foreign=<values not of the writer>
"""
import json
import os
import sys
import time
import uuid
from array import array

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

broker, topic, n, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
consumer = Consumer({
    "bootstrap.servers": broker,
    "group.id": "node-" + uuid.uuid4().hex,
    "enable.auto.commit": False,
    "fetch.wait.max.ms": 10,
    "fetch.error.backoff.ms": 10,
    "queued.min.messages": 100000,
})
md = consumer.list_topics(topic, timeout=30)
if topic not in md.topics or not md.topics[topic].partitions:
    sys.exit(f"node_consume: no topic {topic} on {broker}")
consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])

written_at = array("d")
consumed_at = array("d")
seen_file = bytearray(n)
files_seen = 0
lines = set()
duplicates = foreign = 0
params = None
last_record = time.time()
want = None
while True:
    # poll returns as soon as a record is there (consume(n, timeout) would wait for n or
    # the timeout); consume(n, 0) then takes what else is already fetched.
    first = consumer.poll(0.05)
    batch = [first] + consumer.consume(num_messages=10000, timeout=0) if first is not None else []
    now = time.time()
    for msg in batch:
        if msg.error():
            sys.exit(f"node_consume: {msg.error()}")
        parts = msg.value().split(b" ", 3)
        try:
            t, f, s = float(parts[0]), int(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            foreign += 1
            continue
        if not 0 <= f < n:
            foreign += 1
            continue
        key = f * 1_000_000_000 + s
        if key in lines:
            duplicates += 1
            continue
        lines.add(key)
        written_at.append(t)
        consumed_at.append(now)
        if not seen_file[f]:
            seen_file[f] = 1
            files_seen += 1
            if files_seen == n:
                with open(prefix + ".allseen", "w") as out:
                    out.write(f"{now:.6f}\n")
    if batch:
        last_record = now
    if params is None and os.path.exists(prefix + ".params"):
        params = json.load(open(prefix + ".params"))
    if params is not None:
        if want is None and os.path.exists(params["counts"]):
            want = json.load(open(params["counts"]))["written"]
        if want is not None and len(lines) >= want:
            break
        if now - last_record > 15:
            print(f"node_consume: nothing for 15 s with {len(lines)} of {want} lines in", file=sys.stderr)
            break
consumer.close()

w0, w1, launch = params["w0"], params["w1"], params["launch"]
allseen = float(open(prefix + ".allseen").read()) if os.path.exists(prefix + ".allseen") else float("nan")
in_window = sum(1 for c in consumed_at if w0 <= c <= w1)
lat = sorted((c - t) * 1000 for t, c in zip(written_at, consumed_at) if w0 <= t <= w1)


def pct(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")


print(f"startup_s={allseen - launch:.2f} window_lines={in_window} p50_ms={pct(0.5):.1f} "
      f"p99_ms={pct(0.99):.1f} max_ms={lat[-1] if lat else float('nan'):.1f} written={want} "
      f"delivered={len(lines)} duplicates={duplicates} foreign={foreign} files_seen={files_seen}")
