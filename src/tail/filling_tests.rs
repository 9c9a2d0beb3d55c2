//! Tailers against sinks that hold batches. The permits to fill a batch
//! (`reader::filling_permits`) are few: a tailer whose topic the sink cannot take yet must
//! not hold one while it waits, or every other topic stops. And an idle tailer, which
//! acknowledgements do not wake (`idle.rs`), takes one that comes while it waits within
//! `ACKS_TAKEN_WITHIN`. A file written more often than `tail.min_read_interval` is read
//! that often, a few writes at a time. And a file rotated away while the path was empty
//! is read before the one the tailer then opens there.

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
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Never takes a batch to `stalled` (as Kafka while it cannot learn a topic's partitions);
/// takes and acknowledges every other batch at once.
#[derive(Default)]
struct StallingSink {
    /// Calls for the stalled topic, to `prepare` or to `submit`.
    stalled_calls: AtomicUsize,
    received: Mutex<Vec<String>>,
    /// Batches taken (of other topics).
    batches: AtomicUsize,
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
        self.batches.fetch_add(1, Ordering::SeqCst);
        let lines = batch.lines().map(|(_, line)| String::from_utf8_lossy(line));
        let mut received = self.received.lock().unwrap();
        received.extend(lines.map(|line| line.into_owned()));
        futures::future::ready(Ok(futures::future::ready(Ok(())).boxed() as Ack)).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// Takes every batch at once and acknowledges each when `release` gets a permit.
struct HoldingSink {
    received: AtomicUsize,
    release: Arc<Semaphore>,
}

impl Sink for HoldingSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        self.received.fetch_add(batch.len(), Ordering::SeqCst);
        let release = self.release.clone();
        let ack = async move {
            release.acquire().await.expect("never closed").forget();
            Ok(())
        };
        futures::future::ready(Ok(ack.boxed() as Ack)).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

fn context(sink: Arc<dyn Sink>, state: &Path, wakeups: Arc<Wakeups>) -> Arc<TailerContext> {
    let (checkpoints, _) = Checkpoints::open(state).unwrap();
    Arc::new(TailerContext {
        sink,
        checkpoints,
        events: Arc::new(NoEvents),
        claims: Arc::default(),
        wakeups,
        open_files: Arc::new(Semaphore::new(64)),
        filling: Arc::new(Semaphore::new(1)),
        deleted: Arc::default(),
        throttles: Arc::default(),
    })
}

fn start(ctx: &Arc<TailerContext>, topic: &str, path: &Path, stop: &Stop) -> Arc<TailerProgress> {
    start_with(ctx, topic, path, stop, TailerSettings::for_tests())
}

fn start_with(
    ctx: &Arc<TailerContext>,
    topic: &str,
    path: &Path,
    stop: &Stop,
    settings: TailerSettings,
) -> Arc<TailerProgress> {
    start_counted(ctx, topic, path, stop, settings).0
}

/// [`start_with`], and how often the tailer's task was polled (once, then once a
/// wake-up).
fn start_counted(
    ctx: &Arc<TailerContext>,
    topic: &str,
    path: &Path,
    stop: &Stop,
    settings: TailerSettings,
) -> (Arc<TailerProgress>, Arc<AtomicUsize>) {
    let id = TailerId {
        topic: topic.into(),
        path: Arc::from(path),
    };
    let progress = Arc::new(TailerProgress::default());
    let tailer = Tailer::new(id, settings, ctx.clone(), progress.clone());
    let polls = Arc::new(AtomicUsize::new(0));
    let mut run = Box::pin(tailer.run(stop.clone()));
    let counted = polls.clone();
    tokio::spawn(std::future::poll_fn(move |cx| {
        counted.fetch_add(1, Ordering::SeqCst);
        run.as_mut().poll(cx)
    }));
    (progress, polls)
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
    let sink = Arc::new(StallingSink::default());
    let state = dir.path().join("state");
    let ctx = context(sink.clone(), &state, Wakeups::without_notifications());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tailer_should_take_an_acknowledgement_within_two_seconds_without_a_write() {
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let release = Arc::new(Semaphore::new(0));
    let sink = Arc::new(HoldingSink {
        received: AtomicUsize::new(0),
        release: release.clone(),
    });
    // With notifications the idle waits grow towards minutes: only the bound on a wait
    // while batches are in flight ends them sooner.
    let ctx = context(sink.clone(), &state.path().join("state"), Wakeups::new());
    let path = dir.path().join("app.log");
    std::fs::write(&path, "one\n").unwrap();
    let stop = Stop::new();
    let progress = start(&ctx, "app", &path, &stop);
    wait_for("the line to reach the sink", || {
        sink.received.load(Ordering::SeqCst) == 1
    })
    .await;
    // Idle long enough for its waits (20 ms doubling: 5.1 s, then 10.2 s) to pass 2 s.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(progress.acked(), 0, "nothing acknowledged yet");

    release.add_permits(1);
    let released = Instant::now();
    wait_for("the acknowledgement to be taken", || progress.acked() == 4).await;
    let took = released.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "the idle tailer took the acknowledgement after {took:?}, not within 2 s"
    );
    stop.cancel();
}

/// A tailer of `app.log` (its first line `first`) into a [`StallingSink`] with real
/// notifications and `min_read_interval: interval`; no look at the file but those
/// notifications start. Returns once `first` arrived.
async fn follow_notified(first: &str, interval: Duration) -> Followed {
    let settings = TailerSettings {
        min_read_interval: interval,
        poll_interval: Duration::from_secs(30),
        ..TailerSettings::for_tests()
    };
    follow(first, settings).await
}

/// A tailer of `app.log`, holding the line `first`, with `settings`, once it shipped it.
async fn follow(first: &str, settings: TailerSettings) -> Followed {
    let (dir, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sink = Arc::new(StallingSink::default());
    let wakeups = Wakeups::new();
    let ctx = context(sink.clone(), &state.path().join("state"), wakeups.clone());
    let path = dir.path().join("app.log");
    std::fs::write(&path, format!("{first}\n")).unwrap();
    let stop = Stop::new();
    let (progress, polls) = start_counted(&ctx, "app", &path, &stop, settings);
    let followed = Followed {
        dirs: (dir, state),
        sink,
        path,
        stop,
        progress,
        polls,
        wakeups,
    };
    wait_for("the first line", || followed.received() == 1).await;
    followed
}

struct Followed {
    /// The log directory and the state directory.
    dirs: (tempfile::TempDir, tempfile::TempDir),
    sink: Arc<StallingSink>,
    path: std::path::PathBuf,
    stop: Stop,
    progress: Arc<TailerProgress>,
    /// How often the tailer's task was polled.
    polls: Arc<AtomicUsize>,
    wakeups: Arc<Wakeups>,
}

impl Followed {
    fn received(&self) -> usize {
        self.sink.received.lock().unwrap().len()
    }

    /// Writes the lines `1..=lines` a line at a time, 25 ms apart, and waits until each
    /// arrived once, in order (after the first, `0`); returns the batches and the polls
    /// of the tailer's task it took.
    async fn write_line_by_line(&self, lines: usize) -> (usize, usize) {
        let batches_before = self.sink.batches.load(Ordering::SeqCst);
        let polls_before = self.polls.load(Ordering::SeqCst);
        for i in 1..=lines {
            append(&self.path, &i.to_string());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        wait_for("every line", || self.received() == lines + 1).await;
        let want: Vec<String> = (0..=lines).map(|i| i.to_string()).collect();
        assert_eq!(
            *self.sink.received.lock().unwrap(),
            want,
            "each line once, in order"
        );
        (
            self.sink.batches.load(Ordering::SeqCst) - batches_before,
            self.polls.load(Ordering::SeqCst) - polls_before,
        )
    }
}

/// Appends `line` and a newline to `path`: one write, as a logger's.
fn append(path: &Path, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_quiet_spell_should_be_read_at_once_and_the_next_after_the_interval() {
    // Below `ACKS_TAKEN_WITHIN`, which would end the wait sooner; no look at the file
    // meanwhile but the one notifications start.
    let interval = Duration::from_millis(1500);
    let followed = follow_notified("first", interval).await;
    let (sink, path, received) = (&followed.sink, &followed.path, || followed.received());
    // A first notified read: the next one learns the file's rate from it.
    append(path, "notified");
    wait_for("the notified line", || received() == 2).await;
    // Quiet since: the write's notification ends the wait at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = Instant::now();
    append(path, "quiet spell over");
    wait_for("the line after the quiet spell", || received() == 3).await;
    let took = written.elapsed();
    assert!(took < interval / 2, "read after {took:?}, not at once");
    // Written right after that read: read `interval` after it, not before.
    append(path, "soon after");
    wait_for("the line written soon after", || received() == 4).await;
    let took = written.elapsed();
    assert!(
        took >= interval - Duration::from_millis(100),
        "read {took:?} after the write before it, within {interval:?}"
    );
    assert_eq!(
        *sink.received.lock().unwrap(),
        ["first", "notified", "quiet spell over", "soon after"]
    );
    followed.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_a_line_at_a_time_should_be_read_a_few_lines_at_a_time() {
    let followed = follow_notified("0", Duration::from_millis(300)).await;
    // 40 writes of a line, 25 ms apart: a second, so about four reads (one a line without
    // the interval).
    let (batches, _) = followed.write_line_by_line(40).await;
    assert!(batches <= 10, "40 writes in {batches} batches");
    followed.stop.cancel();
}

/// The writes between two reads do not wake the tailer: their notification is taken by
/// the wait after the read, which then sleeps until the next read is due. (A wait that
/// woke for each notification only to go on waiting would cost a thousand files written
/// a line at a time two wake-ups a read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_more_often_than_it_is_read_should_wake_its_tailer_about_once_a_read() {
    let followed = follow_notified("0", Duration::from_millis(250)).await;
    // 80 writes of a line, 25 ms apart: two seconds, about eight reads.
    let (batches, polls) = followed.write_line_by_line(80).await;
    assert!(batches <= 12, "80 writes in {batches} batches");
    assert!(
        polls <= batches * 3 / 2 + 2,
        "{polls} wake-ups of the tailer for {batches} reads"
    );
    followed.stop.cancel();
}

/// A file written more often than it may be read is read on a timer, its writes leaving
/// the event thread alone (`Idle::polled`); quiet again, it is woken by its writes: the
/// first after the quiet spell is read at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_more_often_than_it_is_read_should_be_read_on_a_timer_until_it_is_quiet() {
    let interval = Duration::from_millis(250);
    let followed = follow_notified("0", interval).await;
    let (path, wakeups) = (&followed.path, &followed.wakeups);
    // A line every 25 ms until the tailer reads on a timer (after three reads that found
    // the file written again since), and a second more.
    let mut written = 0;
    let mut polled_at = None;
    while polled_at.is_none_or(|at| written < at + 40) {
        written += 1;
        append(path, &written.to_string());
        tokio::time::sleep(Duration::from_millis(25)).await;
        if polled_at.is_none() && wakeups.writes_off() == 1 {
            polled_at = Some(written);
        }
        assert!(written < 200, "never read on a timer");
    }
    assert_eq!(wakeups.writes_off(), 1, "read on a timer while written");
    wait_for("every line", || followed.received() == written + 1).await;
    // Quiet: a read finds nothing, and its writes wake it again.
    wait_for("wake-ups by writes again", || wakeups.writes_off() == 0).await;
    tokio::time::sleep(interval * 2).await;
    let quiet_over = Instant::now();
    append(path, "after the quiet spell");
    wait_for("the line after the quiet spell", || {
        followed.received() == written + 2
    })
    .await;
    let took = quiet_over.elapsed();
    assert!(took < interval / 2, "read after {took:?}, not at once");
    let mut want: Vec<String> = (0..=written).map(|i| i.to_string()).collect();
    want.push("after the quiet spell".into());
    assert_eq!(
        *followed.sink.received.lock().unwrap(),
        want,
        "each line once, in order"
    );
    followed.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_fast_should_be_read_as_soon_as_enough_is_there() {
    let interval = Duration::from_secs(2);
    let followed = follow_notified("0", interval).await;
    let (sink, path, received) = (&followed.sink, &followed.path, || followed.received());
    // Chunks of 32 KiB, each written once the one before was read: the wait learns the
    // file's rate from them and ends as soon as a read finds 16 KiB, well within the
    // interval.
    let chunk = |k: usize| -> Vec<String> {
        (0..320)
            .map(|i| format!("{k:03} {i:03} {}", "x".repeat(92)))
            .collect()
    };
    let mut latencies = Vec::new();
    for k in 0..20 {
        let lines = chunk(k);
        let want = received() + lines.len();
        let written = Instant::now();
        append(path, &lines.join("\n"));
        wait_for("the chunk", || received() == want).await;
        latencies.push(written.elapsed());
    }
    // A notification that brings no data (a chmod; as a write already read with the one
    // before) does not make the file slow: the next chunk is read as soon.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = chunk(20);
    let want = received() + lines.len();
    let written = Instant::now();
    append(path, &lines.join("\n"));
    wait_for("the chunk after the empty notification", || {
        received() == want
    })
    .await;
    latencies.push(written.elapsed());
    let want: Vec<String> = std::iter::once("0".to_string())
        .chain((0..=20).flat_map(chunk))
        .collect();
    assert_eq!(
        *sink.received.lock().unwrap(),
        want,
        "each line once, in order"
    );
    let last = &latencies[15..];
    assert!(
        last.iter().all(|took| *took < Duration::from_millis(300)),
        "the last chunks read after {last:?}, not as soon as 16 KiB were there (all: {latencies:?})"
    );
    followed.stop.cancel();
}

/// A followed file's directory removed and made again: the directory's watch ended with
/// it, so no notification comes for the new one. The tailer polls then, at most
/// `MAX_IDLE_POLL` (2 s) apart, rather than wait for notifications that never come
/// (its polls backed off to 8 s, 16 s … up to 5 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_directory_was_made_again_should_be_read_within_the_poll_cap() {
    let settings = TailerSettings {
        poll_interval: Duration::from_millis(1500),
        ..TailerSettings::for_tests()
    };
    let followed = follow("first", settings).await;
    let dir = followed.dirs.0.path();
    std::fs::remove_dir_all(dir).unwrap();
    // The polls back off meanwhile: 1.5, 3, 6 s (10.5 s), then a wait of 12 s.
    tokio::time::sleep(Duration::from_secs(13)).await;
    std::fs::create_dir(dir).unwrap();
    let written = Instant::now();
    std::fs::write(&followed.path, "again\n").unwrap();
    wait_for("the line in the directory made again", || {
        followed.received() == 2
    })
    .await;
    let took = written.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "read {took:?} after it was written"
    );
    assert_eq!(*followed.sink.received.lock().unwrap(), ["first", "again"]);
    followed.stop.cancel();
}

/// A file the tailer never found at the path: its file renamed away (lingering for
/// `rotate_wait`) when the path was empty, the tailer opens the path's next file itself
/// once one is there — after the files rotated away beside it meanwhile (born between the
/// two), as when it follows a rotation it sees. (A chatty container rotated every 80 ms
/// may put a file at the path and rotate it away between two looks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rotated_away_while_the_path_was_empty_should_be_read_before_the_next() {
    let settings = TailerSettings {
        rotate_wait: Duration::from_secs(60),
        poll_interval: Duration::from_secs(30),
        ..TailerSettings::for_tests()
    };
    let followed = follow("a", settings).await;
    let (path, dir) = (&followed.path, followed.dirs.0.path());
    let received = || followed.sink.received.lock().unwrap().clone();
    assert_eq!(received(), ["a"]);
    std::fs::rename(path, dir.join("app.log.1")).unwrap();
    wait_for("the tailer to find the path empty", || {
        followed.progress.state() == crate::telemetry::TailerState::Waiting
    })
    .await;
    // Birth times tick every few milliseconds: keep the files apart.
    std::thread::sleep(Duration::from_millis(20));
    // At the path and rotated away before the tailer looked (no notification for it).
    std::fs::write(dir.join("app.log.2"), "b\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(path, "c\n").unwrap();
    wait_for("c", || received().last().is_some_and(|l| l == "c")).await;
    assert_eq!(received(), ["a", "b", "c"], "b read, before c");
    followed.stop.cancel();
}
