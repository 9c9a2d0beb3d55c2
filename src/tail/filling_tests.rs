//! The permits to fill a batch (`reader::filling_permits`) are few: a tailer whose topic
//! the sink cannot take yet must not hold one while it waits, or every other topic stops.

use super::checkpoint::Checkpoints;
use super::signal::Stop;
use super::tailer::{Tailer, TailerContext};
use super::wakeup::Wakeups;
use crate::ports::NoEvents;
use crate::record::Batch;
use crate::sink::{Ack, Sink, SinkError};
use crate::spec::{TailerId, TailerSettings};
use crate::telemetry::TailerProgress;
use futures::future::{BoxFuture, FutureExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Never takes a batch to `stalled` (as Kafka while it cannot learn a topic's partitions);
/// takes and acknowledges every other batch at once.
#[derive(Default)]
struct StallingSink {
    /// Calls for the stalled topic, to `prepare` or to `submit`.
    stalled_calls: AtomicUsize,
    received: Mutex<Vec<String>>,
}

const STALLED: &str = "stalled";

impl Sink for StallingSink {
    fn prepare(&self, topic: &Arc<str>) -> Option<BoxFuture<'_, ()>> {
        if &**topic != STALLED {
            return None;
        }
        self.stalled_calls.fetch_add(1, Ordering::SeqCst);
        Some(futures::future::pending().boxed())
    }

    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        if &*batch.topic == STALLED {
            self.stalled_calls.fetch_add(1, Ordering::SeqCst);
            return futures::future::pending().boxed();
        }
        let lines = batch.lines().map(|(_, line)| String::from_utf8_lossy(line));
        let mut received = self.received.lock().unwrap();
        received.extend(lines.map(|line| line.into_owned()));
        futures::future::ready(Ok(futures::future::ready(Ok(())).boxed() as Ack)).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

fn start(ctx: &Arc<TailerContext>, topic: &str, path: &Path, stop: &Stop) {
    let id = TailerId {
        topic: topic.into(),
        path: Arc::from(path),
    };
    let progress = Arc::new(TailerProgress::default());
    let tailer = Tailer::new(id, TailerSettings::for_tests(), ctx.clone(), progress);
    tokio::spawn(tailer.run(stop.clone()));
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("waited 20 s for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailer_waiting_for_its_topic_leaves_the_only_permit_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (checkpoints, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
    let sink = Arc::new(StallingSink::default());
    let ctx = Arc::new(TailerContext {
        sink: sink.clone(),
        checkpoints,
        events: Arc::new(NoEvents),
        claims: Arc::default(),
        wakeups: Wakeups::without_notifications(),
        open_files: Arc::new(Semaphore::new(64)),
        filling: Arc::new(Semaphore::new(1)),
        deleted: Arc::default(),
        throttles: Arc::default(),
    });
    let (stalled, app) = (dir.path().join("stalled.log"), dir.path().join("app.log"));
    std::fs::write(&stalled, "waits for its topic\n").unwrap();
    std::fs::write(&app, "one\ntwo\n").unwrap();
    let stop = Stop::new();

    start(&ctx, STALLED, &stalled, &stop);
    wait_for("the stalled tailer to reach the sink", || {
        sink.stalled_calls.load(Ordering::SeqCst) > 0
    })
    .await;
    start(&ctx, "app", &app, &stop);
    wait_for("the other tailer's lines", || {
        sink.received.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*sink.received.lock().unwrap(), ["one", "two"]);
    assert_eq!(
        ctx.filling.available_permits(),
        1,
        "no permit held while idle"
    );
}
