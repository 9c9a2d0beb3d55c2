//! A file whose reads never return — an NFS server gone away with a `hard` mount, a FUSE
//! daemon that stopped answering — must stall only its own tailer: the other files are
//! shipped and `/healthz` answers.
//!
//! The stand-in is a real FUSE filesystem that this test serves (`fuser`, mounted
//! directly as root through `/dev/fuse`). It answers `lookup`, `getattr`, `open` and
//! `readdir` at once and never answers a `read`, as a server does that took the
//! connection and then hung. The kernel blocks the reading thread in the `read` system
//! call exactly as on a hung NFS mount; a FIFO would not do (a tailer refuses anything but
//! a regular file), and a FUSE mount is what the agent's mount table reports as remote,
//! like NFS.

mod common;

use common::{http_get, wait_for, Agent, Workspace};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// More stalled files than the agent has workers (`TOKIO_WORKER_THREADS` below): read on
/// the workers, they would hold every one of them. And more than the permits to fill a
/// batch (`tail::filling_permits`: 6 with the default budget): holding one each while
/// their reads hang, they would leave none to the other files.
const STALLED_FILES: u64 = 8;
const WORKERS: &str = "2";
const TTL: Duration = Duration::from_secs(1);
/// The one file of the filesystem whose reads are answered, after the stalled ones.
const SERVED: u64 = 2 + STALLED_FILES;
const SERVED_LINES: &[u8] = b"served-1\nserved-2\n";

/// How long reads are held at most: a reading thread waits for its answer even when
/// killed, so a failing test must let go of them for the agent to exit.
const HELD_AT_MOST: Duration = Duration::from_secs(60);

/// A directory of `STALLED_FILES` log files, inodes 2.., whose reads are not answered,
/// and `served.log` (inode `SERVED`), whose reads are.
struct Stalled {
    held: Arc<Held>,
}

/// The reads held back, with the inode each reads.
#[derive(Default)]
struct Held {
    reads: Mutex<Vec<(u64, ReplyData)>>,
    released: AtomicBool,
    /// Set once the stalled files are followed: they grow by a line, and every read of
    /// them hangs from then on, as an NFS server's that went away while they were being
    /// tailed (the tailer is inside the read of a batch). Before, they are served.
    hung: AtomicBool,
}

/// A stalled file's content: one line, and a second once it hangs.
const STALLED_LINES: &[u8] = b"stalled-1\nstalled-2\n";

impl Held {
    /// The distinct files with a read waiting.
    fn files(&self) -> usize {
        let reads = self.reads.lock().unwrap();
        reads
            .iter()
            .map(|(ino, _)| *ino)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Answers every read held, and any later one, with an I/O error.
    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        let reads = std::mem::take(&mut *self.reads.lock().unwrap());
        reads.into_iter().for_each(|(_, r)| r.error(Errno::EIO));
    }
}

fn attr(ino: u64, hung: bool) -> FileAttr {
    let now = SystemTime::now();
    let dir = ino == 1;
    FileAttr {
        ino: INodeNo(ino),
        size: match ino {
            1 => 0,
            SERVED => SERVED_LINES.len() as u64,
            _ if hung => STALLED_LINES.len() as u64,
            _ => STALLED_LINES.len() as u64 / 2,
        },
        blocks: if dir { 0 } else { 1 },
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 512,
    }
}

fn file_name(ino: u64) -> String {
    match ino {
        SERVED => "served.log".into(),
        _ => format!("stalled-{}.log", ino - 2),
    }
}

impl Filesystem for Stalled {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = (2..=SERVED).find(|&ino| OsStr::new(&file_name(ino)) == name);
        match found {
            Some(ino) if u64::from(parent) == 1 => {
                let hung = self.held.hung.load(Ordering::SeqCst);
                reply.entry(&TTL, &attr(ino, hung), fuser::Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match u64::from(ino) {
            ino if ino <= SERVED => {
                reply.attr(&TTL, &attr(ino, self.held.hung.load(Ordering::SeqCst)))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Direct I/O: every read reaches this filesystem, none is served from a cache.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if u64::from(ino) == SERVED {
            let from = SERVED_LINES.len().min(offset as usize);
            let to = SERVED_LINES.len().min(from + size as usize);
            return reply.data(&SERVED_LINES[from..to]);
        }
        if !self.held.hung.load(Ordering::SeqCst) {
            let served = &STALLED_LINES[..STALLED_LINES.len() / 2];
            let from = served.len().min(offset as usize);
            let to = served.len().min(from + size as usize);
            return reply.data(&served[from..to]);
        }
        let mut reads = self.held.reads.lock().unwrap();
        match self.held.released.load(Ordering::SeqCst) {
            true => reply.error(Errno::EIO),
            false => reads.push((ino.into(), reply)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (1, FileType::Directory, ".".to_string()),
            (1, FileType::Directory, "..".to_string()),
        ];
        entries.extend((2..=SERVED).map(|i| (i, FileType::RegularFile, file_name(i))));
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn mount(at: &Path, held: Arc<Held>) -> fuser::BackgroundSession {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("logcatch-stalled".into()),
        MountOption::RO,
    ];
    fuser::spawn_mount(Stalled { held }, at, &config).unwrap_or_else(|e| {
        panic!(
            "cannot mount the test's FUSE filesystem at {}: {e}. This test needs the fuse \
             kernel module (/dev/fuse) and root (or CAP_SYS_ADMIN); in a container, run it \
             with --device /dev/fuse --cap-add SYS_ADMIN",
            at.display()
        )
    })
}

#[test]
fn a_file_whose_reads_hang_should_stall_only_its_own_tailer() {
    let ws = Workspace::new();
    let mnt = ws.path("stalled");
    std::fs::create_dir(&mnt).unwrap();
    let held = Arc::new(Held::default());
    let session = mount(&mnt, held.clone());
    let watchdog = held.clone();
    std::thread::spawn(move || {
        std::thread::sleep(HELD_AT_MOST);
        watchdog.release();
    });

    let local = ws.path("local.log");
    std::fs::write(&local, "before-1\nbefore-2\n").unwrap();
    let mut logs = format!("  - {{ topic: local, path: {} }}\n", local.display());
    for ino in 2..=SERVED {
        let path = mnt.join(file_name(ino));
        logs.push_str(&format!(
            "  - {{ topic: remote, path: {} }}\n",
            path.display()
        ));
    }
    ws.write_config(&ws.config(&logs));
    let agent = Agent::start_with_env(
        &[("TOKIO_WORKER_THREADS", WORKERS)],
        &ws.config_path(),
        ws.dir.path(),
        ws.http_port,
    );

    let shipped = |ws: &Workspace| {
        let mut lines: Vec<(String, String)> = ws
            .records()
            .into_iter()
            .map(|r| (r.topic, r.line))
            .collect();
        lines.sort();
        lines
    };
    let stalled_first = (0..STALLED_FILES).map(|_| ("remote".to_string(), "stalled-1".to_string()));
    wait_for(
        "the first line of every stalled file",
        Duration::from_secs(20),
        || {
            let lines = shipped(&ws);
            let first = lines.iter().filter(|(_, l)| l == "stalled-1").count();
            (first == STALLED_FILES as usize).then_some(())
        },
    );
    // They grow, and hang: every stalled file's tailer is inside a read that will not
    // return, each on a thread of its own, so all of them got there.
    held.hung.store(true, Ordering::SeqCst);
    wait_for(
        "a hung read of every stalled file",
        Duration::from_secs(20),
        || (held.files() == STALLED_FILES as usize).then_some(()),
    );
    // The local file is shipped, before and after the reads hung, and so is the file of
    // the same filesystem that answers (read on its own thread too).
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&local)
        .unwrap();
    file.write_all(b"after-1\nafter-2\n").unwrap();
    wait_for("every line shipped", Duration::from_secs(20), || {
        let lines = shipped(&ws);
        let mut want: Vec<(String, String)> = [
            ("local", "after-1"),
            ("local", "after-2"),
            ("local", "before-1"),
            ("local", "before-2"),
            ("remote", "served-1"),
            ("remote", "served-2"),
        ]
        .map(|(t, l)| (t.to_string(), l.to_string()))
        .into_iter()
        .chain(stalled_first.clone())
        .collect();
        want.sort();
        (lines == want).then_some(())
    });
    let (code, _) = http_get(ws.http_port, "/healthz").expect("/healthz answers");
    assert_eq!(code, 200, "healthy while files hang");
    let (code, status) = http_get(ws.http_port, "/status").expect("/status answers");
    assert_eq!(code, 200);
    assert!(status.contains("local.log"), "{status}");

    // A killed process still waits for the answers to the reads it sent: answer them.
    held.release();
    agent.kill9();
    session.umount_and_join().expect("unmounted");
}
