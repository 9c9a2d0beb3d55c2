//! The harness's own servers work: real etcd and a real Kafka-protocol broker start on
//! free ports and answer (the etcd source and Kafka sink tests build on these).

mod common;

use common::servers::{Broker, Etcd};

#[test]
fn etcd_starts_on_a_free_port_and_stores_values() {
    let etcd = Etcd::start();
    etcd.etcdctl(&[
        "put",
        "/logcatch/test",
        r#"[{"path": "/var/log/a.log", "topic": "a"}]"#,
    ])
    .unwrap();
    let value = etcd
        .etcdctl(&["get", "/logcatch/test", "--print-value-only"])
        .unwrap();
    assert_eq!(
        value.trim(),
        r#"[{"path": "/var/log/a.log", "topic": "a"}]"#
    );
}

#[test]
fn tansu_starts_on_a_free_port_and_creates_topics() {
    let broker = Broker::start_memory();
    broker.create_topic("harness-check", 3).unwrap();
    let again = broker.create_topic("harness-check", 3);
    assert!(again.is_err(), "creating the same topic twice must fail");
}
