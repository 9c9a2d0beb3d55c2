//! What the logic reports through, without knowing who listens: events for the metrics
//! and the health conditions `/status` shows. A leaf: it imports nothing of the crate, so
//! sources, tailers and sinks report without depending on `telemetry`, which reads them.

pub mod declared;
pub mod events;
pub mod health;

pub use events::{Events, NoEvents};
pub use health::Health;
