//! One task per configured key or prefix: list, then watch from the list's revision + 1
//! (no gap). Any stream error, end, cancel or compaction ends the session; the task
//! retries with backoff and re-lists, while the published snapshots stay in force. Every
//! task uses the agent's one [`SharedClient`]; a task whose credentials etcd refused has
//! it rebuilt (once for all tasks) before its next session.

use super::cert;
use super::client;
use super::shared::{Handle, SharedClient};
use super::tracker::{Target, Tracker};
use crate::source::status::{now_unix_ms, WatchKind, WatchState};
use crate::source::Sources;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A watch that lived this long was a working session: the next failure starts the
/// backoff over. A shorter one (a list that succeeds and a watch that breaks at once)
/// keeps backing off, so that such a cycle cannot re-list in a tight loop.
const STABLE_AFTER: Duration = Duration::from_secs(30);

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The delays between sessions.
struct Retry {
    backoff: ExponentialBackoff,
}

impl Retry {
    fn new() -> Self {
        Retry {
            backoff: new_backoff(),
        }
    }

    /// The delay before the next session, after one whose watch lived `watched` (`None`:
    /// it never got to watch). At most `RETRY_MAX`: the jitter adds up to the delay itself,
    /// which would let a watch moved off a lost cluster member wait twice as long.
    fn after(&mut self, watched: Option<Duration>) -> Duration {
        if watched.is_some_and(|lived| lived >= STABLE_AFTER) {
            self.backoff = new_backoff();
        }
        self.backoff.next().unwrap_or(RETRY_MAX).min(RETRY_MAX)
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ended {
    /// Names the key and the reason.
    message: String,
    /// etcd refused the credentials (or they could not be read): the source cannot sync
    /// until they change, so it is not ready.
    refused: bool,
    /// The member did not answer, broke the connection or has no leader: the next session
    /// talks to the next endpoint.
    member_failed: bool,
}

impl Ended {
    /// With the reason `cert_file` (when one is configured) is not valid at `now`. etcd
    /// refuses an expired client certificate during the handshake, which reaches the
    /// client either as a closed connection (no reason at all) or as a TLS alert
    /// ("BadCertificate", a refusal that does not say why): either way the reason is the
    /// certificate's dates, and the session was refused.
    fn explained(self, cert_file: &std::path::Path, now: chrono::DateTime<chrono::Utc>) -> Ended {
        if cert_file.as_os_str().is_empty() {
            return self;
        }
        match cert::problem(cert_file, now) {
            Some(problem) => Ended {
                message: format!("{}; {problem}", self.message),
                refused: true,
                member_failed: false,
            },
            None => self,
        }
    }
}

pub struct Watcher {
    target: Target,
    shared: Arc<SharedClient>,
    sources: Arc<Sources>,
    tracker: Tracker,
    /// The client of the current (or last) session.
    client: Option<Handle>,
    synced_once: bool,
    /// When the current session's watch was established.
    watching_since: Option<tokio::time::Instant>,
}

impl Watcher {
    pub fn new(
        target: Target,
        shared: Arc<SharedClient>,
        sources: Arc<Sources>,
        tracker: Tracker,
    ) -> Self {
        sources
            .status()
            .update_watch(target.kind, &target.key, |_| {});
        Watcher {
            target,
            shared,
            sources,
            tracker,
            client: None,
            synced_once: false,
            watching_since: None,
        }
    }

    /// Lists and watches until `shutdown`; never gives up on a key.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut retry = Retry::new();
        let mut last_error: Option<Ended> = None;
        loop {
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = self.session() => self.explain(ended),
            };
            if let Some(handle) = self.client.take() {
                if ended.refused {
                    // Read the files and log in again next time (once for every watcher).
                    self.shared.refused(&handle).await;
                } else if ended.member_failed {
                    // Once for every watcher on that member.
                    self.shared.failed(&handle, &ended.message).await;
                }
            }
            if !self.synced_once {
                let served = self.tracker.serve_cache();
                if served > 0 {
                    tracing::warn!(key = %self.target.key, served, "etcd unreachable; serving the cached snapshots");
                }
            }
            let watched = self.watching_since.take().map(|since| since.elapsed());
            let delay = retry.after(watched);
            // Log each distinct error once, not every retry.
            if last_error.as_ref() != Some(&ended) {
                tracing::warn!(retry_in = ?delay, "{}; running tailers keep running", ended.message);
                last_error = Some(ended.clone());
            }
            let target = &self.target;
            self.sources
                .status()
                .update_watch(target.kind, &target.key, |w| {
                    w.state = if ended.refused {
                        WatchState::Unauthorized
                    } else {
                        WatchState::Retrying
                    };
                    w.error = Some(ended.message);
                });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// A session that failed on the client certificate is explained by the certificate.
    fn explain(&self, ended: Ended) -> Ended {
        ended.explained(&self.shared.config().tls.cert_file, chrono::Utc::now())
    }

    /// One list + watch; returns why it ended.
    async fn session(&mut self) -> Ended {
        let key = self.target.key.clone();
        let prefix = self.target.kind == WatchKind::Prefix;
        let what = if prefix { "prefix" } else { "key" };
        let ended = |message: String, refused: bool, member_failed: bool| Ended {
            message: format!("etcd {what} {key}: {message}"),
            refused,
            member_failed,
        };
        // Anything but a refusal or a compaction is the member's failure.
        let failed = |message: String, refused: bool| ended(message, refused, !refused);
        let error = |what: &str, e: &etcd_client::Error| {
            let message = format!("{what}: {e}");
            ended(message, client::is_refusal(e), client::is_member_failure(e))
        };
        let mut client = match self.shared.client().await {
            Ok(handle) => {
                self.client = Some(handle.clone());
                handle.client
            }
            Err(e) => {
                // `client()` moved to the next endpoint already if it could not connect.
                return ended(e.to_string(), e.is_refusal(), false);
            }
        };
        let options = prefix.then(|| GetOptions::new().with_prefix());
        let response = match client.get(key.as_str(), options).await {
            Ok(r) => r,
            Err(e) => return error("list failed", &e),
        };
        let revision = response.header().map_or(0, |h| h.revision());
        let listed = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let k = kv.key_str().ok()?.to_string();
                Some((k, kv.mod_revision(), kv.value().to_vec()))
            })
            .collect();
        self.tracker.relist(listed);
        self.synced(revision);

        let mut options = WatchOptions::new().with_start_revision(revision + 1);
        if prefix {
            options = options.with_prefix();
        }
        let mut stream = match client.watch(key.as_str(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => return error("watch failed", &e),
        };
        self.watching_since = Some(tokio::time::Instant::now());
        loop {
            let response = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return failed("watch stream ended".into(), false),
                Err(e) => return error("watch failed", &e),
            };
            if response.canceled() {
                let reason = response.cancel_reason();
                return match response.compact_revision() {
                    0 => failed(
                        format!("watch canceled: {reason}"),
                        client::reason_is_refusal(reason),
                    ),
                    compacted => ended(
                        format!("revision compacted (at {compacted}); re-listing"),
                        false,
                        false,
                    ),
                };
            }
            // The first reply only confirms the watch (`created`, no events).
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(k) = kv.key_str() else { continue };
                match event.event_type() {
                    EventType::Put => self.tracker.put(k, kv.mod_revision(), kv.value()),
                    EventType::Delete => self.tracker.delete(k),
                }
            }
            if let Some(header) = response.header() {
                self.synced(header.revision());
            }
        }
    }

    fn synced(&mut self, revision: i64) {
        if !self.synced_once {
            tracing::info!(key = %self.target.key, revision, "etcd synced");
        }
        self.synced_once = true;
        let target = &self.target;
        self.sources
            .status()
            .update_watch(target.kind, &target.key, |w| {
                w.state = WatchState::Synced;
                w.revision = w.revision.max(revision);
                w.last_sync_unix_ms = Some(now_unix_ms());
                w.synced_once = true;
                w.from_cache = false;
                w.error = None;
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_client_certificate_should_explain_a_closed_connection_and_a_tls_alert() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["agent".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 6, 1);
        let cert = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let cert_file = dir.path().join("agent.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        let expired = "2031-01-01T00:00:00Z".parse().unwrap();
        let why = format!(
            "etcd.tls.cert_file {}: the client certificate expired at 2030-06-01T00:00:00+00:00",
            cert_file.display()
        );
        // How etcd's refusal reaches the client depends on the handshake's timing: the
        // connection closed without a word, or rustls read the alert etcd sent.
        let closed = Ended {
            message: "etcd key /k: watch failed: h2 protocol error".to_string(),
            refused: false,
            member_failed: true,
        };
        let alert = Ended {
            message: "etcd key /k: list failed: received fatal alert: BadCertificate".to_string(),
            refused: true,
            member_failed: false,
        };
        for ended in [closed, alert] {
            let explained = ended.clone().explained(&cert_file, expired);
            assert_eq!(
                explained,
                Ended {
                    message: format!("{}; {why}", ended.message),
                    refused: true,
                    member_failed: false,
                }
            );
            // A valid certificate, or none, leaves the reason as it was.
            let valid = "2025-01-01T00:00:00Z".parse().unwrap();
            assert_eq!(ended.clone().explained(&cert_file, valid), ended);
            assert_eq!(
                ended.clone().explained(std::path::Path::new(""), expired),
                ended
            );
        }
    }

    #[test]
    fn only_a_watch_that_lived_should_start_the_backoff_over() {
        let mut retry = Retry::new();
        let first = retry.after(None);
        assert!(first >= RETRY_MIN && first <= RETRY_MIN * 2, "{first:?}");
        // Listed fine, watch broke at once, again and again: the delays keep growing.
        let mut delays = Vec::new();
        for _ in 0..6 {
            delays.push(retry.after(Some(Duration::from_millis(10))));
        }
        assert!(delays[5] >= RETRY_MAX, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= RETRY_MAX), "{delays:?}");
        let after_stable = retry.after(Some(STABLE_AFTER));
        assert!(after_stable <= RETRY_MIN * 2, "{after_stable:?}");
    }
}
