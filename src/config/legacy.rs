//! The seed format of the Go system logcatch replaces (`collectlogs`, `etcdkeys`,
//! `etcdconfig`, `kafkaconfig`), rewritten into the current shape with a warning each.

use serde_yaml::{Mapping, Value};

/// What a legacy key becomes, and whether this build supports it.
const LEGACY_KEYS: &[(&str, &str, bool)] = &[
    ("collectlogs", "logs: [{path, topic}]", true),
    ("etcdkeys", "etcd.keys", true),
    ("etcdconfig", "etcd.endpoints", true),
    (
        "kafkaconfig",
        "sink: {kind: kafka, kafka: {brokers}}",
        false,
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
            "etcdkeys" => into_etcd(root, old, "keys", value)?,
            "etcdconfig" => into_etcd(root, old, "endpoints", value)?,
            _ => {
                if root.contains_key("logs") {
                    return Err((
                        old.to_string(),
                        "give either `collectlogs` or `logs`, not both".into(),
                    ));
                }
                root.insert("logs".into(), collectlogs_to_logs(value)?);
            }
        }
        warnings.push(format!(
            "legacy key `{old}` is deprecated: write `{new}` instead"
        ));
    }
    Ok(warnings)
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
    fn rewrite_should_refuse_legacy_keys_for_features_not_built() {
        let mut root = mapping("kafkaconfig: {kafkaaddr: x}\n");
        let (field, message) = rewrite(&mut root).unwrap_err();
        assert_eq!(field, "kafkaconfig");
        assert!(message.contains("kafka"));
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
    fn rewrite_should_refuse_a_legacy_key_next_to_its_new_form() {
        let mut root = mapping("etcdkeys: [/a]\netcd: {keys: [/b]}\n");
        let (field, message) = rewrite(&mut root).unwrap_err();
        assert_eq!(field, "etcdkeys");
        assert!(message.contains("etcd.keys"));
    }
}
