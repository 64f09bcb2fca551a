//! `pipemesh bot`: a headless mediasoup-style client, the driver of integration and load tests.
//!
//! Sans-IO parts: [`media`] (synthetic Opus/VP8 packetisation with embedded send times) and
//! [`stats`] (receive statistics: loss, jitter, one-way latency).

pub mod client;
pub mod media;
pub mod run;
pub mod stats;
