//! Tenants: what the etcd keys under a prefix may declare (`etcd.policies`): which files
//! (`allowed_paths`), which topics (`allowed_topics`) and how many tailers
//! (`max_tailers`). A key under no policy's prefix is held to the global rules of the
//! `etcd:` section; a key under several, to the longest prefix's.

use super::{AllowList, SourceId};
use crate::config::EtcdConfig;
use globset::{Glob, GlobSet, GlobSetBuilder};

/// The rules one key is held to.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The policy's prefix; `None` for the global rules.
    pub prefix: Option<String>,
    pub allow: AllowList,
    topics: GlobSet,
    /// The policy's own bound (the global one applies to all etcd tailers together).
    pub max_tailers: Option<usize>,
}

impl Rules {
    /// How refusals name the rules: `etcd.allowed_topics`, or
    /// `etcd.policies[prefix /logcatch/teams/a/].allowed_topics`.
    pub fn field(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("etcd.policies[prefix {prefix}].{name}"),
            None => format!("etcd.{name}"),
        }
    }

    pub fn allows_topic(&self, topic: &str) -> bool {
        self.topics.is_match(topic)
    }
}

/// The global rules and every policy, the longest prefix first.
#[derive(Debug, Clone)]
pub struct Policies {
    global: Rules,
    policies: Vec<Rules>,
}

impl Policies {
    /// Invalid globs are skipped (the config validation refuses them first).
    pub fn new(config: &EtcdConfig) -> Self {
        let global = compile(None, &config.allowed_paths, &config.allowed_topics, None);
        let mut policies: Vec<Rules> = config
            .policies
            .iter()
            .map(|p| {
                let paths = p.allowed_paths.as_ref().unwrap_or(&config.allowed_paths);
                let topics = p.allowed_topics.as_ref().unwrap_or(&config.allowed_topics);
                compile(Some(&p.prefix), paths, topics, p.max_tailers)
            })
            .collect();
        policies.sort_by_key(|rules| std::cmp::Reverse(rules.prefix.as_ref().map(String::len)));
        Policies { global, policies }
    }

    /// The rules of the etcd key behind `source` (`etcd:<key>`).
    pub fn for_source(&self, source: &SourceId) -> &Rules {
        let key = source.strip_prefix("etcd:").unwrap_or(source);
        self.policies
            .iter()
            .find(|rules| rules.prefix.as_deref().is_some_and(|p| key.starts_with(p)))
            .unwrap_or(&self.global)
    }

    /// The policies with a bound of their own.
    pub fn bounded(&self) -> impl Iterator<Item = (&Rules, usize)> {
        self.policies
            .iter()
            .filter_map(|rules| Some((rules, rules.max_tailers?)))
    }

    /// Every set of rules: where untrusted globs may walk is the union of their roots.
    pub fn all(&self) -> impl Iterator<Item = &Rules> {
        std::iter::once(&self.global).chain(&self.policies)
    }
}

fn compile(
    prefix: Option<&String>,
    paths: &[String],
    topics: &[String],
    max_tailers: Option<usize>,
) -> Rules {
    let mut builder = GlobSetBuilder::new();
    for topic in topics {
        if let Ok(glob) = Glob::new(topic) {
            builder.add(glob);
        }
    }
    let mut rules = Rules {
        prefix: prefix.cloned(),
        allow: AllowList::new(paths),
        topics: builder.build().unwrap_or_else(|_| GlobSet::empty()),
        max_tailers,
    };
    rules.allow.field = rules.field("allowed_paths");
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_should_be_held_to_its_longest_policy_prefix_else_the_global_rules() {
        let config: EtcdConfig = serde_yaml::from_str(
            r#"
allowed_paths: ["/var/log/**"]
allowed_topics: ["*"]
policies:
  - { prefix: /logcatch/teams/, allowed_topics: ["shared-*"] }
  - { prefix: /logcatch/teams/pay/, allowed_paths: ["/var/log/pay/**"], allowed_topics: ["pay-*"], max_tailers: 2 }
"#,
        )
        .unwrap();
        let policies = Policies::new(&config);
        let source = |key: &str| SourceId::from(format!("etcd:{key}"));
        let pay = policies.for_source(&source("/logcatch/teams/pay/api"));
        assert_eq!(pay.prefix.as_deref(), Some("/logcatch/teams/pay/"));
        assert!(pay.allows_topic("pay-api") && !pay.allows_topic("shared-x"));
        assert_eq!(pay.max_tailers, Some(2));
        let team = policies.for_source(&source("/logcatch/teams/web"));
        assert!(team.allows_topic("shared-x") && !team.allows_topic("pay-api"));
        assert!(
            team.allow
                .check(std::path::Path::new("/var/log/x.log"))
                .is_ok(),
            "global paths"
        );
        let other = policies.for_source(&source("/logcatch/nodes/n1"));
        assert_eq!(other.prefix, None);
        assert!(other.allows_topic("anything"));
        assert_eq!(other.field("allowed_topics"), "etcd.allowed_topics");
        assert_eq!(
            pay.field("allowed_topics"),
            "etcd.policies[prefix /logcatch/teams/pay/].allowed_topics"
        );
        assert_eq!(policies.bounded().count(), 1);
    }
}
