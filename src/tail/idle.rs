//! How an idle tailer waits: until its path changes (a notification), an acknowledgement
//! comes, a multiline record or a renamed file is due, or the poll interval passes. The
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

/// How soon the next idle wait ends without a notification.
pub enum Pace {
    /// Later each time nothing changes (up to a cap).
    Slower,
    /// After the poll interval: a copy may still be being written.
    Poll,
    /// Within a few poll intervals: a claim is released without notice.
    Soon,
}

pub struct Idle {
    /// Notifications for the path.
    wakeup: Registration,
    /// Idle waits in a row without data; sets the polling backoff.
    streak: u32,
}

impl Idle {
    pub fn new(wakeup: Registration) -> Self {
        Idle { wakeup, streak: 0 }
    }

    /// See [`Registration::names_seen`].
    pub fn names_seen(&self) -> Option<u64> {
        self.wakeup.names_seen()
    }

    /// Idle waits in a row without news.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Data came: the next wait starts at the poll interval again.
    pub fn busy(&mut self) {
        self.streak = 0;
    }

    /// Waits at `pace`, handling the reader's acknowledgements as they come; ends early
    /// for the reader's multiline deadline and for `next_look` (a renamed file, which
    /// raises no notification for our path). `holding`: the tailer waits for a file it
    /// holds to be decided (`tail/copies.rs`), not for its path, so its watch task goes on
    /// opening the files that arrive there.
    pub async fn wait(
        &mut self,
        pace: Pace,
        stop: &Stop,
        reader: &mut Reader,
        next_look: Option<Instant>,
        holding: bool,
    ) -> Result<(), TailError> {
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
        let delay = base
            .saturating_mul(1 << self.streak.min(16))
            .min(cap.max(base));
        self.streak += 1;
        let mut until = Instant::now() + delay;
        if let Some(deadline) = reader.deadline.filter(|d| *d > Instant::now()) {
            until = until.min(deadline);
        }
        if let Some(look) = next_look {
            until = until.min(look);
        }
        self.sleep(until, true, stop, reader).await
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

    async fn sleep(
        &mut self,
        until: Instant,
        notifications: bool,
        stop: &Stop,
        reader: &mut Reader,
    ) -> Result<(), TailError> {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        let signal = &self.wakeup.signal;
        loop {
            let inflight = &mut reader.inflight;
            // In order (no random start at each wake-up): every branch but the timer is
            // a look at an atomic.
            let done = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = signal.taken(), if notifications => {
                    self.streak = 0;
                    return Ok(());
                }
                Some(done) = inflight.next(), if !inflight.is_empty() => done,
                _ = &mut sleep => return Ok(()),
            };
            reader.on_ack(done)?;
        }
    }
}
