//! logcatch: a node-local log shipping agent, built as a level-triggered controller.
//!
//! ```text
//!  config file (YAML, hot reload)          etcd keys (JSON [{path, topic}], list + watch)
//!             └──────► sources publish full snapshots: source id → Vec<LogSpec>
//!                                      ▼
//!  reconcile   desired = union of snapshots → globs expanded → grouped by TailerId
//!              (topic, path) with owners; plan(desired, running, now) -> Vec<Action>;
//!              apply: start / stop / restart tasks, failed tailers retried with backoff
//!                                      ▼
//!  tail        one task per TailerId: identify (dev, inode, fingerprint), resume from
//!              checkpoint, frame lines, decode (format: cri / docker / auto, partial
//!              lines, multiline), follow rotation / truncation, submit batches
//!                                      ▼
//!  sink        stdout, file (JSON lines), null — one trait; acks flow back and only
//!              acknowledged lines advance checkpoints (state_dir, written atomically)
//! ```
#![forbid(unsafe_code)]

pub mod agent;
pub mod atomic_file;
pub mod compressed;
pub mod config;
pub mod format;
pub mod reconcile;
pub mod sink;
pub mod source;
pub mod spec;
pub mod tail;
pub mod telemetry;
