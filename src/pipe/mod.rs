//! Pipes: links between nodes over QUIC (`quinn`) that carry piped producers from the node
//! that has them to the nodes whose peers consume them.
//!
//! Sans-IO cores: [`wire`] (the datagram header and the versioned MessagePack control protocol),
//! [`link`] (link and subscription state: reconnect with jittered backoff, grace periods),
//! [`rate`] (bitrate and loss of a link over a sliding window), [`shedding`] (which simulcast
//! layers a congested link withholds).
//! Glue: [`endpoint`] (the QUIC endpoint: links to other nodes, hello, datagrams and control),
//! [`tls`] (mutual TLS with a cluster CA, node identity checks), [`certs`] (the
//! `pipemesh certs` command).

pub mod certs;
pub mod congestion;
pub mod endpoint;
pub mod link;
pub mod rate;
pub mod shedding;
pub mod tls;
pub mod wire;
