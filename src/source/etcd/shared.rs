//! The one etcd client of the agent: every watched key and prefix lists and watches
//! through it, so the agent holds one HTTP/2 connection and logs in once, each watch
//! being a gRPC stream multiplexed on that connection. It talks to one endpoint at a time
//! and moves to the next when a user saw that member fail (a timeout, a broken connection,
//! no leader): a balanced channel would pick a member at random for each request, and a
//! hung member accepts connections, so a re-list could land on it again and again. It is
//! rebuilt (files read again, logged in again) once for all its users: when the credential
//! files changed since it was built, after etcd refused its credentials, and on the move.

use super::client::{self, ClientError};
use crate::config::EtcdConfig;
use etcd_client::Client;
use std::sync::Arc;
use tokio::sync::Mutex;

/// A client and what it was built from.
struct Connected {
    client: Client,
    /// The digest of the credential files it was built with.
    credentials: u64,
    /// Which build it is, so that a refusal or failure seen with an older build does not
    /// throw away the newer one another user already made.
    build: u64,
}

#[derive(Default)]
struct State {
    connected: Option<Connected>,
    builds: u64,
    /// The index of the endpoint the next build talks to.
    endpoint: usize,
}

impl State {
    /// The next build talks to the next endpoint (with one endpoint, the client stays:
    /// its channel connects again by itself).
    fn move_on(&mut self, endpoints: &[String], why: &str) {
        if endpoints.len() < 2 {
            return;
        }
        self.connected = None;
        let from = &endpoints[self.endpoint];
        self.endpoint = (self.endpoint + 1) % endpoints.len();
        let to = &endpoints[self.endpoint];
        tracing::info!(%from, %to, "etcd: {why}; moving to the next endpoint");
    }
}

/// Where the agent's one client lives, for the etcd source's watches and the status
/// writer alike (`publish.rs`): the client for the current connection settings, made at
/// first use and replaced when they change.
#[derive(Default)]
pub struct ClientSlot(std::sync::Mutex<Option<Arc<SharedClient>>>);

impl ClientSlot {
    /// The shared client for `etcd`'s connection settings: the one in the slot, or a new
    /// one (lazy: it connects at its first use) when there is none or the settings changed.
    pub fn for_config(&self, etcd: &EtcdConfig) -> Arc<SharedClient> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(shared) if shared.config().same_connection(etcd) => shared.clone(),
            _ => {
                let shared = Arc::new(SharedClient::new(Arc::new(etcd.clone())));
                *slot = Some(shared.clone());
                shared
            }
        }
    }
}

/// A cheap handle on the shared client, naming the build it came from.
#[derive(Clone)]
pub struct Handle {
    pub client: Client,
    /// The endpoint it talks to.
    pub endpoint: String,
    build: u64,
}

impl Handle {
    /// Both come from the same build of the client.
    pub fn same_client(&self, other: &Handle) -> bool {
        self.build == other.build
    }
}

pub struct SharedClient {
    config: Arc<EtcdConfig>,
    state: Mutex<State>,
}

impl SharedClient {
    /// Connects lazily: nothing happens before the first [`SharedClient::client`]. Starts
    /// at a random endpoint, so that a fleet configured alike spreads over the members.
    pub fn new(config: Arc<EtcdConfig>) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let endpoint = (random % config.endpoints.len().max(1) as u64) as usize;
        SharedClient {
            config,
            state: Mutex::new(State {
                endpoint,
                ..State::default()
            }),
        }
    }

    /// The connection settings the client is built from.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The client: the one kept, unless the credential files changed since it was built
    /// (a rotated password or certificate), it was refused or its member failed, else a
    /// new one. Concurrent callers wait for one build. A build that cannot connect (with
    /// a user it logs in at once) moves to the next endpoint, unless it was refused.
    pub async fn client(&self) -> Result<Handle, ClientError> {
        let credentials = client::credentials_digest(&self.config);
        let endpoints = &self.config.endpoints;
        let mut state = self.state.lock().await;
        // Always below the number of endpoints (`new`, `move_on`); none: etcd-client says.
        let endpoint = endpoints.get(state.endpoint).cloned().unwrap_or_default();
        if let Some(connected) = &state.connected {
            if connected.credentials == credentials {
                return Ok(Handle {
                    client: connected.client.clone(),
                    endpoint,
                    build: connected.build,
                });
            }
            tracing::info!("etcd credential files changed; connecting with the new ones");
            state.connected = None;
        }
        let client = match client::connect(&self.config, std::slice::from_ref(&endpoint)).await {
            Ok(client) => client,
            Err(e) => {
                if !e.is_refusal() {
                    state.move_on(endpoints, &e.to_string());
                }
                return Err(e);
            }
        };
        state.builds += 1;
        let build = state.builds;
        state.connected = Some(Connected {
            client: client.clone(),
            credentials,
            build,
        });
        Ok(Handle {
            client,
            endpoint,
            build,
        })
    }

    /// The member `handle`'s client talks to failed (`why`): the next
    /// [`SharedClient::client`] talks to the next endpoint, unless a newer client was
    /// built already (every watch on a failed member fails at once; it moves once).
    pub async fn failed(&self, handle: &Handle, why: &str) {
        let mut state = self.state.lock().await;
        if state
            .connected
            .as_ref()
            .is_some_and(|c| c.build == handle.build)
        {
            state.move_on(&self.config.endpoints, why);
        }
    }

    /// etcd refused the credentials `handle`'s client logged in with: the next
    /// [`SharedClient::client`] builds a new one, unless a newer one was built already.
    pub async fn refused(&self, handle: &Handle) {
        let mut state = self.state.lock().await;
        if state
            .connected
            .as_ref()
            .is_some_and(|c| c.build == handle.build)
        {
            state.connected = None;
        }
    }

    /// How many clients were built so far.
    #[cfg(test)]
    async fn builds(&self) -> u64 {
        self.state.lock().await.builds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(dir: &std::path::Path) -> (SharedClient, std::path::PathBuf) {
        let password_file = dir.join("pass");
        std::fs::write(&password_file, "one\n").unwrap();
        // Without a user, `connect` does not talk to etcd: it builds a lazy channel.
        let config = EtcdConfig {
            endpoints: vec![
                "http://127.0.0.1:1".into(),
                "http://127.0.0.1:2".into(),
                "http://127.0.0.1:3".into(),
            ],
            password_file: password_file.clone(),
            ..EtcdConfig::default()
        };
        (SharedClient::new(Arc::new(config)), password_file)
    }

    #[tokio::test]
    async fn every_user_should_share_one_build_until_the_credentials_change() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, password_file) = shared(dir.path());
        let first = shared.client().await.unwrap();
        for _ in 0..5 {
            shared.client().await.unwrap();
        }
        assert_eq!(shared.builds().await, 1);
        std::fs::write(&password_file, "two\n").unwrap();
        let second = shared.client().await.unwrap();
        shared.client().await.unwrap();
        assert_eq!(shared.builds().await, 2, "rebuilt once for all users");
        // A refusal seen with the old build does not throw away the new one.
        shared.refused(&first).await;
        shared.client().await.unwrap();
        assert_eq!(shared.builds().await, 2);
        shared.refused(&second).await;
        shared.client().await.unwrap();
        assert_eq!(shared.builds().await, 3);
    }

    #[tokio::test]
    async fn a_refusal_should_rebuild_once_for_all_users() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, _) = shared(dir.path());
        let handles: Vec<Handle> = futures::future::join_all((0..4).map(|_| shared.client()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // Every watcher sees the refusal; one new client serves them all.
        for handle in &handles {
            shared.refused(handle).await;
        }
        for _ in 0..4 {
            shared.client().await.unwrap();
        }
        assert_eq!(shared.builds().await, 2);
    }

    #[tokio::test]
    async fn a_failed_member_should_move_every_user_to_the_next_endpoint_once() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, _) = shared(dir.path());
        let endpoints = shared.config().endpoints.clone();
        let handles: Vec<Handle> = futures::future::join_all((0..3).map(|_| shared.client()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let first = endpoints.iter().position(|e| *e == handles[0].endpoint);
        let at = |n: usize| &endpoints[(first.unwrap() + n) % endpoints.len()];
        assert!(handles.iter().all(|h| h.endpoint == *at(0)));
        // Every watch on the hung member fails; they move on once, together.
        for handle in &handles {
            shared.failed(handle, "timed out").await;
        }
        let second = shared.client().await.unwrap();
        assert_eq!(second.endpoint, *at(1));
        assert_eq!(shared.builds().await, 2);
        // A refusal keeps the endpoint: another member would refuse the same credentials.
        shared.refused(&second).await;
        let third = shared.client().await.unwrap();
        assert_eq!(third.endpoint, *at(1));
        // After the last endpoint, the first again.
        shared.failed(&third, "no leader").await;
        let fourth = shared.client().await.unwrap();
        shared.failed(&fourth, "connection refused").await;
        assert_eq!(shared.client().await.unwrap().endpoint, *at(0));
        assert_eq!(shared.builds().await, 5);
    }
}
