//! The edge: client WebRtcTransports as mediasoup terminates them. ICE-lite, DTLS, SRTP/SRTCP
//! on one UDP and one TCP port per node.
//!
//! Sans-IO cores: [`stun`] (STUN messages), [`ice`] (ICE-lite server state per transport),
//! [`demux`] (RFC 7983 first-byte classification, RFC 4571 framing).

pub mod demux;
pub mod dtls;
pub mod ice;
pub mod stun;
