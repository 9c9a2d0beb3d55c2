//! The files a tailer holds, each in one state:
//! - **reading**: the oldest is read; newer ones the path named since wait behind it
//!   (a rotation while the old file still had lines). The newest is what the path names.
//! - **lingering**: renamed away and read to its end; the writer may still append until
//!   it reopens its log, so it is looked at every poll interval until quiet for
//!   `tail.rotate_wait` (or deleted), then finished.
//! - **parked**: closed while idle to give its `tail.max_open_files` slot back; only its
//!   identity is kept, and the file is found again by it when the path changes.
//!
//! A deleted file is not held in a state of its own: the tailer finishes it at once,
//! shipping what it holds and waiting for the acknowledgements before closing it.
//!
//! No I/O here: the tailer reads, stats and opens, and moves files between states
//! through these methods (unit-tested below with real identities).

use super::fingerprint::FileIdentity;
use super::parking::Parked;
use std::collections::VecDeque;
use std::fs::Metadata;
use std::time::Duration;
use tokio::time::Instant;

/// Files held at once in each of the reading and lingering states.
pub const MAX_FILES: usize = 8;

/// What a held file is known by.
pub trait Held {
    fn identity(&self) -> FileIdentity;

    /// Whether this is the file `meta` describes (by device and inode number; an
    /// implementation that knows more — birth time, a descriptor closed under it — says
    /// no to another file that took the number since).
    fn is(&self, meta: &Metadata) -> bool {
        self.identity().same_file(meta)
    }

    /// Whether this and `other` are one file.
    fn same_as(&self, other: &Self) -> bool {
        self.identity().same_file_as(&other.identity())
    }
}

/// A file renamed away, read to its end.
pub struct Lingering<F> {
    pub open: F,
    /// The last time it grew (or was finished reading).
    pub quiet_since: Instant,
    pub next_look: Instant,
}

pub struct Files<F> {
    /// Oldest first; the front is read, the back is what the path named last.
    reading: VecDeque<F>,
    /// Oldest first.
    lingering: VecDeque<Lingering<F>>,
    parked: Option<Parked>,
}

impl<F: Held> Files<F> {
    pub fn new() -> Self {
        Files {
            reading: VecDeque::new(),
            lingering: VecDeque::new(),
            parked: None,
        }
    }

    /// The file being read, whose offset `/status` shows.
    pub fn current(&self) -> Option<FileIdentity> {
        self.reading.front().map(Held::identity)
    }

    /// The newest file held: the watch task looks for files other than it.
    /// The newest file being read (the back of the queue).
    pub fn newest_reading(&self) -> Option<&F> {
        self.reading.back()
    }

    pub fn front_mut(&mut self) -> Option<&mut F> {
        self.reading.front_mut()
    }

    /// Whether newer files wait behind the one being read.
    pub fn has_newer(&self) -> bool {
        self.reading.len() > 1
    }

    /// Whether `meta` is a file held for reading.
    pub fn reads(&self, meta: &Metadata) -> bool {
        self.reading.iter().any(|f| f.is(meta))
    }

    /// Whether `meta` is a file held, read or lingering.
    pub fn holds(&self, meta: &Metadata) -> bool {
        self.reads(meta) || self.lingering.iter().any(|l| l.open.is(meta))
    }

    /// The newest file held: the back of the reading queue, else the newest lingering.
    pub fn newest_held(&self) -> Option<&F> {
        self.reading
            .back()
            .or_else(|| self.lingering.back().map(|l| &l.open))
    }

    /// Whether another file may be queued for reading.
    pub fn has_room(&self) -> bool {
        self.reading.len() < MAX_FILES
    }

    /// Queues files found rotated away while nobody followed the path (at start, or
    /// when a parked file is reopened), oldest first; every one is read.
    pub fn extend(&mut self, rotated_away: VecDeque<F>) {
        if self.reading.is_empty() {
            // Its allocation as it is (one file, usually): extending an empty queue
            // allocates room for four.
            self.reading = rotated_away;
        } else {
            self.reading.extend(rotated_away);
        }
    }

    /// Queues a newer file behind the others, unless it is held already or there is no
    /// room; gives it back then.
    pub fn queue(&mut self, file: F) -> Result<(), F> {
        if !self.has_room() || self.reading.iter().any(|f| f.same_as(&file)) {
            return Err(file);
        }
        self.reading.push_back(file);
        Ok(())
    }

    /// Takes the oldest file out of the reading state (to linger or be finished).
    pub fn pop_front(&mut self) -> Option<F> {
        self.reading.pop_front()
    }

    /// Whether the one file read may be parked: nothing newer queued, nothing lingering.
    pub fn may_park(&self) -> bool {
        self.reading.len() == 1 && self.lingering.is_empty()
    }

    /// Closes the file read (the caller checked `may_park`), keeping what finds it again.
    pub fn park(&mut self, size: u64) -> Option<F> {
        let open = self.reading.pop_front()?;
        self.parked = Some(Parked {
            identity: open.identity(),
            size,
        });
        Some(open)
    }

    pub fn parked(&self) -> Option<&Parked> {
        self.parked.as_ref()
    }

    /// Leaves the parked state (to reopen the file by identity).
    pub fn unpark(&mut self) -> Option<Parked> {
        self.parked.take()
    }

    /// Lets a renamed file linger, first looked at after `poll`. Gives back the oldest
    /// lingering file when all places are taken: the caller finishes it.
    pub fn linger(&mut self, open: F, now: Instant, poll: Duration) -> Option<F> {
        let evicted = (self.lingering.len() >= MAX_FILES)
            .then(|| self.lingering.pop_front())
            .flatten()
            .map(|l| l.open);
        self.lingering.push_back(Lingering {
            open,
            quiet_since: now,
            next_look: now + poll,
        });
        evicted
    }

    pub fn lingering_len(&self) -> usize {
        self.lingering.len()
    }

    pub fn lingering_mut(&mut self, i: usize) -> &mut Lingering<F> {
        &mut self.lingering[i]
    }

    pub fn remove_lingering(&mut self, i: usize) -> Option<F> {
        self.lingering.remove(i).map(|l| l.open)
    }

    /// The files held for reading, oldest first.
    pub fn reading_mut(&mut self) -> impl Iterator<Item = &mut F> {
        self.reading.iter_mut()
    }

    /// Every file held, reading then lingering (a failed tailer's).
    pub fn take_all(&mut self) -> Vec<F> {
        let mut all: Vec<F> = self.reading.drain(..).collect();
        all.extend(self.lingering.drain(..).map(|l| l.open));
        all
    }

    /// The oldest lingering file (to finish at shutdown).
    pub fn pop_lingering(&mut self) -> Option<F> {
        self.lingering.pop_front().map(|l| l.open)
    }

    /// When the next lingering file is due a look: an idle wait ends by then.
    pub fn next_look(&self) -> Option<Instant> {
        self.lingering.iter().map(|l| l.next_look).min()
    }

    /// Whether any lingering file is due a look at `now`.
    pub fn lingering_due(&self, now: Instant) -> bool {
        self.lingering.iter().any(|l| l.next_look <= now)
    }

    /// Takes back a renamed file the path names again (moved back, a symlink recreated):
    /// it is read on, not opened a second time from its checkpoint.
    pub fn reclaim(&mut self, meta: &Metadata) -> Option<F> {
        let i = self.lingering.iter().position(|l| l.open.is(meta))?;
        self.remove_lingering(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    /// A held file: a real file's identity (the states compare metadata).
    struct Fake(FileIdentity);

    impl Held for Fake {
        fn identity(&self) -> FileIdentity {
            self.0
        }
    }

    struct Disk {
        dir: tempfile::TempDir,
        made: u32,
    }

    impl Disk {
        fn new() -> Self {
            Disk {
                dir: tempfile::tempdir().unwrap(),
                made: 0,
            }
        }

        fn file(&mut self) -> (Fake, Metadata) {
            self.made += 1;
            let path = self.dir.path().join(format!("{}.log", self.made));
            std::fs::write(&path, "line\n").unwrap();
            let file = File::open(&path).unwrap();
            let meta = file.metadata().unwrap();
            (Fake(FileIdentity::of(&file, &meta).unwrap()), meta)
        }
    }

    fn from<const N: usize>(rotated_away: [Fake; N]) -> Files<Fake> {
        let mut files = Files::new();
        files.extend(VecDeque::from(rotated_away));
        files
    }

    fn held(files: &Files<Fake>) -> Vec<u64> {
        let mut inos: Vec<u64> = files.reading.iter().map(|f| f.0.ino).collect();
        inos.extend(files.lingering.iter().map(|l| l.open.0.ino));
        inos
    }

    #[test]
    fn the_oldest_file_should_be_read_and_the_newest_watched() {
        let mut disk = Disk::new();
        let (old, _) = disk.file();
        let (new, new_meta) = disk.file();
        let (old_id, new_id) = (old.0, new.0);
        let mut files = from([old]);
        assert!(!files.has_newer());
        files.queue(new).map_err(|_| "queued").unwrap();
        assert_eq!(files.current(), Some(old_id));
        assert_eq!(files.newest_reading().map(Held::identity), Some(new_id));
        assert!(files.has_newer());
        assert!(files.reads(&new_meta));
        assert_eq!(files.pop_front().map(|f| f.0), Some(old_id));
        assert_eq!(files.current(), Some(new_id), "the newer one is read next");
    }

    #[test]
    fn a_file_held_already_or_beyond_the_limit_should_be_given_back() {
        let mut disk = Disk::new();
        let mut files = Files::new();
        let (first, _) = disk.file();
        let again = Fake(first.0);
        files.queue(first).map_err(|_| "queued").unwrap();
        assert!(files.queue(again).is_err(), "the same file twice");
        for _ in 1..MAX_FILES {
            files.queue(disk.file().0).map_err(|_| "queued").unwrap();
        }
        assert!(!files.has_room());
        assert!(files.queue(disk.file().0).is_err(), "a ninth file");
        assert_eq!(held(&files).len(), MAX_FILES);
    }

    #[test]
    fn only_a_lone_file_should_be_parked_and_found_again() {
        let mut disk = Disk::new();
        let (a, _) = disk.file();
        let a_id = a.0;
        let mut files = from([a]);
        assert!(files.may_park());
        let closed = files.park(5).expect("the file read");
        assert_eq!(closed.0, a_id);
        assert_eq!(files.current(), None, "nothing is read while parked");
        let parked = files.unpark().expect("parked");
        assert_eq!((parked.identity, parked.size), (a_id, 5));
        assert!(files.unpark().is_none(), "unparked once");

        let (b, _) = disk.file();
        let (c, _) = disk.file();
        let mut files = from([b, c]);
        assert!(!files.may_park(), "a newer file waits");
        let now = Instant::now();
        let b = files.pop_front().unwrap();
        assert!(files.linger(b, now, Duration::from_secs(1)).is_none());
        assert!(!files.may_park(), "a renamed file still lingers");
    }

    #[test]
    fn lingering_files_should_be_due_after_the_poll_interval_oldest_evicted_first() {
        let mut disk = Disk::new();
        let mut files = Files::new();
        let now = Instant::now();
        let poll = Duration::from_secs(1);
        let mut inos = Vec::new();
        for i in 0..MAX_FILES {
            let (f, _) = disk.file();
            inos.push(f.0.ino);
            let at = now + Duration::from_millis(i as u64);
            assert!(files.linger(f, at, poll).is_none());
        }
        assert!(!files.lingering_due(now));
        assert_eq!(files.next_look(), Some(now + poll));
        assert!(files.lingering_due(now + poll));
        let (ninth, _) = disk.file();
        let evicted = files
            .linger(ninth, now, poll)
            .expect("the oldest gives way");
        assert_eq!(evicted.0.ino, inos[0]);
        assert_eq!(files.lingering_len(), MAX_FILES);
        assert_eq!(files.pop_lingering().map(|f| f.0.ino), Some(inos[1]));
    }

    #[test]
    fn the_newest_held_file_should_be_the_last_queued_else_the_last_lingering() {
        let mut disk = Disk::new();
        let (a, a_meta) = disk.file();
        let (b, b_meta) = disk.file();
        let (_, other_meta) = disk.file();
        let (a_id, b_id) = (a.0, b.0);
        let mut files = from([a, b]);
        assert_eq!(files.newest_held().map(|f| f.0), Some(b_id));
        let now = Instant::now();
        let a = files.pop_front().unwrap();
        files.linger(a, now, Duration::from_secs(1));
        assert!(files.holds(&a_meta) && files.holds(&b_meta) && !files.holds(&other_meta));
        let b = files.pop_front().unwrap();
        files.linger(b, now, Duration::from_secs(1));
        assert_eq!(files.newest_held().map(|f| f.0), Some(b_id));
        assert_ne!(a_id, b_id);
    }

    #[test]
    fn a_renamed_file_back_at_the_path_should_leave_the_lingering_state() {
        let mut disk = Disk::new();
        let (a, a_meta) = disk.file();
        let (_, other_meta) = disk.file();
        let a_id = a.0;
        let mut files = Files::new();
        files.linger(a, Instant::now(), Duration::from_secs(1));
        assert!(files.reclaim(&other_meta).is_none());
        assert_eq!(files.reclaim(&a_meta).map(|f| f.0), Some(a_id));
        assert_eq!(files.lingering_len(), 0);
        assert_eq!(files.next_look(), None);
    }
}
