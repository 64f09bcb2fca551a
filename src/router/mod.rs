//! The router model: Router (one per room per node), Transport, Producer, Consumer with
//! mediasoup's semantics.
//!
//! Sans-IO cores: [`rtp_parameters`] and [`ortc`] (capability negotiation), [`seq`] (sequence
//! and timestamp rewriting), [`rtx`] (retransmission buffer), [`keyframe`] (codec keyframe
//! detection), [`simulcast`] (layer selection), [`rtcp_core`] (reports, NACK generation,
//! transport-wide-cc feedback, keyframe request throttling).

pub mod keyframe;
pub mod ortc;
pub mod rtcp_core;
pub mod rtp_parameters;
pub mod rtx;
pub mod seq;
pub mod simulcast;
