//! Writes this node's status per declaring key back to etcd (`etcd.status`), as a
//! Kubernetes controller reports status: `<prefix>/<node>/<key>`, a JSON
//! [`DeclarationReport`], under one lease this task keeps alive, so that the status of a
//! node that dies expires with its lease. A write round runs at most once per interval and
//! writes only the keys whose report changed (and deletes those of keys no longer
//! declared), so thousands of nodes do not flood etcd. Any failure (etcd down, a user
//! without write permission) is shown in `/status` and retried with backoff: shipping never
//! depends on it.

use super::client::{self, ClientError};
use super::shared::{ClientSlot, Handle, SharedClient};
use crate::config::{Config, EtcdConfig};
use crate::ports::declared::DeclarationReport;
use crate::source::status::{now_unix_ms, PublishState, PublishView};
use crate::source::Sources;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The reports to publish now, by declaring key (built from the status model); `None`:
/// keep what is written (the reconcile loop has not applied the key's latest value yet).
pub type Reports = Arc<dyn Fn() -> BTreeMap<String, Option<DeclarationReport>> + Send + Sync>;

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a clean stop waits for etcd to revoke the lease.
const REVOKE_AT_STOP: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("etcd status: {0}")]
    Client(#[from] ClientError),
    #[error("etcd status {endpoints}: {op} {key}: {source}")]
    Etcd {
        endpoints: String,
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd status {endpoints}: lease {lease:x}: {what}")]
    Lease {
        endpoints: String,
        lease: i64,
        what: String,
    },
}

impl PublishError {
    /// etcd refused the credentials the client logged in with.
    fn refused(&self) -> bool {
        matches!(self, PublishError::Etcd { source, .. } if client::is_refusal(source))
    }

    /// The member did not answer or broke the connection (not a refusal, nor an election
    /// every member sees): the next session talks to the next endpoint. A client that
    /// could not be built moved on already.
    fn member_failed(&self) -> bool {
        match self {
            PublishError::Client(_) => false,
            PublishError::Etcd { source, .. } => client::is_member_failure(source),
            PublishError::Lease { .. } => true,
        }
    }
}

type Result<T, E = PublishError> = std::result::Result<T, E>;

/// One write to make: a changed report, or the status of a key no longer declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { key: String, value: String },
    Delete { key: String },
}

/// What turns `written` (status key → value held under the lease) into `desired`; a
/// `None` in `desired` keeps what is written.
pub fn writes(
    written: &BTreeMap<String, String>,
    desired: &BTreeMap<String, Option<String>>,
) -> Vec<Write> {
    let puts = desired
        .iter()
        .filter_map(|(key, value)| Some((key, value.as_ref()?)))
        .filter(|(key, value)| written.get(*key) != Some(*value))
        .map(|(key, value)| Write::Put {
            key: key.clone(),
            value: value.clone(),
        });
    let deletes = written
        .keys()
        .filter(|key| !desired.contains_key(*key))
        .map(|key| Write::Delete { key: key.clone() });
    puts.chain(deletes).collect()
}

/// A granted lease and the client it lives on.
struct Session {
    shared: Arc<SharedClient>,
    handle: Handle,
    /// The settings it was made with: others need a new one.
    etcd: EtcdConfig,
    lease: i64,
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
    kept_at: Instant,
    /// Status key → value written under this lease.
    written: BTreeMap<String, String>,
    last_round: Option<Instant>,
}

impl Session {
    /// The shared client moved to another member since the lease was granted (a watch saw
    /// its member fail): keeps the lease alive through the new client, so that the agent
    /// does not hold a connection to a member only for this.
    async fn follow_the_client(&mut self, etcd: &EtcdConfig) -> Result<()> {
        let current = self.shared.client().await?;
        if current.same_client(&self.handle) {
            return Ok(());
        }
        self.handle = current;
        let (keeper, responses) =
            keep_alive_stream(&mut self.handle.client, self.lease, etcd).await?;
        self.keeper = keeper;
        self.responses = responses;
        Ok(())
    }
}

pub struct Publisher {
    config: watch::Receiver<Arc<Config>>,
    sources: Arc<Sources>,
    node: String,
    reports: Reports,
    /// The agent's one etcd client, shared with the watches.
    slot: Arc<ClientSlot>,
    session: Option<Session>,
    backoff: ExponentialBackoff,
}

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

fn endpoints(etcd: &EtcdConfig) -> String {
    etcd.endpoints.join(",")
}

fn enabled(etcd: &EtcdConfig) -> bool {
    etcd.is_enabled() && etcd.status.enabled
}

impl Publisher {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        sources: Arc<Sources>,
        node: &str,
        reports: Reports,
        slot: Arc<ClientSlot>,
    ) -> Self {
        Publisher {
            config,
            sources,
            slot,
            node: node.to_string(),
            reports,
            session: None,
            backoff: new_backoff(),
        }
    }

    /// Publishes until `shutdown`, then revokes the lease: a node stopped cleanly leaves
    /// no status behind.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let config = self.config.borrow_and_update().clone();
            let etcd = &config.etcd;
            let wake = if enabled(etcd) {
                // A frozen etcd must not hold the shutdown for its request timeouts.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = self.attempt(etcd) => Some(next),
                }
            } else {
                self.revoke().await;
                self.update(|p| *p = PublishView::default());
                None
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.config.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
        // Bounded: an etcd that does not answer lets the lease expire instead.
        let _ = tokio::time::timeout(REVOKE_AT_STOP, self.revoke()).await;
    }

    fn update(&self, f: impl FnOnce(&mut PublishView)) {
        self.sources.status().update_publish(f);
    }

    /// One step; returns when to take the next.
    async fn attempt(&mut self, etcd: &EtcdConfig) -> Instant {
        match self.step(etcd).await {
            Ok(next) => {
                self.backoff = new_backoff();
                let session = self.session.as_ref();
                let recovered = self.sources.status().publish_view().error.is_some();
                if recovered {
                    tracing::info!("etcd status: publishing again");
                }
                self.update(|p| {
                    p.state = PublishState::Publishing;
                    p.prefix = etcd.status.key(&self.node, "");
                    p.lease_id = session.map(|s| s.lease);
                    p.keys = session.map_or(0, |s| s.written.len());
                    p.error = None;
                    p.failing_since_ms = None;
                });
                next
            }
            Err(e) => {
                let delay = self.backoff.next().unwrap_or(RETRY_MAX);
                let message = e.to_string();
                if let Some(session) = self.session.as_ref().filter(|_| e.member_failed()) {
                    session.shared.failed(&session.handle, &message).await;
                }
                let view = self.sources.status().publish_view();
                if view.error.as_ref() != Some(&message) {
                    tracing::warn!(retry_in = ?delay, "{message}; shipping goes on");
                }
                // A lease that outlives a failed write (no permission) would hold what it
                // wrote until its TTL; let it go now if etcd answers.
                self.revoke().await;
                self.update(|p| {
                    p.state = PublishState::Failing;
                    p.prefix = etcd.status.key(&self.node, "");
                    p.lease_id = None;
                    p.keys = 0;
                    p.errors += 1;
                    p.failing_since_ms.get_or_insert_with(now_unix_ms);
                    p.error = Some(message);
                });
                Instant::now() + delay
            }
        }
    }

    /// Grants the lease if there is none, keeps it alive, and runs a write round when
    /// the interval since the last one is over.
    async fn step(&mut self, etcd: &EtcdConfig) -> Result<Instant> {
        let changed = self
            .session
            .as_ref()
            .is_some_and(|s| !s.etcd.same_connection(etcd) || s.etcd.status != etcd.status);
        if changed {
            // The old keys are elsewhere, or on another cluster: they go with the lease.
            self.revoke().await;
        }
        let mut session = match self.session.take() {
            Some(session) => session,
            None => grant(etcd, &self.slot).await?,
        };
        let next = match session.follow_the_client(etcd).await {
            Ok(()) => self.keep_and_write(&mut session, etcd).await,
            Err(e) => Err(e),
        };
        self.session = Some(session);
        next
    }

    async fn keep_and_write(&self, session: &mut Session, etcd: &EtcdConfig) -> Result<Instant> {
        let status = &etcd.status;
        let keep_every = status.lease_ttl / 3;
        if session.kept_at.elapsed() >= keep_every {
            keep_alive(session, etcd).await?;
        }
        let due = session
            .last_round
            .is_none_or(|at| at.elapsed() >= status.interval);
        if due {
            let (made, done) = round(session, etcd, self.desired(etcd)).await;
            self.update(|p| p.writes += made as u64);
            done?;
            session.last_round = Some(Instant::now());
        }
        let next_round = session
            .last_round
            .map_or_else(Instant::now, |at| at + status.interval);
        Ok(next_round.min(session.kept_at + keep_every))
    }

    /// Status key → JSON value of every report (`None`: keep what is written).
    fn desired(&self, etcd: &EtcdConfig) -> BTreeMap<String, Option<String>> {
        (self.reports)()
            .into_iter()
            .map(|(key, report)| {
                let value = report.and_then(|r| serde_json::to_string(&r).ok());
                (etcd.status.key(&self.node, &key), value)
            })
            .collect()
    }

    /// Drops the session and revokes its lease (etcd deletes the keys held under it);
    /// best effort, bounded by the request timeout.
    async fn revoke(&mut self) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        if let Err(e) = session.handle.client.lease_revoke(session.lease).await {
            tracing::debug!(
                lease = session.lease,
                "etcd status: cannot revoke the lease ({e}); it expires by itself"
            );
        }
    }
}

async fn grant(etcd: &EtcdConfig, slot: &ClientSlot) -> Result<Session> {
    let shared = slot.for_config(etcd);
    let handle = shared.client().await?;
    let mut client = handle.client.clone();
    let ttl = etcd.status.lease_ttl.as_secs().max(2) as i64;
    let failed = |op: &'static str| {
        move |source| PublishError::Etcd {
            endpoints: endpoints(etcd),
            op,
            key: format!("lease (ttl {ttl}s)"),
            source,
        }
    };
    let granted = async {
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(failed("grant"))?
            .id();
        let (keeper, responses) = keep_alive_stream(&mut client, lease, etcd).await?;
        Ok::<_, PublishError>((lease, keeper, responses))
    };
    let (lease, keeper, responses) = match granted.await {
        Ok(granted) => granted,
        Err(e) => {
            if e.member_failed() {
                shared.failed(&handle, &e.to_string()).await;
            } else if e.refused() {
                // Logged in with credentials etcd no longer takes: the next user (this
                // writer or a watch) builds the shared client again.
                shared.refused(&handle).await;
            }
            return Err(e);
        }
    };
    tracing::info!(
        lease = format!("{lease:x}"),
        ttl,
        "etcd status: lease granted"
    );
    Ok(Session {
        shared,
        handle,
        etcd: etcd.clone(),
        lease,
        keeper,
        responses,
        kept_at: Instant::now(),
        written: BTreeMap::new(),
        last_round: None,
    })
}

/// Opens the stream that keeps `lease` alive, within the request timeout.
async fn keep_alive_stream(
    client: &mut Client,
    lease: i64,
    etcd: &EtcdConfig,
) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
    tokio::time::timeout(etcd.request_timeout, client.lease_keep_alive(lease))
        .await
        .map_err(|_| PublishError::Lease {
            endpoints: endpoints(etcd),
            lease,
            what: "keep-alive stream not opened within request_timeout".into(),
        })?
        .map_err(|source| PublishError::Etcd {
            endpoints: endpoints(etcd),
            op: "keep-alive",
            key: format!("lease {lease:x}"),
            source,
        })
}

async fn keep_alive(session: &mut Session, etcd: &EtcdConfig) -> Result<()> {
    let lease = session.lease;
    let error = |what: String| PublishError::Lease {
        endpoints: endpoints(etcd),
        lease,
        what,
    };
    let answer = tokio::time::timeout(etcd.request_timeout, async {
        session.keeper.keep_alive().await?;
        session.responses.message().await
    })
    .await
    .map_err(|_| error("keep-alive not answered within request_timeout".into()))?
    .map_err(|e| error(format!("keep-alive failed: {e}")))?;
    match answer {
        Some(response) if response.ttl() > 0 => {
            session.kept_at = Instant::now();
            Ok(())
        }
        Some(_) => Err(error(
            "expired (etcd was unreachable for longer than lease_ttl); granting a new one".into(),
        )),
        None => Err(error("keep-alive stream ended".into())),
    }
}

/// Makes the writes that bring etcd to `desired`, in order until one fails; returns how
/// many were made, and the failure.
async fn round(
    session: &mut Session,
    etcd: &EtcdConfig,
    desired: BTreeMap<String, Option<String>>,
) -> (usize, Result<()>) {
    let mut made = 0;
    for write in writes(&session.written, &desired) {
        let (op, key) = match &write {
            Write::Put { key, .. } => ("put", key.clone()),
            Write::Delete { key } => ("delete", key.clone()),
        };
        let done = match write {
            Write::Put { key, value } => {
                let options = PutOptions::new().with_lease(session.lease);
                let put = session
                    .handle
                    .client
                    .put(key.as_str(), value.as_str(), Some(options));
                put.await
                    .map(|_| session.written.insert(key, value))
                    .map(drop)
            }
            Write::Delete { key } => {
                let deleted = session.handle.client.delete(key.as_str(), None).await;
                deleted.map(|_| session.written.remove(&key)).map(drop)
            }
        };
        if let Err(source) = done {
            let error = PublishError::Etcd {
                endpoints: endpoints(etcd),
                op,
                key,
                source,
            };
            return (made, Err(error));
        }
        made += 1;
    }
    (made, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn writes_should_put_only_changed_reports_and_delete_undeclared_keys() {
        let written = map(&[
            ("/s/n//a", "1"),
            ("/s/n//b", "2"),
            ("/s/n//gone", "3"),
            ("/s/n//pending", "5"),
        ]);
        let mut desired: BTreeMap<String, Option<String>> =
            map(&[("/s/n//a", "1"), ("/s/n//b", "2b"), ("/s/n//new", "4")])
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
        // Not applied yet: what is written stays.
        desired.insert("/s/n//pending".into(), None);
        assert_eq!(
            writes(&written, &desired),
            [
                Write::Put {
                    key: "/s/n//b".into(),
                    value: "2b".into()
                },
                Write::Put {
                    key: "/s/n//new".into(),
                    value: "4".into()
                },
                Write::Delete {
                    key: "/s/n//gone".into()
                },
            ]
        );
        let done = map(&[("/s/n//a", "1"), ("/s/n//b", "2b"), ("/s/n//new", "4")]);
        assert!(
            writes(&done, &desired).is_empty(),
            "nothing changed, nothing written"
        );
    }
}
