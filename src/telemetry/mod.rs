//! Telemetry: the events logic emits, the status model, and the HTTP server.

pub mod client;
pub mod declared;
pub mod http;
pub mod metrics;
pub mod status;

pub use metrics::Metrics;
pub use status::{StatusBoard, TailerProgress, TailerState};
