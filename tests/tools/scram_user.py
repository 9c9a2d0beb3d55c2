#!/usr/bin/env python3
"""Create a SCRAM-SHA-256 user and topics on a Kafka broker with librdkafka's admin
client (PyPI confluent-kafka), for logcatch's SASL test. The broker must not require
authentication yet (tansu lets a user be created only by an authenticated client, and
offers no PLAIN, so users are made before `--authentication` is turned on).

usage: scram_user.py BROKER USER PASSWORD [TOPIC...]
"""
import sys

from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialUpsertion)

broker, user, password, topics = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
admin = AdminClient({"bootstrap.servers": broker})
info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
upsert = UserScramCredentialUpsertion(user, info, password.encode())
for future in admin.alter_user_scram_credentials([upsert]).values():
    future.result(30)
if topics:
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(30)
