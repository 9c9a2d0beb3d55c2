//! Which filesystem a path is on, from the kernel's mount table: network filesystems
//! (NFS, SMB, CephFS, ...) and FUSE may answer a `stat` or `read` late or never, and
//! raise no local notification for writes made elsewhere. The table is read from
//! `/proc/self/mountinfo`, never from the filesystem in question (a `statfs` on a hung NFS
//! server hangs too), and read again when older than `MAX_AGE`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a read of the mount table is trusted: mounts come and go with pods.
const MAX_AGE: Duration = Duration::from_secs(10);

/// Filesystem types whose operations may block on a network or a user-space server.
const REMOTE: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "9p",
    "afs",
    "coda",
    "glusterfs",
    "lustre",
    "gpfs",
    "beegfs",
    "ocfs2",
    "gfs2",
    "fuse",
    "fuseblk",
];

#[derive(Default)]
pub struct Mounts {
    table: Mutex<Option<(Instant, Vec<Mount>)>>,
}

struct Mount {
    point: PathBuf,
    remote: bool,
}

impl Mounts {
    /// Whether `path` (taken as written: symlinks are not followed, which would touch the
    /// filesystem) is on a network or FUSE filesystem. Unknown counts as local.
    pub fn is_remote(&self, path: &Path) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let stale = table
            .as_ref()
            .is_none_or(|(read, _)| read.elapsed() > MAX_AGE);
        if stale {
            let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            *table = Some((Instant::now(), parse(&text)));
        }
        let (_, mounts) = table.as_ref().expect("read above");
        remote_at(mounts, path)
    }
}

/// The filesystem of the deepest mount point above `path` (the last one mounted there).
fn remote_at(mounts: &[Mount], path: &Path) -> bool {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
        .is_some_and(|m| m.remote)
}

/// Parses `/proc/self/mountinfo` lines: `id parent major:minor root point options
/// [optional fields] - fstype source super-options`, later mounts last.
fn parse(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((fields, after)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (fields.split(' ').nth(4), after.split(' ').next())
        else {
            continue;
        };
        mounts.push(Mount {
            point: PathBuf::from(unescape(point)),
            remote: is_remote_type(fstype),
        });
    }
    mounts
}

fn is_remote_type(fstype: &str) -> bool {
    REMOTE.contains(&fstype) || fstype.starts_with("fuse.")
}

/// The kernel writes a space, tab, newline and backslash in a mount point as `\040`,
/// `\011`, `\012` and `\134`.
fn unescape(point: &str) -> String {
    let mut out = String::with_capacity(point.len());
    let mut rest = point;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:21 / /proc rw,nosuid - proc proc rw
40 22 0:35 / /mnt/nfs rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 40 8:2 / /mnt/nfs/local rw - ext4 /dev/sda2 rw
42 22 0:36 / /mnt/my\\040logs rw - fuse.sshfs host:/logs rw,user_id=0
43 22 0:37 / /var/log/pods rw - tmpfs tmpfs rw
44 43 0:38 / /var/log/pods rw - fuse /dev/fuse rw
";

    #[test]
    fn the_deepest_and_latest_mount_point_should_decide() {
        let mounts = parse(MOUNTINFO);
        let remote = |p: &str| remote_at(&mounts, Path::new(p));
        assert!(!remote("/var/log/syslog"));
        assert!(remote("/mnt/nfs/app/a.log"));
        assert!(!remote("/mnt/nfs/local/a.log"), "a local mount inside NFS");
        assert!(!remote("/mnt/nfsx/a.log"), "a prefix is not a parent");
        assert!(remote("/mnt/my logs/a.log"), "escaped space");
        assert!(
            remote("/var/log/pods/ns_pod/c/0.log"),
            "mounted over, the later wins"
        );
        assert!(!remote("relative/a.log"), "unknown is local");
    }

    #[test]
    fn this_machines_temporary_directory_should_be_local() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = Mounts::default();
        assert!(!mounts.is_remote(&dir.path().join("a.log")));
        assert!(!mounts.is_remote(Path::new("/proc/self/status")));
    }

    #[test]
    fn unescape_should_leave_a_lone_backslash() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/a\\x"), "/a\\x");
    }
}
