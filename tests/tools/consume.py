#!/usr/bin/env python3
"""Consume a topic from the beginning with librdkafka (PyPI confluent-kafka) and print
each record's value on a line. An independent client for logcatch's Kafka tests.

usage: consume.py [--json] BROKER TOPIC COUNT TIMEOUT_S
--json prints each record as a JSON object {"key": ..., "value": ..., "headers": {name: value}}
(UTF-8, invalid bytes replaced) instead of its bare value.
Exits 0 once COUNT records were read, 1 on timeout (after printing what it read).
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException

args = sys.argv[1:]
as_json = "--json" in args
args = [a for a in args if a != "--json"]
broker, topic, want, timeout = args[0], args[1], int(args[2]), float(args[3])
consumer = Consumer({
    "bootstrap.servers": broker,
    "group.id": "logcatch-test-" + uuid.uuid4().hex,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "queued.min.messages": 1000000,
    "fetch.queue.backoff.ms": 1,
})
consumer.subscribe([topic])
got = 0
deadline = time.time() + timeout
out = sys.stdout.buffer
while got < want and time.time() < deadline:
    msg = consumer.poll(0.5)
    if msg is None:
        continue
    if msg.error():
        raise KafkaException(msg.error())
    if as_json:
        text = lambda b: (b or b"").decode("utf-8", "replace")
        record = {
            "key": None if msg.key() is None else text(msg.key()),
            "value": text(msg.value()),
            "headers": {name: text(value) for name, value in (msg.headers() or [])},
        }
        out.write(json.dumps(record).encode() + b"\n")
    else:
        out.write(msg.value() + b"\n")
    got += 1
consumer.close()
out.flush()
sys.exit(0 if got >= want else 1)
