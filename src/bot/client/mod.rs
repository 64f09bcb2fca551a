//! The bot's networking: a protoo signaling client, a WebRTC transport (ICE controlling agent,
//! DTLS client, SRTP) and [`Bot`], one mediasoup-demo peer that produces synthetic Opus/VP8 and
//! consumes what the room sends.
//!
//! Sans-IO cores, unit-tested without sockets:
//! - [`ProtooClientCore`] (`protoo.rs`): request ids, matching responses to waiters, typing
//!   incoming messages.
//! - [`IceController`] (`ice.rs`): ICE controlling checks against an ICE-lite node (RFC 8445
//!   §7.2.5 with aggressive nomination) and consent freshness (RFC 7675).
//! - [`producer_rtp_parameters`], [`simulcast_rtp_parameters`], [`bot_rtp_capabilities`], [`ConsumerStream::from_request`],
//!   [`TransportInfo`] (`params.rs`): mediasoup ORTC objects built from the router's
//!   capabilities and the node's responses.
//!
//! Glue: [`SignalingClient`] (`protoo.rs`, one reader and one writer task per WebSocket),
//! [`BotTransport`] (`transport.rs`, one driver task per transport owning its socket, the ICE
//! core, the DTLS session, both SRTP contexts, the media sources and the receive statistics)
//! and [`Bot`] (`bot.rs`, one peer's signaling, transports, producers and consumers).
//!
//! Time constants are in [`crate::timing`] (`BOT_*`). Everything queued is bounded; nothing
//! here panics on what the node sends.

use thiserror::Error;

use super::media::MediaError;

mod bot;
mod ice;
mod params;
mod protoo;
mod transport;

pub use bot::{Bot, BotEvent, BotOptions, ProducerInfo, VideoRate};
pub use ice::{IceController, IceInput, IceParameters, IceState, ICE_MAX_PENDING};
pub use params::{
    bot_rtp_capabilities, producer_rtp_parameters, simulcast_rtp_parameters, ConsumerStream,
    IceCandidate, ProducerParameters, SimulcastEncoding, SimulcastLayer, SimulcastParameters,
    TransportInfo, MAX_SIMULCAST_LAYERS, SIMULCAST_LAYERS,
};
pub use protoo::{
    signaling_url, signaling_url_with_token, Incoming, ProtooClientCore, ServerMessage,
    SignalingClient, MAX_PENDING_REQUESTS,
};
pub use transport::{BotTransport, SourceConfig, StreamStats, TransportState};

/// Errors of the bot's networking.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BotError {
    /// The WebSocket connection could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// The signaling connection closed while a request was outstanding or being sent.
    #[error("signaling connection closed")]
    SignalingClosed,
    /// A request got no response within
    /// [`BOT_REQUEST_TIMEOUT`](crate::timing::BOT_REQUEST_TIMEOUT).
    #[error("request {0} timed out")]
    Timeout(String),
    /// More than [`MAX_PENDING_REQUESTS`] requests are outstanding.
    #[error("too many outstanding signaling requests")]
    TooManyPending,
    /// The node answered a request with a protoo error.
    #[error("{method} rejected: {code} {reason}")]
    Rejected {
        /// Method of the request.
        method: String,
        /// protoo errorCode.
        code: u16,
        /// protoo errorReason.
        reason: String,
    },
    /// A message from the node does not have the shape mediasoup-demo gives it.
    #[error("unexpected {what} from the node: {reason}")]
    Protocol {
        /// Which message.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The router does not offer a codec the bot needs.
    #[error("router capabilities lack {0}")]
    MissingCodec(&'static str),
    /// The transport offers no candidate of the wanted protocol.
    #[error("no {0} ICE candidate offered")]
    NoCandidate(&'static str),
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The DTLS identity could not be created.
    #[error(transparent)]
    Dtls(#[from] crate::edge::dtls::DtlsError),
    /// A media source rejected its configuration.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The transport driver has stopped.
    #[error("transport closed")]
    TransportClosed,
    /// An event did not come before its deadline.
    #[error("timed out waiting for {0}")]
    WaitTimeout(String),
    /// An option or argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
