//! The seed format of the Go system logcatch replaces (`collectlogs`, `etcdkeys`,
//! `etcdconfig`, `kafkaconfig`), rewritten into the current shape with a warning each.

use serde_yaml::{Mapping, Value};

/// What a legacy key becomes; `None` for keys whose feature this build lacks.
const LEGACY_KEYS: &[(&str, &str, bool)] = &[
    ("collectlogs", "logs: [{path, topic}]", true),
    ("etcdkeys", "etcd.keys", false),
    ("etcdconfig", "etcd.endpoints", false),
    (
        "kafkaconfig",
        "sink: {kind: kafka, kafka: {brokers}}",
        true,
    ),
];

/// Rewrites legacy keys in `root` in place. Returns one warning per rewritten key, or an
/// error `(field, message)` for a legacy key that cannot be honoured.
pub fn rewrite(root: &mut Mapping) -> Result<Vec<String>, (String, String)> {
    let mut warnings = Vec::new();
    for &(old, new, supported) in LEGACY_KEYS {
        let Some(value) = root.remove(old) else {
            continue;
        };
        if !supported {
            return Err((
                old.to_string(),
                format!(
                    "legacy key maps to `{new}`, which this build of logcatch does not support yet"
                ),
            ));
        }
        match old {
            "collectlogs" => {
                if root.contains_key("logs") {
                    return Err((
                        old.to_string(),
                        "give either `collectlogs` or `logs`, not both".into(),
                    ));
                }
                root.insert("logs".into(), collectlogs_to_logs(value)?);
            }
            _ => {
                if root.contains_key("sink") {
                    return Err((
                        old.to_string(),
                        "give either `kafkaconfig` or `sink`, not both".into(),
                    ));
                }
                root.insert("sink".into(), kafkaconfig_to_sink(value)?);
            }
        }
        warnings.push(format!(
            "legacy key `{old}` is deprecated: write `{new}` instead"
        ));
    }
    Ok(warnings)
}

fn collectlogs_to_logs(value: Value) -> Result<Value, (String, String)> {
    let Value::Sequence(entries) = value else {
        return Err((
            "collectlogs".into(),
            "expected a list of {logpath, logtopic}".into(),
        ));
    };
    let mut logs = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let field = format!("collectlogs[{index}]");
        let Value::Mapping(mut entry) = entry else {
            return Err((field, "expected a mapping {logpath, logtopic}".into()));
        };
        let mut log = Mapping::new();
        for (old, new) in [("logpath", "path"), ("logtopic", "topic")] {
            let value = entry
                .remove(old)
                .ok_or_else(|| (format!("{field}.{old}"), "missing field".to_string()))?;
            log.insert(new.into(), value);
        }
        if let Some((key, _)) = entry.into_iter().next() {
            let key = serde_yaml::to_string(&key).unwrap_or_default();
            return Err((format!("{field}.{}", key.trim()), "unknown field".into()));
        }
        logs.push(Value::Mapping(log));
    }
    Ok(Value::Sequence(logs))
}

/// `kafkaconfig: {kafkaaddr: "host:port"}` (or a list of addresses) → a Kafka sink.
fn kafkaconfig_to_sink(value: Value) -> Result<Value, (String, String)> {
    let Value::Mapping(mut old) = value else {
        return Err((
            "kafkaconfig".into(),
            "expected a mapping {kafkaaddr}".into(),
        ));
    };
    let brokers = match old.remove("kafkaaddr") {
        Some(Value::String(addr)) => addr
            .split(',')
            .map(|a| Value::String(a.trim().to_string()))
            .collect(),
        Some(Value::Sequence(list)) => list,
        Some(_) => {
            return Err((
                "kafkaconfig.kafkaaddr".into(),
                "expected an address or a list".into(),
            ))
        }
        None => return Err(("kafkaconfig.kafkaaddr".into(), "missing field".into())),
    };
    if let Some((key, _)) = old.into_iter().next() {
        let key = serde_yaml::to_string(&key).unwrap_or_default();
        return Err((
            format!("kafkaconfig.{}", key.trim()),
            "unknown field".into(),
        ));
    }
    let mut kafka = Mapping::new();
    kafka.insert("brokers".into(), Value::Sequence(brokers));
    let mut sink = Mapping::new();
    sink.insert("kind".into(), "kafka".into());
    sink.insert("kafka".into(), Value::Mapping(kafka));
    Ok(Value::Mapping(sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(yaml: &str) -> Mapping {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn rewrite_should_turn_collectlogs_into_logs_with_a_warning() {
        let mut root = mapping("collectlogs:\n  - {logpath: /var/log/a.log, logtopic: a}\n");
        let warnings = rewrite(&mut root).unwrap();
        assert_eq!(
            root,
            mapping("logs:\n  - {path: /var/log/a.log, topic: a}\n")
        );
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`collectlogs`") && warnings[0].contains("`logs:"));
    }

    #[test]
    fn rewrite_should_name_the_field_of_a_broken_entry() {
        let mut root = mapping("collectlogs:\n  - {logpath: /a}\n");
        let (field, message) = rewrite(&mut root).unwrap_err();
        assert_eq!(field, "collectlogs[0].logtopic");
        assert_eq!(message, "missing field");
    }

    #[test]
    fn rewrite_should_turn_kafkaconfig_into_a_kafka_sink() {
        let mut root = mapping("kafkaconfig: {kafkaaddr: '127.0.0.1:9092'}\n");
        let warnings = rewrite(&mut root).unwrap();
        assert_eq!(
            root,
            mapping("sink: {kind: kafka, kafka: {brokers: ['127.0.0.1:9092']}}\n")
        );
        assert!(warnings[0].contains("`kafkaconfig`"));
    }

    #[test]
    fn rewrite_should_refuse_legacy_keys_for_features_not_built() {
        let mut root = mapping("etcdkeys: [/a]\n");
        let (field, message) = rewrite(&mut root).unwrap_err();
        assert_eq!(field, "etcdkeys");
        assert!(message.contains("etcd.keys"));
    }
}
