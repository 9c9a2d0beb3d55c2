//! How an idle tailer waits: until its path changes (a notification), a multiline record
//! or a renamed file is due, or the poll interval passes; acknowledgements are taken when
//! it wakes, and within `ACKS_TAKEN_WITHIN` while any are awaited. The
//! interval doubles while nothing happens, up to `MAX_IDLE_POLL_NOTIFIED` where
//! notifications arrive and `MAX_IDLE_POLL` where they do not (e.g. NFS), so an idle file
//! stays cheap.

use super::reader::Reader;
use super::signal::Stop;
use super::wakeup::Registration;
use super::TailError;
use std::time::Duration;
use tokio::time::Instant;

/// The longest an idle tailer waits between looks at its file without notifications.
const MAX_IDLE_POLL: Duration = Duration::from_secs(2);
/// The same with notifications (local filesystems): the look is only a safety net then,
/// and each one costs every idle file a wake-up and two stats (idle CPU at 10,000 files:
/// BENCHMARKS.md).
const MAX_IDLE_POLL_NOTIFIED: Duration = Duration::from_secs(300);
/// While batches are in flight, an idle wait ends by then at the latest to take their
/// acknowledgements. They do not wake it each: a file written a line at a time would be
/// woken twice a line, by its notification and by its batch's acknowledgement
/// (BENCHMARKS.md); the next notification takes them instead. Two seconds, so that a file
/// written every second is woken by its writes alone; the checkpoint, written once a
/// second, lags the acknowledgement by as much at most.
const ACKS_TAKEN_WITHIN: Duration = Duration::from_secs(2);
/// What a read after a notification should find at least, at the file's recent rate,
/// before `tail.min_read_interval` is waited for whole: a file written faster waits only
/// as long as it takes to write this much (a wake-up, a read and a batch then cost
/// little beside the lines they carry), a file written 1,000 lines of 100 B a second
/// ≈ 160 ms, 50,000 ≈ 3 ms.
const READ_AT_LEAST: u64 = 16 * 1024;

/// Reads due a whole `tail.min_read_interval` after the last are done on a grid of a
/// tenth of it, every tailer's on the same one: the files due within the same 75 ms (at
/// `750ms`) are read together and their batches share the producers' requests (fewer,
/// fuller ones; the CPU a line about the same at 1,000 files × 10 lines/s, 0.87 × for CRI
/// files, the p99 lower: BENCHMARKS.md "Reads due together"). A line waits up to 1.1 ×
/// the interval (never less than it).
const READS_GRID: u32 = 10;

/// Reads in a row that were due after a notification and found the file written again
/// by then (written more often than it may be read) before its tailer reads it on a
/// timer (`Idle::polled`).
const WRITTEN_WAITS_BEFORE_POLLING: u32 = 3;

/// `at`, or the first point after it of a grid `tick` apart shared by the whole process.
fn on_grid(at: Instant, tick: Duration) -> Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = Instant::from_std(*ORIGIN.get_or_init(std::time::Instant::now));
    let Some(since) = at.checked_duration_since(origin) else {
        return at;
    };
    let tick_ns = tick.as_nanos();
    if tick_ns == 0 {
        return at;
    }
    let ticks = since.as_nanos().div_ceil(tick_ns);
    let on = u64::try_from(ticks * tick_ns).map(Duration::from_nanos);
    on.map_or(at, |on| origin + on)
}

/// When a read is due after a notified wake-up at `woke`: once `to_fill` has passed, or
/// the whole `interval` (then on the grid) if that is sooner.
fn read_due(woke: Instant, to_fill: Duration, interval: Duration) -> Instant {
    match to_fill < interval {
        true => woke + to_fill,
        false => on_grid(woke + interval, interval / READS_GRID),
    }
}

/// How soon the next idle wait ends without a notification.
pub enum Pace {
    /// Later each time nothing changes (up to a cap).
    Slower,
    /// After the poll interval: a copy may still be being written.
    Poll,
    /// Within a few poll intervals: a claim is released without notice.
    Soon,
}

/// What an idle wait is for, beside its pace.
pub struct Wait {
    /// A renamed file is due to be looked at (it raises no notification for our path).
    pub next_look: Option<Instant>,
    /// The tailer waits for a file it holds to be decided (`tail/copies.rs`), not for its
    /// path, so its watch task goes on opening the files that arrive there.
    pub holding: bool,
    /// Other tailers wait for the open-file slot this one holds: the waits stay as short
    /// as after data a look found until it has been quiet long enough to be closed for
    /// them (`Tailer::should_park`), whatever notifications brought.
    pub slot_wanted: bool,
}

pub struct Idle {
    /// Notifications for the path.
    wakeup: Registration,
    /// Sets the polling backoff: idle waits since data was last found without a
    /// notification.
    streak: u32,
    /// Idle waits in a row without data.
    quiet: u32,
    /// The last wait ended with a notification.
    notified: bool,
    /// When a notification last ended an idle wait (the read after it started then): the
    /// next one ends it `tail.min_read_interval` later at the earliest, sooner for a file
    /// written fast ([`READ_AT_LEAST`]).
    woke: Option<Instant>,
    /// Bytes read since `woke`: written, about, between the notified wake-up before it
    /// and `woke` (`woke_after` long).
    read_since_woke: u64,
    /// The time from the notified wake-up before `woke` to `woke`.
    woke_after: Option<Duration>,
    /// The file's recent rate, bytes a second, as of `woke`: what was read after each
    /// notified wake-up over the time between it and the one before (when it was
    /// written, about), averaged with the rate before. A wake-up that finds nothing (for
    /// a write read with the one before it, a rename, a chmod) leaves it as it was: taken
    /// as a rate of 0, it made a fast file wait the whole interval (the QUICK soak lost
    /// files rotated meanwhile: BENCHMARKS.md).
    rate: Option<f64>,
    /// Reads in a row, due after a notification, that found the file written again by
    /// then and found data ([`WRITTEN_WAITS_BEFORE_POLLING`]).
    written_waits: u32,
    /// The last wait's notification came before its read was due, and the file was
    /// written again by then.
    rewritten: bool,
    /// The file is written more often than it may be read (`tail.min_read_interval`):
    /// it is read on a timer, as often as a notification would have it read, until a
    /// read finds nothing; its writes raise no notification meanwhile
    /// (`Registration::poll_writes`: the event thread's CPU a line, BENCHMARKS.md "Busy
    /// files read on a timer").
    polled: bool,
}

impl Idle {
    pub fn new(wakeup: Registration) -> Self {
        Idle {
            wakeup,
            streak: 0,
            quiet: 0,
            notified: false,
            woke: None,
            read_since_woke: 0,
            woke_after: None,
            rate: None,
            written_waits: 0,
            rewritten: false,
            polled: false,
        }
    }

    /// See [`Registration::names_seen`].
    pub fn names_seen(&self) -> Option<u64> {
        self.wakeup.names_seen()
    }

    /// Idle waits in a row without data.
    pub fn quiet(&self) -> u32 {
        self.quiet
    }

    /// `bytes` of data came. Found by a look the poll made (no notification: the
    /// filesystem sends none, or one was missed), the next wait starts at the poll
    /// interval again. Brought by a notification, the waits' deadlines go on growing: the
    /// look they end with is only a safety net then, and a file written every second would
    /// otherwise be woken two more times between its writes, at 250 ms and 750 ms
    /// (BENCHMARKS.md).
    pub fn busy(&mut self, bytes: u64) {
        self.read_since_woke += bytes;
        self.quiet = 0;
        if !self.notified {
            self.streak = 0;
        }
    }

    /// Waits at `pace`; ends early for the reader's multiline deadline, for
    /// [`Wait::next_look`] and, while batches are in flight, after [`ACKS_TAKEN_WITHIN`]
    /// (the tailer's next step takes their acknowledgements first).
    pub async fn wait(
        &mut self,
        pace: Pace,
        stop: &Stop,
        reader: &mut Reader,
        wait: Wait,
    ) -> Result<(), TailError> {
        let Wait {
            next_look,
            holding,
            slot_wanted,
        } = wait;
        match pace {
            Pace::Slower => {}
            Pace::Poll => self.streak = 0,
            Pace::Soon => self.streak = self.streak.min(2),
        }
        reader.busy.set(holding);
        let base = reader.settings.poll_interval;
        let cap = match self.wakeup.is_watched() {
            true => MAX_IDLE_POLL_NOTIFIED,
            false => MAX_IDLE_POLL,
        };
        let doublings = match slot_wanted {
            true => self.streak.min(self.quiet),
            false => self.streak,
        };
        let delay = base
            .saturating_mul(1 << doublings.min(16))
            .min(cap.max(base));
        self.streak += 1;
        self.quiet += 1;
        let mut until = Instant::now() + delay;
        if let Some(deadline) = reader.deadline.filter(|d| *d > Instant::now()) {
            until = until.min(deadline);
        }
        if let Some(look) = next_look {
            until = until.min(look);
        }
        reader.collect_acks()?;
        if !reader.inflight.is_empty() {
            until = until.min(Instant::now() + ACKS_TAKEN_WITHIN);
        }
        let interval = reader.settings.min_read_interval;
        self.choose_polling(interval);
        if let Some(due) = self.polled.then(|| self.next_read(interval)).flatten() {
            return self.sleep_polled(until, due, stop).await;
        }
        self.sleep(until, true, stop, reader).await
    }

    /// Whether the file is read on a timer from this wait on: once
    /// [`WRITTEN_WAITS_BEFORE_POLLING`] reads in a row were due after a notification and
    /// found it written again by then, until a read finds nothing.
    fn choose_polling(&mut self, interval: Duration) {
        let found = self.read_since_woke > 0;
        let rewritten = std::mem::take(&mut self.rewritten);
        if self.polled {
            if !found {
                // Quiet: woken by its writes again (and read once more, for what was
                // written before the watch took them back).
                self.polled = self.wakeup.poll_writes(false);
            }
            return;
        }
        if interval.is_zero() || !found || !rewritten {
            self.written_waits = 0;
            return;
        }
        self.written_waits += 1;
        if self.written_waits >= WRITTEN_WAITS_BEFORE_POLLING {
            self.written_waits = 0;
            self.polled = self.wakeup.poll_writes(true);
        }
    }

    /// A wait of a file read on a timer: its read is `due` (as a notification would
    /// have it), unless `until` ends the wait first.
    async fn sleep_polled(
        &mut self,
        until: Instant,
        due: Instant,
        stop: &Stop,
    ) -> Result<(), TailError> {
        self.notified = false;
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(until.min(due)) => {}
        }
        if due <= until {
            // As a notified wake-up: the next read is due an interval after this one's
            // due time, on the grid.
            self.notified = true;
            self.woke_at(due);
        }
        Ok(())
    }

    /// Waits, over the throttle, until `until` (or the multiline deadline, or `next_look`),
    /// handling acknowledgements. Notifications do not end it (the file grows, which is
    /// why it pauses); the watch task looks at the path meanwhile, as for a busy tailer.
    pub async fn pause(
        &mut self,
        until: Instant,
        stop: &Stop,
        reader: &mut Reader,
        next_look: Option<Instant>,
    ) -> Result<(), TailError> {
        reader.busy.set(true);
        let deadline = reader.deadline.filter(|d| *d > Instant::now());
        let until = [Some(until), deadline, next_look]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
        self.sleep(until, false, stop, reader).await
    }

    /// The earliest a notification may end a wait: `interval` after the last notified
    /// wake-up, or as long after it as the file's recent rate takes to write
    /// [`READ_AT_LEAST`] bytes if that is sooner; at once while the rate is not known.
    fn next_read(&self, interval: Duration) -> Option<Instant> {
        let woke = self.woke?;
        let to_fill = match self.rate() {
            None => Duration::ZERO,
            Some(rate) => {
                Duration::try_from_secs_f64(READ_AT_LEAST as f64 / rate).unwrap_or(interval)
            }
        };
        Some(read_due(woke, to_fill, interval))
    }

    /// The file's rate with what was read since the last notified wake-up.
    fn rate(&self) -> Option<f64> {
        let read = self.read_since_woke as f64;
        let since = (read > 0.0).then_some(self.woke_after).flatten();
        let since = since.map(|after| read / after.as_secs_f64().max(1e-3));
        match (self.rate, since) {
            (Some(before), Some(since)) => Some((before + since) / 2.0),
            (before, since) => before.or(since),
        }
    }

    /// A notification ended a wait at `now`: what was read since the last one joins the
    /// file's rate.
    fn woke_at(&mut self, now: Instant) {
        self.rate = self.rate();
        self.woke_after = self.woke.map(|woke| now - woke);
        self.woke = Some(now);
        self.read_since_woke = 0;
    }

    /// Sleeps until `until`, stopped or notified (an idle wait: `idle`); a pause over the
    /// throttle also handles acknowledgements as they come (it ends at the throttle's
    /// time, which may be long). A notification within `tail.min_read_interval` of the
    /// last one that ended a wait ends this one that long after that (or at `until`, or
    /// once [`READ_AT_LEAST`] bytes are there at the file's rate, if sooner): a file
    /// written a line at a time is read a few lines at a time, while a write after a
    /// quiet spell is read at once.
    async fn sleep(
        &mut self,
        until: Instant,
        idle: bool,
        stop: &Stop,
        reader: &mut Reader,
    ) -> Result<(), TailError> {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        let signal = &self.wakeup.signal;
        self.notified = false;
        loop {
            let inflight = &mut reader.inflight;
            // In order (no random start at each wake-up): every branch but the timer is
            // a look at an atomic.
            let done = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = signal.taken(), if idle => {
                    self.notified = true;
                    let interval = reader.settings.min_read_interval;
                    let mut woke = Instant::now();
                    if let Some(earliest) = self.next_read(interval).filter(|e| *e > woke) {
                        if earliest < sleep.deadline() {
                            sleep.as_mut().reset(earliest);
                        }
                        tokio::select! {
                            biased;
                            _ = stop.cancelled() => return Ok(()),
                            _ = &mut sleep => {}
                        }
                        // The read was due then: the next is due an interval after it,
                        // on the grid again, not after the timer's lateness.
                        woke = sleep.deadline();
                        // Written again meanwhile: more often than it may be read.
                        self.rewritten = signal.is_raised();
                    }
                    self.woke_at(woke);
                    return Ok(());
                }
                Some(done) = inflight.next(), if !idle && !inflight.is_empty() => done,
                _ = &mut sleep => return Ok(()),
            };
            reader.on_ack(done)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_due_a_whole_interval_later_should_fall_on_one_grid_for_every_file() {
        let interval = Duration::from_millis(500);
        let tick = Duration::from_millis(50);
        let now = Instant::now();
        // Files woken at different instants of the same 50 ms: read together, never
        // sooner than the interval, at most a tick later.
        let woken = [0, 7, 19, 33, 49].map(|ms| now + Duration::from_millis(ms));
        let due = woken.map(|woke| read_due(woke, Duration::MAX, interval));
        for (woke, due) in woken.iter().zip(due) {
            assert!(
                due >= *woke + interval,
                "{due:?} before {:?}",
                *woke + interval
            );
            assert!(due < *woke + interval + tick, "{due:?}");
        }
        let firsts = due.iter().filter(|d| **d == due[0]).count();
        let seconds = due.iter().filter(|d| **d == due[0] + tick).count();
        assert_eq!(
            firsts + seconds,
            due.len(),
            "{due:?}: two grid points at most"
        );
        // A grid point itself stays.
        assert_eq!(read_due(due[0] - interval, Duration::MAX, interval), due[0]);
        // A file written fast is read once it has enough, off the grid.
        let woke = now + Duration::from_millis(3);
        let to_fill = Duration::from_millis(37);
        assert_eq!(read_due(woke, to_fill, interval), woke + to_fill);
        // With reads at every notification (`0s`) there is no grid.
        assert_eq!(read_due(woke, Duration::ZERO, Duration::ZERO), woke);
    }
}
