//! Signaling: the protoo protocol of mediasoup-demo v3 over WebSocket.

pub mod admission;
pub mod limits;
pub mod protoo;
pub mod server;
