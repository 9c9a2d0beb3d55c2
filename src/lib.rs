//! logcatch: a node-local log shipping agent, built as a level-triggered controller.
//!
//! ```text
//!  config file (YAML, hot reload)          etcd keys (JSON [{path, topic}], list + watch)
//!             └──────► source: full snapshots, source id → Vec<LogSpec> ◄──────┘
//!                                      ▼
//!  spec        desired = union of snapshots → globs expanded → allowed_paths → grouped
//!              by TailerId (topic, path) with owners
//!  reconcile   plan(desired, running, now) -> Vec<Action> (pure); apply: start / stop /
//!              restart tailer tasks, failed tailers retried with backoff
//!                                      ▼
//!  tail        one task per TailerId: identify the file (dev, inode, fingerprint), resume
//!              from its checkpoint, read, follow rotation / truncation / copies
//!                                      ▼
//!  format      framer: lines; decoder: cri / docker / auto, joined fragments, multiline
//!                                      ▼
//!  record      Batch: one file's records in one buffer, with their metadata
//!                                      ▼
//!  sink        kafka (rskafka: partition producers, sender tasks on `kafka-network`),
//!              stdout / file (JSON lines), null; acknowledgements flow back and only
//!              acknowledged lines advance the checkpoints (tail::checkpoint)
//!
//!  ports       what the logic reports through (Events, health conditions)
//!  telemetry   metrics, /healthz /readyz /status /metrics /tap, `logcatch status`, `logcatch tap`
//! ```
//!
//! Modules are listed in that order; `docs/architecture.md` describes each and the
//! invariants with their tests. No module imports one that imports it back
//! (`scripts/import-cycles.py`, run by `make test`).
#![forbid(unsafe_code)]

// The data flow.
pub mod config;
pub mod encoding;
pub mod format;
pub mod reconcile;
pub mod record;
pub mod sink;
pub mod source;
pub mod spec;
pub mod supervise;
pub mod tail;
pub mod throttle;
// What the logic reports through, and who reads it.
pub mod ports;
pub mod telemetry;
// Topic and key templates (`k8s-{{namespace}}`), shared by config, spec and sinks.
pub mod template;
// Wiring and helpers.
pub mod agent;
pub mod atomic_file;
pub mod compressed;
pub mod fault;
pub mod open;
pub mod units;
