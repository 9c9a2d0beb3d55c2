//! A model-based property test of the tailer (Vector's
//! `lib/file-source/src/file_watcher/tests/experiment.rs`): random sequences of writes,
//! partial writes, rename rotations, copytruncates, deletions, re-creations (which may
//! reuse the inode), graceful restarts, crashes and sink failures are applied to real files
//! in a temp dir and to a model, on tokio's paused clock, with a sink that acknowledges
//! late or fails. What the sink received must match the model: every line that must
//! arrive arrived, each file's lines in order, and a line twice only after a crash or a
//! sink failure.
//!
//! With a pausing `throttle` (bytes and lines, so that reads stop inside lines), the tailer
//! lags behind the writes and catches up later: the same must arrive.
//!
//! The documented losses are the model's, not the test's leniency: lines a copytruncate
//! cut before they were read, and files created and made unreachable while no tailer ran
//! (or whose checkpoint a crash lost before they were renamed away, or before they were
//! read to their end).

use super::checkpoint::Checkpoints;
use super::claims::Claims;
use super::deleted::DeletedFiles;
use super::signal::Stop;
use super::tailer::{TailError, Tailer, TailerContext};
use super::wakeup::Wakeups;
use crate::ports::NoEvents;
use crate::record::Batch;
use crate::sink::{Ack, Sink, SinkError};
use crate::spec::{TailerId, TailerSettings};
use crate::telemetry::TailerProgress;
use crate::throttle::{OnLimit, Per, Throttle};
use futures::future::{BoxFuture, FutureExt};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

const POLL: Duration = Duration::from_millis(20);
const ROTATE_WAIT: Duration = Duration::from_millis(200);
/// Virtual time after a change to the path: the tailer has looked at it by then (idle
/// tailers poll at most every 2 s without notifications, and this test has none).
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Op {
    /// Complete lines appended at the path (creating the file if missing).
    Write(usize),
    /// A line without its newline; the next write completes it.
    Partial,
    /// logrotate `create`: rename to `app.log.N`, create a new `app.log`.
    Rotate,
    /// logrotate `copytruncate`: copy to `copy.N` (not followed), truncate in place.
    CopyTruncate,
    Delete,
    /// Creates the file if missing (a deleted file's inode may come back).
    Recreate,
    /// Lets virtual time pass (ms).
    Advance(u64),
    /// Graceful stop (final checkpoints written), and start again.
    Stop,
    Start,
    /// The task dropped without flushing; checkpoints as last written.
    Crash,
    /// Checkpoints written to disk.
    Flush,
    /// The sink fails the next batch and every one after it until the tailer restarts.
    FailNext,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..120).prop_map(Op::Write),
        2 => Just(Op::Partial),
        3 => Just(Op::Rotate),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::Delete),
        2 => Just(Op::Recreate),
        4 => (0u64..3_000).prop_map(Op::Advance),
        1 => Just(Op::Stop),
        2 => Just(Op::Start),
        1 => Just(Op::Crash),
        2 => Just(Op::Flush),
        1 => Just(Op::FailNext),
    ]
}

/// Records what it receives, in order; acknowledges each batch after a delay of its own
/// (so several are in flight) or fails from `fail_next` on until `repair`.
#[derive(Default)]
struct RecordingSink {
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    received: Vec<String>,
    fail_next: bool,
    broken: bool,
    batches: u64,
    max_delay_ms: u64,
}

impl RecordingSink {
    fn received(&self) -> Vec<String> {
        self.state.lock().unwrap().received.clone()
    }

    fn repair(&self) {
        self.state.lock().unwrap().broken = false;
    }
}

impl Sink for RecordingSink {
    fn submit(&self, batch: Batch) -> BoxFuture<'_, Result<Ack, SinkError>> {
        let mut state = self.state.lock().unwrap();
        state.batches += 1;
        if std::mem::take(&mut state.fail_next) {
            state.broken = true;
        }
        let ack: Ack = if state.broken {
            let error = SinkError::Io {
                sink: "model",
                source: Arc::new(std::io::Error::other("broken")),
            };
            futures::future::ready(Err(error)).boxed()
        } else {
            state.received.extend(
                batch
                    .lines()
                    .map(|(_, line)| String::from_utf8_lossy(line).into_owned()),
            );
            // A spread of delays from the batch number: acknowledgements come late and
            // several batches are in flight.
            let delay = (state.batches * 7_919) % (state.max_delay_ms + 1);
            tokio::time::sleep(Duration::from_millis(delay))
                .map(Ok)
                .boxed()
        };
        futures::future::ready(Ok(ack)).boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// One content of a file: from its creation (or truncation) to its end.
#[derive(Debug, Default)]
struct Generation {
    lines: Vec<String>,
    partial: Option<String>,
    /// The tailer has had the chance to open it, so its checkpoint is in the store's
    /// memory (it was at the path during a settle with a tailer running, since the last
    /// crash).
    seen: bool,
    /// Its checkpoint is on disk: a restart finds it when it was renamed away meanwhile.
    on_disk: bool,
    /// Still reachable at the path.
    at_path: bool,
    /// Unlinked: only an open descriptor still reaches it.
    deleted: bool,
}

#[derive(Debug, Default)]
struct Model {
    generations: Vec<Generation>,
    /// The generation at the path.
    current: Option<usize>,
    /// Lines the documented limits allow to be lost.
    may_lose: HashSet<String>,
    /// A crash or a sink failure happened: lines may repeat.
    may_repeat: bool,
    next_line: usize,
}

impl Model {
    fn new_generation(&mut self) -> usize {
        self.generations.push(Generation {
            at_path: true,
            ..Default::default()
        });
        self.current = Some(self.generations.len() - 1);
        self.generations.len() - 1
    }

    fn line(&mut self, tag: &str) -> String {
        self.next_line += 1;
        format!(
            "{tag}{:06} {}",
            self.next_line,
            "x".repeat(self.next_line * 7 % 61)
        )
    }

    /// The generation leaves the path. While no tailer runs, it is lost unless the tailer
    /// checkpointed it (then a restart finds it renamed, not deleted).
    fn leave(&mut self, index: usize, running: bool, renamed: bool, received: &HashSet<String>) {
        let generation = &mut self.generations[index];
        generation.at_path = false;
        generation.deleted = !renamed;
        // A partial last line is shipped when the file is finished.
        if let Some(partial) = generation.partial.take() {
            generation.lines.push(partial);
        }
        let reachable = if running {
            generation.seen
        } else {
            renamed && generation.on_disk
        };
        if !reachable {
            let unread = generation.lines.iter().filter(|l| !received.contains(*l));
            self.may_lose.extend(unread.cloned());
        }
    }
}

impl Model {
    /// The process holding deleted files died: what it had not shipped of them is gone
    /// (inherent: nothing else holds them). A tailer that failed keeps them (the agent's
    /// deleted-file registry holds them for its next start). So is what it had not shipped
    /// of renamed files whose checkpoint never reached the disk: a restart finds a renamed
    /// file through its checkpoint only (the agent writes checkpoints within a second,
    /// this harness only at `Flush` and stop). Only a throttled tailer still has unread
    /// lines of them a settle after the rename.
    fn lose_unreachable(&mut self, received: &HashSet<String>) {
        let unreachable = |g: &&Generation| g.deleted || (!g.at_path && !g.on_disk);
        for generation in self.generations.iter().filter(unreachable) {
            let unread = generation.lines.iter().filter(|l| !received.contains(*l));
            self.may_lose.extend(unread.cloned());
        }
    }
}

struct Harness {
    dir: tempfile::TempDir,
    sink: Arc<RecordingSink>,
    /// `None` only while a crash replaces it (a store locks its directory).
    checkpoints: Option<Arc<Checkpoints>>,
    claims: Arc<Claims>,
    wakeups: Arc<Wakeups>,
    /// Outlives a failed tailer, as the agent's does: it keeps the deleted files.
    deleted: Arc<DeletedFiles>,
    task: Option<(Stop, JoinHandle<Result<(), TailError>>)>,
    renames: usize,
    model: Model,
    throttle: Option<Throttle>,
}

impl Harness {
    fn new(max_delay_ms: u64, throttle: Option<Throttle>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (checkpoints, _) = Checkpoints::open(&dir.path().join("state")).unwrap();
        let sink = Arc::new(RecordingSink::default());
        sink.state.lock().unwrap().max_delay_ms = max_delay_ms;
        Harness {
            dir,
            sink,
            checkpoints: Some(checkpoints),
            claims: Arc::default(),
            wakeups: Wakeups::without_notifications(),
            deleted: Arc::default(),
            task: None,
            renames: 0,
            model: Model::default(),
            throttle,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    fn store(&self) -> &Arc<Checkpoints> {
        self.checkpoints.as_ref().expect("opened")
    }

    fn received(&self) -> HashSet<String> {
        self.sink.received().into_iter().collect()
    }

    fn running(&self) -> bool {
        self.task.is_some()
    }

    fn start(&mut self) {
        if self.running() {
            return;
        }
        self.sink.repair();
        let ctx = Arc::new(TailerContext {
            sink: self.sink.clone(),
            checkpoints: self.store().clone(),
            events: Arc::new(NoEvents),
            claims: self.claims.clone(),
            wakeups: self.wakeups.clone(),
            open_files: Arc::new(Semaphore::new(64)),
            filling: Arc::new(Semaphore::new(2)),
            deleted: self.deleted.clone(),
            throttles: Arc::default(),
        });
        let id = TailerId {
            topic: "app".into(),
            path: Arc::from(self.path().as_path()),
        };
        let settings = TailerSettings {
            poll_interval: POLL,
            rotate_wait: ROTATE_WAIT,
            throttle: self.throttle.clone(),
            ..TailerSettings::for_tests()
        };
        let tailer = Tailer::new(id, settings, ctx, Arc::new(TailerProgress::default()));
        let stop = Stop::new();
        let task = tokio::spawn(tailer.run(stop.clone()));
        self.task = Some((stop, task));
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.task.take() {
            stop.cancel();
            // A failed sink makes the stop fail too; its lines are read again.
            let _ = task.await.unwrap();
            self.store().flush().unwrap();
            self.mark_on_disk();
        }
    }

    async fn crash(&mut self) {
        if let Some((_, task)) = self.task.take() {
            task.abort();
            let _ = task.await;
            // What the crashed process held goes with it, its lock on the directory too.
            self.checkpoints = None;
            let (reopened, _) = Checkpoints::open(&self.dir.path().join("state")).unwrap();
            self.checkpoints = Some(reopened);
            self.model.may_repeat = true;
            let received = self.received();
            self.model.lose_unreachable(&received);
            // What the lost process had checkpointed in memory is gone with it.
            for generation in &mut self.model.generations {
                generation.seen = false;
            }
        }
    }

    fn mark_on_disk(&mut self) {
        for generation in &mut self.model.generations {
            generation.on_disk |= generation.seen;
        }
    }

    /// Lets the tailer see the path as it is now.
    async fn settle(&mut self) {
        tokio::time::sleep(SETTLE).await;
        if self.running() {
            for generation in &mut self.model.generations {
                generation.seen |= generation.at_path;
            }
        }
    }

    /// A tailer that failed (its sink broke) is started again, as the reconciler does.
    async fn restart_failed(&mut self) {
        if self
            .task
            .as_ref()
            .is_some_and(|(_, task)| task.is_finished())
        {
            let (_, task) = self.task.take().unwrap();
            assert!(task.await.unwrap().is_err(), "a tailer ended by itself");
            self.model.may_repeat = true;
            // The deleted files it held are kept for its next start: nothing is lost.
            self.start();
            self.settle().await;
        }
    }

    fn append(&mut self, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path())
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn current_or_create(&mut self) -> usize {
        match self.model.current {
            Some(index) => index,
            None => {
                std::fs::File::create(self.path()).unwrap();
                self.model.new_generation()
            }
        }
    }

    async fn apply(&mut self, op: &Op) {
        self.restart_failed().await;
        match *op {
            Op::Write(n) => {
                let created = self.model.current.is_none();
                let index = self.current_or_create();
                // A pending partial line is in the file already: the first line ends it.
                let mut partial = self.model.generations[index].partial.take();
                let mut text = String::new();
                for _ in 0..n {
                    let line = self.model.line("L");
                    text.push_str(&line);
                    text.push('\n');
                    let whole = partial.take().map_or(line.clone(), |p| p + &line);
                    self.model.generations[index].lines.push(whole);
                }
                self.append(&text);
                if created {
                    self.settle().await;
                }
            }
            Op::Partial => {
                let index = self.current_or_create();
                if self.model.generations[index].partial.is_none() {
                    let partial = self.model.line("P");
                    self.append(&partial);
                    self.model.generations[index].partial = Some(partial);
                }
            }
            Op::Rotate => {
                if let Some(index) = self.model.current.take() {
                    self.renames += 1;
                    let to = self.dir.path().join(format!("app.log.{}", self.renames));
                    std::fs::rename(self.path(), to).unwrap();
                    let (running, received) = (self.running(), self.received());
                    self.model.leave(index, running, true, &received);
                }
                std::fs::File::create(self.path()).unwrap();
                self.model.new_generation();
                self.settle().await;
            }
            Op::CopyTruncate => {
                if let Some(index) = self.model.current {
                    self.renames += 1;
                    let copy = self.dir.path().join(format!("copy.{}", self.renames));
                    std::fs::copy(self.path(), copy).unwrap();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(self.path())
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    // What was not read before the truncation is gone with it.
                    let received = self.received();
                    let generation = &mut self.model.generations[index];
                    generation.at_path = false;
                    let cut = generation.lines.iter().chain(&generation.partial);
                    let unread: Vec<String> =
                        cut.filter(|l| !received.contains(*l)).cloned().collect();
                    self.model.may_lose.extend(unread);
                    self.model.new_generation();
                    self.settle().await;
                }
            }
            Op::Delete => {
                if let Some(index) = self.model.current.take() {
                    std::fs::remove_file(self.path()).unwrap();
                    let (running, received) = (self.running(), self.received());
                    self.model.leave(index, running, false, &received);
                    self.settle().await;
                }
            }
            Op::Recreate => {
                if self.model.current.is_none() {
                    self.current_or_create();
                    self.settle().await;
                }
            }
            Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Stop => self.stop().await,
            Op::Start => {
                if !self.running() {
                    self.start();
                    self.settle().await;
                }
            }
            Op::Crash => self.crash().await,
            Op::Flush => {
                self.store().flush().unwrap();
                self.mark_on_disk();
            }
            Op::FailNext => self.sink.state.lock().unwrap().fail_next = true,
        }
    }

    /// Every complete line written has arrived, or may be lost.
    fn caught_up(&self) -> bool {
        let received = self.received();
        let model = &self.model;
        model
            .generations
            .iter()
            .flat_map(|g| &g.lines)
            .all(|l| received.contains(l) || model.may_lose.contains(l))
    }

    /// Runs everything out, stops the tailer and compares the sink with the model.
    async fn check(mut self) -> Result<(), TestCaseError> {
        self.restart_failed().await;
        self.start();
        self.settle().await;
        // Lingering files, late acknowledgements, the longest idle poll: all done by then.
        tokio::time::sleep(Duration::from_secs(60)).await;
        self.restart_failed().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        if self.throttle.is_some() {
            // A backlog read at the throttle's rate (at most about three minutes).
            for _ in 0..30 {
                self.restart_failed().await;
                if self.caught_up() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
        self.stop().await;
        let received = self.sink.received();
        let model = &self.model;
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for line in &received {
            *copies.entry(line.as_str()).or_default() += 1;
        }
        let mut written = HashSet::new();
        for (index, generation) in model.generations.iter().enumerate() {
            let mut lines: Vec<&String> = generation.lines.iter().collect();
            // A partial line still pending at the path is not a line yet.
            let pending = generation.partial.as_ref();
            written.extend(lines.iter().map(|l| l.as_str()));
            if let Some(partial) = pending {
                prop_assert!(
                    !copies.contains_key(partial.as_str()),
                    "a partial line shipped"
                );
            }
            for line in &lines {
                prop_assert!(
                    copies.contains_key(line.as_str()) || model.may_lose.contains(*line),
                    "generation {index}: {line:?} lost"
                );
            }
            // Order: the first arrival of each of its lines follows the file's order.
            let first_seen: HashMap<&str, usize> = received
                .iter()
                .enumerate()
                .rev()
                .map(|(i, l)| (l.as_str(), i))
                .collect();
            lines.retain(|l| first_seen.contains_key(l.as_str()));
            let positions: Vec<usize> = lines.iter().map(|l| first_seen[l.as_str()]).collect();
            prop_assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "generation {index}: lines out of order"
            );
        }
        for (line, n) in &copies {
            prop_assert!(written.contains(line), "never written: {line:?}");
            prop_assert!(
                *n == 1 || model.may_repeat,
                "{line:?} arrived {n} times without a crash or a sink failure"
            );
        }
        Ok(())
    }
}

/// How long one case may take, in real time: a few milliseconds each, usually. A case
/// that takes longer is a livelock (the tailer never waits, so the paused clock never
/// moves); it is named, and the test process ends, rather than stalling CI with the case
/// unknown (proptest saves a seed only for a case that fails).
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// [`run_case`] on a thread of its own, within [`CASE_LIMIT`].
fn run(ops: &[Op], max_delay_ms: u64, throttled: bool) -> Result<(), TestCaseError> {
    let case = format!("{ops:?}, max_delay_ms: {max_delay_ms}, throttled: {throttled}");
    let ops = ops.to_vec();
    let (done, result) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = done.send(run_case(&ops, max_delay_ms, throttled));
    });
    match result.recv_timeout(CASE_LIMIT) {
        Ok(result) => result,
        // The case panicked: its panic is the test's.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the case ended without a result"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // The hung thread cannot be stopped, and shrinking would hang again. Written
            // past the test's capture of `eprintln!`, which the exit would lose.
            let hung = format!("a model case did not end within {CASE_LIMIT:?}: {case}\n");
            let _ = std::io::stderr().write_all(hung.as_bytes());
            std::process::exit(101);
        }
    }
}

/// Applies `ops` to real files and to the model, on a paused clock, and compares.
fn run_case(ops: &[Op], max_delay_ms: u64, throttled: bool) -> Result<(), TestCaseError> {
    // Slower than a settle reads a write: rotations, deletions, stops and crashes find a
    // backlog. The most a sequence writes (~190 KB) is read within `check`'s wait.
    let throttle = throttled.then(|| Throttle {
        lines_per_s: Some(100),
        bytes_per_s: Some(1024),
        burst: Duration::from_millis(500),
        per: Per::File,
        on_limit: OnLimit::Pause,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut harness = Harness::new(max_delay_ms, throttle);
        harness.start();
        harness.settle().await;
        for op in ops {
            harness.apply(op).await;
        }
        harness.check().await
    })
}

/// A file queued behind a throttled backlog is copytruncated before its turn, written
/// again, then renamed while a sink failure restarts the tailer: the restart finds it by
/// its checkpoint only if the tailer saw the truncation and named the file by what it
/// holds now (it took the file for another one that reused the inode and lost the line).
#[test]
fn a_file_truncated_before_its_turn_should_be_found_again_after_a_restart() {
    use Op::*;
    let ops = [
        Write(1),
        Flush,
        Write(57),
        Write(87),
        Rotate,
        Crash,
        Write(1),
        Start,
        CopyTruncate,
        FailNext,
        Write(1),
        Rotate,
    ];
    run(&ops, 0, true).unwrap();
}

/// As above, but the tailer is stopped (not failed) before the truncated file's turn, and
/// the file is rotated while it is down: its checkpoint still named the content it held
/// when it was queued, so the restart took the renamed file for another that reused the
/// inode and lost its line. (Until this was fixed, throttled cases did not copytruncate.)
#[test]
fn a_file_truncated_before_its_turn_should_be_found_again_after_a_stop() {
    use Op::*;
    let ops = [
        Write(1),
        Write(89),
        Flush,
        Write(111),
        Write(74),
        Rotate,
        Crash,
        Write(1),
        Start,
        CopyTruncate,
        Write(1),
        Stop,
        Rotate,
    ];
    run(&ops, 0, true).unwrap();
}

/// Ten rotations while the tailer is down, within one tick of the kernel's clock: every
/// rotated file is born at the same time, so each look for files missed between the newest
/// held and the next found all of them, those read and finished too. Taken again at each
/// look, the ten went round the eight lingering places without end, the clock never moved
/// and the case never ended (the model test hung in CI).
#[test]
fn files_born_in_one_tick_should_be_read_once_and_let_go() {
    use Op::*;
    let mut ops = vec![Write(40), Flush, Stop];
    for _ in 0..10 {
        ops.extend([Write(40), Rotate]);
    }
    ops.push(Start);
    run(&ops, 0, false).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MODEL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_tailer_should_ship_what_the_model_says(
        ops in proptest::collection::vec(op(), 1..40),
        max_delay_ms in prop_oneof![Just(0u64), 1u64..50, 50u64..500],
        throttled in proptest::bool::weighted(0.3),
    ) {
        run(&ops, max_delay_ms, throttled)?;
    }
}
