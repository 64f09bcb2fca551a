//! # pipemesh: a cascading WebRTC SFU
//!
//! One pipemesh node runs per host. Clients connect over WebSocket signaling (the protoo
//! protocol of mediasoup-demo v3) and media flows through WebRtcTransports terminated by the
//! node's edge: ICE-lite, DTLS-SRTP, RTP/RTCP, on one UDP and one TCP port.
//!
//! ## Architecture
//!
//! ```text
//!  signaling (WebSocket, protoo)          admin (HTTP: /healthz)
//!        │ commands + replies (mpsc/oneshot)
//!        ▼
//!  worker task ── owns every Router, Transport, Producer, Consumer by &mut
//!        ▲  datagrams / TCP frames             │ sendto / TCP writer queues
//!        │                                     ▼
//!  edge glue: UDP socket, TCP listener, DTLS handshakes (the `dtls` crate)
//! ```
//!
//! Protocol logic lives in sans-IO cores that take `now` and an input and produce outputs,
//! never reading the clock or touching sockets: [`edge::stun`], [`edge::ice`], [`edge::demux`],
//! [`router::ortc`], [`router::seq`], [`router::rtx`], [`router::simulcast`],
//! [`router::keyframe`], [`router::rtcp_core`], [`signaling::protoo`]. The tokio glue around them is
//! kept thin: [`edge::glue`], [`signaling::server`], [`node`].

pub mod admin;
pub mod auth;
pub mod bench;
pub mod bot;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod edge;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod pipe;
pub mod plot;
pub mod procfs;
pub mod router;
pub mod signaling;
pub mod sim;
pub mod srtp;
pub mod timing;
pub mod wan;
pub mod worker;
