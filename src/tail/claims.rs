//! Which tailer reads which file right now. During a rotation the same file is briefly
//! reachable under two names (`app.log` being finished by its tailer, `app.log.1` found by
//! a glob); only the tailer holding the claim reads it, so no line is shipped twice.

use crate::spec::TailerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A file on a topic: the same file on two topics is read by two tailers, on purpose.
type Key = (Arc<str>, u64, u64);

#[derive(Debug, Default)]
pub struct Claims {
    /// Each key's owner and the number of its claim.
    owners: Mutex<HashMap<Key, (TailerId, u64)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Holds a claim until dropped.
#[derive(Debug)]
pub struct Claim {
    claims: Arc<Claims>,
    key: Key,
    /// Dropping it releases the key only while this claim is the one in force (a newer
    /// claim on the same key, e.g. the owner's file after the old one's inode number was
    /// reused, stays).
    number: u64,
}

impl Claims {
    /// Claims (topic, dev, ino) for `tailer`, or names the tailer that holds it.
    pub fn claim(
        self: &Arc<Self>,
        tailer: &TailerId,
        dev: u64,
        ino: u64,
    ) -> Result<Claim, TailerId> {
        let key = (tailer.topic.clone(), dev, ino);
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        match owners.get(&key) {
            Some((owner, _)) if owner != tailer => Err(owner.clone()),
            // A tailer never holds two claims on one file (it checks before opening).
            _ => {
                let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                owners.insert(key.clone(), (tailer.clone(), number));
                Ok(Claim {
                    claims: self.clone(),
                    key,
                    number,
                })
            }
        }
    }
}

impl Claims {
    /// Whether some tailer holds (topic, dev, ino).
    pub fn holds(&self, topic: &str, dev: u64, ino: u64) -> bool {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners.contains_key(&(Arc::from(topic), dev, ino))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut owners = self.claims.owners.lock().unwrap_or_else(|e| e.into_inner());
        if owners
            .get(&self.key)
            .is_some_and(|(_, n)| *n == self.number)
        {
            owners.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_claimed_file_should_be_refused_to_another_tailer_until_released() {
        let claims = Arc::new(Claims::default());
        let old_name = TailerId::new("app", Path::new("/l/app.log"));
        let new_name = TailerId::new("app", Path::new("/l/app.log.1"));
        let other_topic = TailerId::new("audit", Path::new("/l/app.log.1"));
        let held = claims.claim(&old_name, 1, 7).unwrap();
        assert_eq!(claims.claim(&new_name, 1, 7).unwrap_err(), old_name);
        assert!(claims.claim(&other_topic, 1, 7).is_ok(), "per topic");
        drop(held);
        assert!(claims.claim(&new_name, 1, 7).is_ok());
    }

    #[test]
    fn an_older_claim_dropped_late_should_leave_the_newer_one() {
        let claims = Arc::new(Claims::default());
        let tailer = TailerId::new("app", Path::new("/l/app.log"));
        let other = TailerId::new("app", Path::new("/l/other.log"));
        let old = claims.claim(&tailer, 1, 7).unwrap();
        let new = claims.claim(&tailer, 1, 7).unwrap();
        drop(old);
        assert_eq!(claims.claim(&other, 1, 7).unwrap_err(), tailer);
        drop(new);
        assert!(claims.claim(&other, 1, 7).is_ok());
    }
}
