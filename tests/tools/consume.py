#!/usr/bin/env python3
"""Consume a topic from the beginning with librdkafka (PyPI confluent-kafka) and print
each record's value on a line. An independent client for logcatch's Kafka tests.

usage: consume.py BROKER TOPIC COUNT TIMEOUT_S
Exits 0 once COUNT records were read, 1 on timeout (after printing what it read).
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException

broker, topic, want, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
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
    out.write(msg.value() + b"\n")
    got += 1
consumer.close()
out.flush()
sys.exit(0 if got >= want else 1)
