//! Telemetry: the events logic emits, the status model, and the HTTP server.

pub mod events;
pub mod http;
pub mod status;

pub use events::{Events, NoEvents};
pub use status::{StatusBoard, TailerProgress, TailerState};
