//! The seed format of the Go system logcatch replaces (`collectlogs`, `etcdkeys`,
//! `etcdconfig`, `kafkaconfig`, `catsyslog`), rewritten into the current shape with a
//! warning each.

use serde_yaml::{Mapping, Value};

/// Each legacy key and what it becomes.
const LEGACY_KEYS: &[(&str, &str)] = &[
    ("collectlogs", "logs: [{path, topic}]"),
    ("etcdkeys", "etcd.keys"),
    ("etcdconfig", "etcd.endpoints"),
    ("kafkaconfig", "sink: {kind: kafka, kafka: {brokers}}"),
];

/// The Go system's own log (`catsyslog: {logpath, loglevel}`): logcatch logs to stderr.
const OWN_LOG_KEY: &str = "catsyslog";

/// Rewrites legacy keys in `root` in place. Returns one warning per rewritten key, or an
/// error `(field, message)` for a legacy key that cannot be honoured.
///
/// Like the Go system (`if etcdDatas == nil { return etcdMgr }`), a legacy key that is
/// null or empty — a list whose entries are all commented out reads as null — declares
/// nothing: it is dropped with its warning, whatever else the file has.
pub fn rewrite(root: &mut Mapping) -> Result<Vec<String>, (String, String)> {
    let mut warnings = Vec::new();
    for &(old, new) in LEGACY_KEYS {
        let Some(value) = root.remove(old) else {
            continue;
        };
        if is_empty(&value) {
            warnings.push(format!(
                "legacy key `{old}` is deprecated: write `{new}` instead (it is empty here, \
                 so it declares nothing)"
            ));
            continue;
        }
        match old {
            "etcdkeys" => into_etcd(root, old, "keys", value)?,
            "etcdconfig" => into_etcd(root, old, "endpoints", value)?,
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
    if let Some(own_log) = root.remove(OWN_LOG_KEY) {
        if !matches!(own_log, Value::Null | Value::Mapping(_)) {
            return Err((
                OWN_LOG_KEY.into(),
                "expected a mapping {logpath, loglevel}".into(),
            ));
        }
        warnings.push(format!(
            "legacy key `{OWN_LOG_KEY}` (the Go system's own log file and level) is ignored: \
             logcatch logs to stderr, at the level RUST_LOG sets"
        ));
    }
    Ok(warnings)
}

/// Null, an empty list or an empty mapping.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Sequence(list) => list.is_empty(),
        Value::Mapping(map) => map.is_empty(),
        _ => false,
    }
}

/// Moves a legacy list into `etcd.<field>` (the Go system's lists have the same shape).
fn into_etcd(
    root: &mut Mapping,
    old: &str,
    field: &str,
    value: Value,
) -> Result<(), (String, String)> {
    if !matches!(value, Value::Sequence(_)) {
        return Err((old.to_string(), "expected a list of strings".into()));
    }
    let etcd = root
        .entry("etcd".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Value::Mapping(etcd) = etcd else {
        return Err(("etcd".into(), "expected a mapping".into()));
    };
    if etcd.contains_key(field) {
        return Err((
            old.to_string(),
            format!("give either `{old}` or `etcd.{field}`, not both"),
        ));
    }
    etcd.insert(field.into(), value);
    Ok(())
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
    fn rewrite_should_name_an_unknown_field_of_kafkaconfig() {
        let mut root = mapping("kafkaconfig: {kafkaaddr: 'a:1', kafkatopic: x}\n");
        let (field, message) = rewrite(&mut root).unwrap_err();
        assert_eq!(field, "kafkaconfig.kafkatopic");
        assert_eq!(message, "unknown field");
    }

    #[test]
    fn rewrite_should_move_etcdkeys_and_etcdconfig_into_the_etcd_section() {
        let mut root = mapping("etcdkeys: [/a, /b]\netcdconfig: [\"127.0.0.1:2379\"]\n");
        let warnings = rewrite(&mut root).unwrap();
        assert_eq!(
            root,
            mapping("etcd: {keys: [/a, /b], endpoints: [\"127.0.0.1:2379\"]}\n")
        );
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("`etcdkeys`") && warnings[0].contains("`etcd.keys`"));
    }

    #[test]
    fn rewrite_should_drop_null_and_empty_legacy_keys_with_a_warning() {
        // `etcdkeys:` with every entry commented out is null.
        let mut root = mapping(
            "collectlogs:\netcdkeys:\n  #- collectlogkey1\netcdconfig: []\nkafkaconfig: {}\n\
             logs: [{path: /a, topic: a}]\netcd: {keys: [/b]}\n",
        );
        let warnings = rewrite(&mut root).unwrap();
        assert_eq!(
            root,
            mapping("logs: [{path: /a, topic: a}]\netcd: {keys: [/b]}\n"),
            "nothing added, no conflict with the new forms"
        );
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| w.contains("declares nothing")),
            "{warnings:?}"
        );
    }

    #[test]
    fn rewrite_should_ignore_the_go_systems_own_log_section_with_a_warning() {
        let mut root = mapping("catsyslog: {logpath: /var/log/x, loglevel: debug}\n");
        let warnings = rewrite(&mut root).unwrap();
        assert!(root.is_empty());
        assert!(warnings[0].contains("`catsyslog`") && warnings[0].contains("RUST_LOG"));
        let mut root = mapping("catsyslog: [a]\n");
        assert_eq!(rewrite(&mut root).unwrap_err().0, "catsyslog");
    }

    #[test]
    fn rewrite_should_refuse_a_legacy_key_next_to_its_new_form() {
        let mut root = mapping("etcdkeys: [/a]\netcd: {keys: [/b]}\n");
        let (field, message) = rewrite(&mut root).unwrap_err();
        assert_eq!(field, "etcdkeys");
        assert!(message.contains("etcd.keys"));
    }
}
