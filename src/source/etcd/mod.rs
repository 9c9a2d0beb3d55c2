//! The etcd source: per configured key or prefix, list (Get) then watch from the list's
//! revision + 1; each key is one source `etcd:<key>` publishing its full snapshot.

pub mod cache;
pub mod client;
pub mod value;
