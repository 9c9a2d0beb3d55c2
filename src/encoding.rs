//! A declaration's Kafka record value, `encoding:` and `merge_json:` in the config's
//! `logs[]` and in etcd values: the line as it is (`raw`, the default) or one JSON object
//! a record (`json`, the schema in docs/json-value.md), where `merge_json: NAME` puts a
//! line that is itself a JSON object under NAME as an object. Validated here for both
//! sources; `sink/json_value.rs` writes the values.

use serde::{Deserialize, Serialize};

/// The value of a JSON record's `schema` member: changes only with an incompatible
/// change of the schema (docs/json-value.md, "Compatibility").
pub const SCHEMA: &str = "logcatch.v1";

/// Every member the agent itself writes in a JSON value: `merge_json` may name none of
/// them but `message` (the line then is an object or a string under the same name).
pub const MEMBERS: [&str; 16] = [
    "schema",
    "time",
    "node",
    "path",
    "offset",
    "stream",
    "namespace",
    "pod",
    "pod_uid",
    "container",
    "container_id",
    "labels",
    "fields",
    "parse_error",
    "truncated",
    "message",
];

/// The longest `merge_json` name, in bytes.
pub const MAX_MERGE_NAME: usize = 255;

/// What a record's Kafka value is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The line's bytes (a container log's message) as they are.
    #[default]
    Raw,
    /// One JSON object with the message and the record's metadata.
    Json,
}

impl Encoding {
    pub fn is_raw(&self) -> bool {
        *self == Encoding::Raw
    }
}

/// How a declaration's JSON values are written; shared by every batch of its tailers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonValue {
    /// A line that is a JSON object goes under this member as an object.
    pub merge_json: Option<Box<str>>,
}

/// The JSON settings of a declaration with `encoding` and `merge_json`; `None` for raw
/// values (validated first: `merge_json` only comes with `json`).
pub fn json_value(encoding: Encoding, merge_json: Option<&str>) -> Option<JsonValue> {
    (encoding == Encoding::Json).then(|| JsonValue {
        merge_json: merge_json.map(Box::from),
    })
}

/// A declaration's `encoding` and `merge_json`; the error names the field.
pub fn validate(encoding: Encoding, merge_json: Option<&str>) -> Result<(), (String, String)> {
    let Some(name) = merge_json else {
        return Ok(());
    };
    let error = |message: String| Err(("merge_json".to_string(), message));
    if encoding != Encoding::Json {
        return error("applies only with encoding: json".into());
    }
    if name.is_empty() {
        return error("must not be empty (leave it out to ship JSON lines as strings)".into());
    }
    if name.len() > MAX_MERGE_NAME {
        return error(format!(
            "the name is {} bytes; at most {MAX_MERGE_NAME}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return error("must not contain control characters".into());
    }
    if name != "message" && MEMBERS.contains(&name) {
        return error(format!(
            "{name:?} is a member the agent writes itself (docs/json-value.md); choose another name, or \"message\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_should_name_merge_json_when_it_cannot_apply() {
        let cases = [
            (Encoding::Raw, "log", "applies only with encoding: json"),
            (Encoding::Json, "", "must not be empty"),
            (
                Encoding::Json,
                "time",
                "\"time\" is a member the agent writes",
            ),
            (
                Encoding::Json,
                "a\nb",
                "must not contain control characters",
            ),
        ];
        for (encoding, name, want) in cases {
            let (field, message) = validate(encoding, Some(name)).unwrap_err();
            assert_eq!(field, "merge_json");
            assert!(message.contains(want), "{name:?}: {message}");
        }
        let long = "x".repeat(MAX_MERGE_NAME + 1);
        assert!(validate(Encoding::Json, Some(&long)).is_err());
        for name in ["log", "message", "json", "payload.body"] {
            assert_eq!(validate(Encoding::Json, Some(name)), Ok(()), "{name}");
        }
        assert_eq!(validate(Encoding::Raw, None), Ok(()));
        assert_eq!(json_value(Encoding::Raw, None), None);
        assert_eq!(
            json_value(Encoding::Json, Some("log")),
            Some(JsonValue {
                merge_json: Some("log".into())
            })
        );
    }
}
