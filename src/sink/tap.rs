//! `logcatch tap`: the records the sink ships, streamed to whoever asks (`GET /tap`).
//!
//! Free while nobody taps: a submit reads one counter. While someone does, each batch the
//! sink took is shared on a broadcast ring of [`RING`] batches (one copy of the batch,
//! made after the sink took it), and each tap renders the batches it wants on its own
//! task with the sink's own encoding ([`Sink::shipped`]). A tap that falls behind loses
//! the oldest batches of the ring and is told how many records it skipped: the ring never
//! waits for a tap, so a slow or stuck tap neither slows nor holds up shipping, and the
//! memory it can pin is the ring's.

use super::{Ack, Shipped, Sink, SinkError};
use crate::record::Batch;
use futures::future::{BoxFuture, FutureExt};
use globset::{GlobBuilder, GlobMatcher};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Batches the ring holds for taps that fall behind (a batch is at most about 512 KiB of
/// lines: the ring pins at most about 8 MiB, however many taps there are).
pub const RING: usize = 16;

/// Taps served at once: each renders what it wants on the agent's runtime.
pub const MAX_TAPS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("path {pattern:?}: invalid glob: {message}")]
    Glob { pattern: String, message: String },
    #[error("{MAX_TAPS} taps are connected already, the most served at once")]
    TooMany,
}

/// A batch the sink took, and how many records were published before it (from which a
/// tap that fell behind learns how many it skipped).
#[derive(Clone)]
struct Published {
    batch: Arc<Batch>,
    first: u64,
}

/// The ring the sink publishes to and taps subscribe to.
pub struct Tap {
    sender: broadcast::Sender<Published>,
    /// Taps connected: publishing costs nothing while it is 0.
    taps: AtomicUsize,
    /// Records published so far; sent under this lock so that the ring's order and the
    /// counts agree.
    published: Mutex<u64>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            sender: broadcast::channel(RING).0,
            taps: AtomicUsize::new(0),
            published: Mutex::new(0),
        }
    }
}

impl Tap {
    /// Whether anyone taps (one relaxed load: what a submit costs while nobody does).
    pub fn tapping(&self) -> bool {
        self.taps.load(Ordering::Relaxed) > 0
    }

    fn publish(&self, batch: Batch) {
        let records = batch.len() as u64;
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let first = *published;
        *published += records;
        // No receiver left (the last tap went meanwhile): nothing to do.
        let _ = self.sender.send(Published {
            batch: Arc::new(batch),
            first,
        });
    }

    /// Taps connected now (`/status`).
    pub fn taps(&self) -> usize {
        self.taps.load(Ordering::Relaxed)
    }

    /// A tap: the batches published from now on.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, TapError> {
        if self.taps.fetch_add(1, Ordering::Relaxed) >= MAX_TAPS {
            self.taps.fetch_sub(1, Ordering::Relaxed);
            return Err(TapError::TooMany);
        }
        // Under the lock publishing holds: the receiver's first batch is the one after
        // `next` records.
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Subscription {
            tap: self.clone(),
            receiver: self.sender.subscribe(),
            next: *published,
        })
    }
}

/// One tap's view of the ring; counted while it lives.
pub struct Subscription {
    tap: Arc<Tap>,
    receiver: broadcast::Receiver<Published>,
    /// The first record of the batch expected next.
    next: u64,
}

impl Subscription {
    /// The next batch, and how many records were skipped before it (the tap fell behind
    /// the ring); `None` once the sink is gone.
    pub async fn recv(&mut self) -> Option<(Arc<Batch>, u64)> {
        loop {
            match self.receiver.recv().await {
                Ok(published) => {
                    let skipped = published.first.saturating_sub(self.next);
                    self.next = published.first + published.batch.len() as u64;
                    return Some((published.batch, skipped));
                }
                // The batch after the gap tells how many records it held.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.tap.taps.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which batches a tap wants: one topic, paths matching a glob.
#[derive(Debug, Default)]
pub struct Filter {
    topic: Option<String>,
    path: Option<GlobMatcher>,
}

impl Filter {
    pub fn new(topic: Option<&str>, path: Option<&str>) -> Result<Filter, TapError> {
        let path = path
            .map(|pattern| {
                GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map(|glob| glob.compile_matcher())
                    .map_err(|e| TapError::Glob {
                        pattern: pattern.to_string(),
                        message: e.kind().to_string(),
                    })
            })
            .transpose()?;
        Ok(Filter {
            topic: topic.map(str::to_string),
            path,
        })
    }

    pub fn matches(&self, batch: &Batch) -> bool {
        self.topic.as_deref().is_none_or(|t| *batch.topic == *t)
            && self.path.as_ref().is_none_or(|g| g.is_match(&batch.path))
    }
}

/// A shipped record as one line of JSON:
/// `{"topic", "key", "headers": {name: value}, "value", "path", "offset"}`, bytes that
/// are not UTF-8 shown lossily.
pub fn write_json_line(record: &Shipped, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Line<'a> {
        topic: &'a str,
        key: Option<Cow<'a, str>>,
        headers: Headers<'a>,
        value: Cow<'a, str>,
        path: Cow<'a, str>,
        offset: u64,
    }
    struct Headers<'a>(&'a [(String, Vec<u8>)]);
    impl Serialize for Headers<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (name, value) in self.0 {
                map.serialize_entry(name, &String::from_utf8_lossy(value))?;
            }
            map.end()
        }
    }
    let line = Line {
        topic: &record.topic,
        key: record.key.as_deref().map(String::from_utf8_lossy),
        headers: Headers(&record.headers),
        value: String::from_utf8_lossy(&record.value),
        path: record.path.to_string_lossy(),
        offset: record.offset,
    };
    serde_json::to_writer(&mut *out, &line).expect("serializing to memory");
    out.push(b'\n');
}

/// A sink that shares what it ships with the taps: `inner` with a [`Tap`] in front.
pub struct TapSink {
    inner: Arc<dyn Sink>,
    tap: Arc<Tap>,
}

impl TapSink {
    pub fn new(inner: Arc<dyn Sink>, tap: Arc<Tap>) -> Self {
        TapSink { inner, tap }
    }
}

impl Sink for TapSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        if batch.is_empty() || !self.tap.tapping() {
            return self.inner.submit(batch);
        }
        async move {
            let copy = batch.clone();
            let ack = self.inner.submit(batch).await?;
            self.tap.publish(copy);
            Ok(ack)
        }
        .boxed()
    }

    fn prepare(&self, topic: &Arc<str>) -> Option<BoxFuture<'_, ()>> {
        self.inner.prepare(topic)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        self.inner.flush()
    }

    fn shipped(&self, batch: &Batch) -> Result<Vec<Shipped>, SinkError> {
        self.inner.shipped(batch)
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn connect_error(&self) -> Option<String> {
        self.inner.connect_error()
    }

    fn in_flight_bytes(&self) -> u64 {
        self.inner.in_flight_bytes()
    }

    fn buffer_bytes(&self) -> u64 {
        self.inner.buffer_bytes()
    }

    fn producers(&self) -> u64 {
        self.inner.producers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::NullSink;
    use std::path::Path;

    fn batch(topic: &str, path: &str, lines: usize) -> Batch {
        let mut batch = Batch::new(topic.into(), Path::new(path).into());
        for i in 0..lines {
            batch.push(i as u64 * 10, format!("line {i}").as_bytes());
        }
        batch
    }

    #[tokio::test]
    async fn a_sink_should_publish_nothing_while_nobody_taps_and_every_batch_while_one_does() {
        let tap = Arc::new(Tap::default());
        let null = Arc::new(NullSink::default());
        let sink = TapSink::new(null.clone(), tap.clone());
        sink.submit(batch("t", "/a", 2))
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(!tap.tapping());
        assert_eq!(*tap.published.lock().unwrap(), 0, "nothing published");

        let mut subscription = tap.subscribe().unwrap();
        assert!(tap.tapping());
        sink.submit(batch("t", "/a", 3))
            .await
            .unwrap()
            .await
            .unwrap();
        sink.submit(batch("t", "/a", 0))
            .await
            .unwrap()
            .await
            .unwrap();
        sink.submit(batch("u", "/b", 1))
            .await
            .unwrap()
            .await
            .unwrap();
        let (first, skipped) = subscription.recv().await.unwrap();
        assert_eq!((first.len(), skipped), (3, 0));
        let (second, skipped) = subscription.recv().await.unwrap();
        assert_eq!((&*second.topic, second.len(), skipped), ("u", 1, 0));
        assert_eq!(null.lines(), 6, "the sink got every batch");
        drop(subscription);
        assert!(!tap.tapping());
    }

    #[tokio::test]
    async fn a_tap_that_falls_behind_should_be_told_how_many_records_it_skipped() {
        let tap = Arc::new(Tap::default());
        let sink = TapSink::new(Arc::new(NullSink::default()), tap.clone());
        let mut subscription = tap.subscribe().unwrap();
        // Batch i holds i + 1 records; the ring keeps the last RING batches.
        let sent = RING + 5;
        for i in 0..sent {
            sink.submit(batch("t", "/a", i + 1))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let (batch, skipped) = subscription.recv().await.unwrap();
        assert_eq!(batch.len(), 6, "the oldest batch the ring still holds");
        assert_eq!(skipped, 1 + 2 + 3 + 4 + 5);
        let mut received = batch.len();
        for _ in 1..RING {
            let (batch, skipped) = subscription.recv().await.unwrap();
            assert_eq!(skipped, 0);
            received += batch.len();
        }
        assert_eq!(received + 15, (1..=sent).sum::<usize>());
    }

    #[test]
    fn taps_should_be_refused_over_the_most_served_at_once() {
        let tap = Arc::new(Tap::default());
        let taps: Vec<_> = (0..MAX_TAPS).map(|_| tap.subscribe().unwrap()).collect();
        assert!(matches!(tap.subscribe(), Err(TapError::TooMany)));
        drop(taps);
        assert!(tap.subscribe().is_ok());
    }

    #[test]
    fn a_filter_should_match_the_topic_and_a_path_glob() {
        let all = Filter::new(None, None).unwrap();
        let topic = Filter::new(Some("app"), None).unwrap();
        let glob = Filter::new(None, Some("/var/log/*.log")).unwrap();
        let both = Filter::new(Some("app"), Some("/var/log/a.log")).unwrap();
        for (path, topic_name, want) in [
            ("/var/log/a.log", "app", [true, true, true, true]),
            ("/var/log/a.log", "other", [true, false, true, false]),
            ("/var/log/sub/b.log", "app", [true, true, false, false]),
            ("/var/log/b.txt", "app", [true, true, false, false]),
        ] {
            let batch = batch(topic_name, path, 1);
            let got = [&all, &topic, &glob, &both].map(|f| f.matches(&batch));
            assert_eq!(got, want, "{topic_name} {path}");
        }
        let error = Filter::new(None, Some("/var/log/[a.log")).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("path \"/var/log/[a.log\": invalid glob"));
    }

    #[test]
    fn a_shipped_record_should_be_one_json_line() {
        let record = Shipped {
            topic: "app".into(),
            key: Some(b"web-1".to_vec()),
            headers: vec![
                ("cluster".into(), b"eu".to_vec()),
                ("bad".into(), vec![0xff]),
            ],
            value: b"GET / 200".to_vec(),
            path: Path::new("/var/log/a.log").into(),
            offset: 42,
        };
        let mut out = Vec::new();
        write_json_line(&record, &mut out);
        write_json_line(
            &Shipped {
                key: None,
                ..record
            },
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"topic":"app","key":"web-1","headers":{"cluster":"eu","bad":"�"},"value":"GET / 200","path":"/var/log/a.log","offset":42}"#
        );
        assert!(lines[1].contains(r#""key":null"#));
        assert!(text.ends_with('\n'));
    }
}
