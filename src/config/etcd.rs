//! The `etcd:` section: where the etcd source connects, which keys and prefixes it
//! watches, and which paths etcd may declare (`allowed_paths`, the trust boundary).

use crate::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// `http://host:port`, `https://host:port` or `host:port` (plain http).
    pub endpoints: Vec<String>,
    /// Exact keys; each is one source `etcd:<key>`.
    pub keys: Vec<String>,
    /// Every key under a prefix is one source `etcd:<key>`.
    pub prefixes: Vec<String>,
    /// Globs the resolved (symlink-free) path of an etcd-declared file must match.
    pub allowed_paths: Vec<String>,
    /// Globs of the topics etcd may declare (`["*"]`: any).
    pub allowed_topics: Vec<String>,
    /// At most this many tailers run; config-file ones count first (and always run),
    /// etcd ones fill the rest in (topic, path) order.
    pub max_tailers: usize,
    /// Rules per key prefix (tenants): a key under a policy's prefix (the longest that
    /// matches) is held to its rules instead of the global ones above.
    pub policies: Vec<EtcdPolicy>,
    pub username: String,
    pub password_file: PathBuf,
    pub tls: EtcdTlsConfig,
    #[serde(deserialize_with = "units::duration")]
    pub dial_timeout: Duration,
    #[serde(deserialize_with = "units::duration")]
    pub request_timeout: Duration,
    /// Status written back to etcd per declaring key, under a lease.
    pub status: EtcdStatusConfig,
}

/// `etcd.status`: what this node does with each declaring key, written to
/// `<prefix>/<node>/<key>` under a lease it keeps alive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdStatusConfig {
    pub enabled: bool,
    pub prefix: String,
    /// A key's status is written at most once per interval, and only when it changed.
    #[serde(deserialize_with = "units::duration")]
    pub interval: Duration,
    /// The lease's time to live: a node that stops keeping it alive (killed, cut off)
    /// has its status removed by etcd this long after.
    #[serde(deserialize_with = "units::duration")]
    pub lease_ttl: Duration,
}

impl Default for EtcdStatusConfig {
    fn default() -> Self {
        EtcdStatusConfig {
            enabled: true,
            prefix: "/logcatch/status".into(),
            interval: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

impl EtcdStatusConfig {
    /// The prefix every status key starts with (`<prefix>/`).
    pub fn key_prefix(&self) -> String {
        format!("{}/", self.prefix.trim_end_matches('/'))
    }

    /// Where `node` writes the status of the declaring `key`.
    pub fn key(&self, node: &str, key: &str) -> String {
        format!("{}{node}/{key}", self.key_prefix())
    }

    fn validate(&self, keys: &[String], prefixes: &[String]) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.prefix.trim_end_matches('/').is_empty() {
            return Err(("etcd.status.prefix".into(), "must not be empty".into()));
        }
        // The agent must never watch its own writes: every status write would be a
        // declaration change on every node.
        let status = self.key_prefix();
        let watched = keys.iter().enumerate().map(|(i, k)| ("keys", i, k, false));
        let watched = watched.chain(
            prefixes
                .iter()
                .enumerate()
                .map(|(i, k)| ("prefixes", i, k, true)),
        );
        for (name, index, key, prefix) in watched {
            let overlaps = key.starts_with(&status) || (prefix && status.starts_with(key.as_str()));
            if overlaps {
                return Err((
                    "etcd.status.prefix".into(),
                    format!(
                        "{:?} overlaps etcd.{name}[{index}] {key:?}: the agent would watch its own status writes",
                        self.prefix
                    ),
                ));
            }
        }
        for (name, d) in [
            ("etcd.status.interval", self.interval),
            ("etcd.status.lease_ttl", self.lease_ttl),
        ] {
            if d.is_zero() {
                return Err((name.into(), "must be greater than 0".into()));
            }
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return Err((
                "etcd.status.lease_ttl".into(),
                "must be at least 2s (etcd leases count in whole seconds)".into(),
            ));
        }
        Ok(())
    }
}

/// What the keys under `prefix` may declare. A field left out is the global one; the
/// global `max_tailers` still bounds all etcd tailers together.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdPolicy {
    pub prefix: String,
    #[serde(default)]
    pub allowed_paths: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_topics: Option<Vec<String>>,
    /// At most this many tailers declared by the keys under the prefix.
    #[serde(default)]
    pub max_tailers: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdTlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

pub const DEFAULT_MAX_TAILERS: usize = 10_000;

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            keys: Vec::new(),
            prefixes: Vec::new(),
            allowed_paths: Vec::new(),
            allowed_topics: vec!["*".into()],
            max_tailers: DEFAULT_MAX_TAILERS,
            policies: Vec::new(),
            username: String::new(),
            password_file: PathBuf::new(),
            tls: EtcdTlsConfig::default(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            status: EtcdStatusConfig::default(),
        }
    }
}

impl EtcdTlsConfig {
    pub fn is_enabled(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .any(|p| !p.as_os_str().is_empty())
    }
}

impl EtcdConfig {
    /// The source runs when there are endpoints and something to watch.
    pub fn is_enabled(&self) -> bool {
        let watches_something = !(self.keys.is_empty() && self.prefixes.is_empty());
        !self.endpoints.is_empty() && watches_something
    }

    /// Everything that needs a new connection when it changes.
    pub fn same_connection(&self, other: &EtcdConfig) -> bool {
        self.endpoints == other.endpoints
            && self.username == other.username
            && self.password_file == other.password_file
            && self.tls == other.tls
            && self.dial_timeout == other.dial_timeout
            && self.request_timeout == other.request_timeout
    }

    /// Validates the section; errors are `(field path, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.endpoints.is_empty() && !(self.keys.is_empty() && self.prefixes.is_empty()) {
            return Err((
                "etcd.endpoints".into(),
                "must list at least one endpoint when etcd.keys or etcd.prefixes are set".into(),
            ));
        }
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            validate_endpoint(endpoint).map_err(|m| (format!("etcd.endpoints[{index}]"), m))?;
        }
        for (name, list) in [("keys", &self.keys), ("prefixes", &self.prefixes)] {
            for (index, key) in list.iter().enumerate() {
                let field = format!("etcd.{name}[{index}]");
                if key.is_empty() {
                    return Err((field, "must not be empty".into()));
                }
                if list[..index].contains(key) {
                    return Err((field, format!("{key:?} is listed twice")));
                }
            }
        }
        validate_rules(
            "etcd",
            Some(&self.allowed_paths),
            Some(&self.allowed_topics),
            Some(self.max_tailers),
        )?;
        for (index, policy) in self.policies.iter().enumerate() {
            let at = format!("etcd.policies[{index}]");
            if !policy.prefix.starts_with('/') {
                let message = format!("{:?} must be a key prefix starting with /", policy.prefix);
                return Err((format!("{at}.prefix"), message));
            }
            if let Some(other) = self.policies[..index]
                .iter()
                .position(|p| p.prefix == policy.prefix)
            {
                let message = format!("{:?} is also etcd.policies[{other}]'s", policy.prefix);
                return Err((format!("{at}.prefix"), message));
            }
            validate_rules(
                &at,
                policy.allowed_paths.as_ref(),
                policy.allowed_topics.as_ref(),
                policy.max_tailers,
            )?;
        }
        let has_password = !self.password_file.as_os_str().is_empty();
        if self.username.is_empty() == has_password {
            let field = if has_password {
                "etcd.username"
            } else {
                "etcd.password_file"
            };
            return Err((
                field.into(),
                "etcd.username and etcd.password_file go together".into(),
            ));
        }
        let (cert, key) = (&self.tls.cert_file, &self.tls.key_file);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            return Err((
                "etcd.tls".into(),
                "cert_file and key_file go together (client certificate and its key)".into(),
            ));
        }
        for (name, d) in [
            ("etcd.dial_timeout", self.dial_timeout),
            ("etcd.request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err((name.into(), "must be greater than 0".into()));
            }
        }
        self.status.validate(&self.keys, &self.prefixes)
    }
}

/// The rules of the global section or of a policy (`at`): absolute path globs, topic
/// globs, a positive tailer bound.
fn validate_rules(
    at: &str,
    allowed_paths: Option<&Vec<String>>,
    allowed_topics: Option<&Vec<String>>,
    max_tailers: Option<usize>,
) -> Result<(), (String, String)> {
    for (index, pattern) in allowed_paths.into_iter().flatten().enumerate() {
        let field = format!("{at}.allowed_paths[{index}]");
        if !pattern.starts_with('/') {
            return Err((
                field,
                format!("{pattern:?} must be an absolute path or glob"),
            ));
        }
        globset::Glob::new(pattern).map_err(|e| (field, format!("invalid glob: {e}")))?;
    }
    for (index, pattern) in allowed_topics.into_iter().flatten().enumerate() {
        let field = format!("{at}.allowed_topics[{index}]");
        globset::Glob::new(pattern).map_err(|e| (field, format!("invalid glob: {e}")))?;
    }
    if max_tailers == Some(0) {
        return Err((
            format!("{at}.max_tailers"),
            "must be at least 1 (use an empty allowed_paths to tail nothing from etcd)".into(),
        ));
    }
    Ok(())
}

fn validate_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = match endpoint.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{endpoint:?}: scheme {scheme:?} is not http or https"
            ))
        }
        None => endpoint,
    };
    let valid = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{endpoint:?} is not an endpoint like \"http://127.0.0.1:2379\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> EtcdConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn an_empty_section_disables_the_source() {
        let etcd = EtcdConfig::default();
        assert!(!etcd.is_enabled());
        assert_eq!(etcd.validate(), Ok(()));
    }

    #[test]
    fn validate_should_accept_the_documented_example() {
        let etcd = config(
            r#"
endpoints: ["http://127.0.0.1:2379", "10.0.0.1:2379"]
keys: ["/logcatch/nodes/n1", "/logcatch/all"]
prefixes: ["/logcatch/shared/"]
allowed_paths: ["/var/log/**"]
max_tailers: 500
tls: { ca_file: "", cert_file: "", key_file: "" }
dial_timeout: 5s
request_timeout: 5s
"#,
        );
        assert!(etcd.is_enabled());
        assert_eq!(etcd.validate(), Ok(()));
    }

    #[test]
    fn validate_should_name_the_broken_field() {
        let cases = [
            ("keys: [/a]", "etcd.endpoints"),
            ("endpoints: [\"ftp://x:1\"]", "etcd.endpoints[0]"),
            ("endpoints: [\"nohostport\"]", "etcd.endpoints[0]"),
            ("endpoints: [\"h:1\"]\nkeys: [/a, \"\"]", "etcd.keys[1]"),
            (
                "endpoints: [\"h:1\"]\nprefixes: [/a, /a]",
                "etcd.prefixes[1]",
            ),
            ("allowed_paths: [\"var/log/*\"]", "etcd.allowed_paths[0]"),
            ("allowed_paths: [\"/var/[log\"]", "etcd.allowed_paths[0]"),
            ("username: root", "etcd.password_file"),
            ("password_file: /p", "etcd.username"),
            ("tls: { cert_file: /c }", "etcd.tls"),
            ("request_timeout: 0s", "etcd.request_timeout"),
            ("max_tailers: 0", "etcd.max_tailers"),
            ("allowed_topics: [\"a[\"]", "etcd.allowed_topics[0]"),
            ("policies: [{prefix: team/}]", "etcd.policies[0].prefix"),
            (
                "policies: [{prefix: /t/}, {prefix: /t/}]",
                "etcd.policies[1].prefix",
            ),
            (
                "policies: [{prefix: /t/, allowed_paths: [var/*]}]",
                "etcd.policies[0].allowed_paths[0]",
            ),
            (
                "policies: [{prefix: /t/, allowed_topics: [\"[\"]}]",
                "etcd.policies[0].allowed_topics[0]",
            ),
            (
                "policies: [{prefix: /t/, max_tailers: 0}]",
                "etcd.policies[0].max_tailers",
            ),
            ("status: { prefix: \"/\" }", "etcd.status.prefix"),
            ("status: { interval: 0s }", "etcd.status.interval"),
            ("status: { lease_ttl: 1s }", "etcd.status.lease_ttl"),
        ];
        for (yaml, field) in cases {
            let (got, _) = config(yaml).validate().unwrap_err();
            assert_eq!(got, field, "for {yaml:?}");
        }
    }

    #[test]
    fn a_status_prefix_overlapping_a_watched_key_or_prefix_should_be_refused() {
        let cases = [
            ("keys: [/logcatch/status/n1//k]", "etcd.keys[0]"),
            ("prefixes: [/logcatch/]", "etcd.prefixes[0]"),
            ("prefixes: [/a/, /logcatch/status/n1/]", "etcd.prefixes[1]"),
            ("keys: [/s/n1//k]\nstatus: { prefix: /s/ }", "etcd.keys[0]"),
        ];
        for (yaml, named) in cases {
            let yaml = format!("endpoints: [\"h:1\"]\n{yaml}");
            let (field, message) = config(&yaml).validate().unwrap_err();
            assert_eq!(field, "etcd.status.prefix", "for {yaml:?}");
            assert!(message.contains(named), "for {yaml:?}: {message}");
        }
        let fine = [
            "keys: [/logcatch/status-of-things, /logcatch/status]",
            "prefixes: [/logcatch/statuses/]",
            "prefixes: [/logcatch/]\nstatus: { enabled: false }",
            "prefixes: [/logcatch/decl/]\nstatus: { prefix: /status/ }",
        ];
        for yaml in fine {
            let yaml = format!("endpoints: [\"h:1\"]\n{yaml}");
            assert_eq!(config(&yaml).validate(), Ok(()), "for {yaml:?}");
        }
    }

    #[test]
    fn a_status_key_should_name_the_node_and_the_declaring_key() {
        let status = EtcdStatusConfig {
            prefix: "/s/".into(),
            ..EtcdStatusConfig::default()
        };
        assert_eq!(status.key("n1", "/logs/app"), "/s/n1//logs/app");
        assert_eq!(
            EtcdStatusConfig::default().key_prefix(),
            "/logcatch/status/"
        );
    }

    #[test]
    fn a_changed_key_list_keeps_the_connection() {
        let a = config("endpoints: [\"h:1\"]\nkeys: [/a]");
        let b = config("endpoints: [\"h:1\"]\nkeys: [/b]");
        let c = config("endpoints: [\"h:2\"]\nkeys: [/a]");
        assert!(a.same_connection(&b));
        assert!(!a.same_connection(&c));
    }
}
