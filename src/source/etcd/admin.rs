//! `logcatch etcd put|get|del|list|status`: the operator's side of the etcd source. `put`
//! validates with the same parser the agent uses, so a value the agent would refuse never
//! reaches etcd.

use super::client::{self, ClientError};
use super::gather::{self, Gathered};
use super::value::{self, ValueError};
use crate::config::{EtcdConfig, EtcdStatusConfig};
use etcd_client::{Client, GetOptions};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no etcd endpoints: give --endpoints or a config with etcd.endpoints")]
    NoEndpoints,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}; nothing written")]
    Value(#[from] ValueError),
    #[error("etcd {endpoints}: {op} {key}: {source}")]
    Etcd {
        endpoints: String,
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd key {0} does not exist")]
    NotFound(String),
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// A connection for the admin commands.
pub struct Admin {
    client: Client,
    endpoints: String,
}

impl Admin {
    pub async fn connect(config: &EtcdConfig) -> Result<Admin> {
        if config.endpoints.is_empty() {
            return Err(AdminError::NoEndpoints);
        }
        Ok(Admin {
            client: client::connect(config, &config.endpoints).await?,
            endpoints: config.endpoints.join(","),
        })
    }

    fn error(&self, op: &'static str, key: &str) -> impl FnOnce(etcd_client::Error) -> AdminError {
        let endpoints = self.endpoints.clone();
        let key = key.to_string();
        move |source| AdminError::Etcd {
            endpoints,
            op,
            key,
            source,
        }
    }

    /// Validates `value` as the agent would, then writes it; returns the new revision.
    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<i64> {
        let specs = value::parse(key, value)?;
        let error = self.error("put", key);
        let response = self
            .client
            .put(key, value.to_vec(), None)
            .await
            .map_err(error)?;
        tracing::debug!(key, entries = specs.len(), "written");
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    pub async fn get(&mut self, key: &str) -> Result<String> {
        let error = self.error("get", key);
        let response = self.client.get(key, None).await.map_err(error)?;
        let kv = response
            .kvs()
            .first()
            .ok_or_else(|| AdminError::NotFound(key.to_string()))?;
        Ok(String::from_utf8_lossy(kv.value()).into_owned())
    }

    /// Deletes `key`; an absent key is an error (a typo should not look like success).
    pub async fn delete(&mut self, key: &str) -> Result<()> {
        let error = self.error("delete", key);
        let response = self.client.delete(key, None).await.map_err(error)?;
        if response.deleted() == 0 {
            return Err(AdminError::NotFound(key.to_string()));
        }
        Ok(())
    }

    /// Every key under `prefix` with its value and whether the agent would accept it.
    pub async fn list(&mut self, prefix: &str) -> Result<Vec<Listed>> {
        let error = self.error("list", prefix);
        let response = self
            .client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(error)?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let problem = value::parse(&key, kv.value()).err();
                Listed {
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                    key,
                    problem,
                }
            })
            .collect())
    }
}

impl Admin {
    /// The status every node (or `node` only) wrote back for `key` under `status`'s
    /// prefix, with the key's current revision.
    pub async fn status(
        &mut self,
        status: &EtcdStatusConfig,
        key: &str,
        node: Option<&str>,
    ) -> Result<Gathered> {
        let error = self.error("get", key);
        let response = self.client.get(key, None).await.map_err(error)?;
        let revision = response.kvs().first().map(|kv| kv.mod_revision());
        let prefix = status.key_prefix();
        // Every node's status keys first (names only: a fleet's values are large), then
        // the values of the key's.
        let paths = match node {
            Some(node) => vec![status.key(node, key)],
            None => {
                let error = self.error("list", &prefix);
                let options = GetOptions::new().with_prefix().with_keys_only();
                let listed = self.client.get(prefix.as_str(), Some(options)).await;
                let response = listed.map_err(error)?;
                response
                    .kvs()
                    .iter()
                    .filter_map(|kv| kv.key_str().ok())
                    .filter(|k| gather::node_of(&prefix, k, key).is_some())
                    .map(str::to_string)
                    .collect()
            }
        };
        let mut values = Vec::new();
        for path in paths {
            let error = self.error("get", &path);
            let response = self.client.get(path.as_str(), None).await.map_err(error)?;
            // Gone since it was listed (its node stopped): not a node of the key any more.
            let Some(kv) = response.kvs().first() else {
                continue;
            };
            if let Some(node) = gather::node_of(&prefix, &path, key) {
                values.push((node.to_string(), kv.value().to_vec()));
            }
        }
        Ok(Gathered::new(key, revision, values))
    }
}

/// One row of `etcd list`.
#[derive(Debug)]
pub struct Listed {
    pub key: String,
    pub value: String,
    /// Why the agent would refuse this value.
    pub problem: Option<ValueError>,
}
