//! Tailers: one task per (topic, file path) that identifies the file, resumes from its
//! checkpoint, frames lines, follows rotation and truncation, and hands batches to the sink.

mod adopt;
pub mod checkpoint;
pub mod claims;
mod copies;
pub mod deleted;
mod files;
#[cfg(test)]
mod filling_tests;
pub mod fingerprint;
mod idle;
mod inflight;
mod missed;
#[cfg(test)]
mod model_tests;
mod mounts;
mod parking;
mod reader;
mod remote;
mod rotated;
mod siblings;
pub mod signal;
mod tailer;
pub mod throttle;
pub mod wakeup;
mod watch;

pub use checkpoint::Checkpoints;
pub use claims::Claims;
pub use reader::filling_permits;
pub use tailer::{TailError, Tailer, TailerContext};
pub use wakeup::Wakeups;
