//! The pipe wire format: the header of media datagrams and the versioned MessagePack control
//! protocol, both sans-IO (bytes in, bytes or values out; no sockets, no clock).
//!
//! # Datagrams
//!
//! One RTP or RTCP packet per QUIC datagram, after a header of 2 to 9 bytes:
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 ...
//! +-------+-------+---------------------------+----------------------------
//! |version| kind  | stream id (QUIC varint,   | packet (1..=max bytes)
//! |  = 1  |       |  1, 2, 4 or 8 bytes)      |
//! +-------+-------+---------------------------+----------------------------
//! ```
//!
//! The stream id is an RFC 9000 §16 variable-length integer (two high bits give the length;
//! values up to 2^62 - 1). Origins assign small ids, so it is usually one byte. We write the
//! shortest form and accept any form, as QUIC does. [`DatagramKind`] lists the kinds; a datagram
//! of another version or kind is refused with an error the link counts and drops.
//!
//! # Control stream
//!
//! One bidirectional QUIC stream per link carries frames: a 4-byte big-endian length, then a
//! MessagePack body of at most [`MAX_CONTROL_MESSAGE`] bytes holding one [`ControlMessage`].
//!
//! The enum is *externally tagged*, the serde default, which rmp-serde writes as a one-entry map
//! `{ "<Variant>": { <field>: <value>, ... } }`: the type name comes first and is read before
//! the body (see [`WireError::UnknownMessage`]), and structs are maps with named fields
//! (`write_named`), so a later version can add fields (old peers ignore unknown fields; new
//! fields must be `#[serde(default)]` so new peers accept old messages). Because frames are
//! length-prefixed, a message this version cannot decode (a newer type or bad fields) is
//! skipped without losing the stream; only a broken frame (a length above the limit) is fatal.
//! A `type`-field (internally tagged) layout was not chosen: serde must then buffer the whole
//! body before picking the variant, and it mishandles untagged fields such as
//! [`crate::router::rtp_parameters::ParameterValue`] less predictably.
//!
//! Versioning: each side sends [`PROTOCOL_VERSION`] in its [`Hello`]; both speak
//! `min(local, peer)` ([`negotiated_version`]) and refuse a peer older than
//! [`MIN_PROTOCOL_VERSION`] ([`check_hello`]).

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::router::rtp_parameters::{MediaKind, RtpParameters};

/// The control protocol version this build speaks (the highest it supports).
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest control protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The datagram header version (high 4 bits of the first byte).
pub const DATAGRAM_VERSION: u8 = 1;
/// Default largest RTP/RTCP packet carried in one datagram, header excluded.
pub const DEFAULT_MAX_PACKET: usize = 1400;
/// Largest stream id: the largest QUIC varint, 2^62 - 1.
pub const MAX_STREAM_ID: u64 = (1 << 62) - 1;
/// Largest datagram header: one byte plus an 8-byte varint.
pub const MAX_DATAGRAM_HEADER: usize = 9;
/// Largest control message body (the frame's 4-byte length prefix excluded).
pub const MAX_CONTROL_MESSAGE: usize = 1 << 20;
/// Deepest MessagePack nesting accepted in a control body. Our messages nest about eight
/// levels; the bound keeps hostile input from recursing deep into the decoder.
const MAX_CONTROL_DEPTH: usize = 32;
/// Longest message type name echoed back in [`WireError::UnknownMessage`].
const MAX_TYPE_NAME: usize = 64;

/// Errors of the pipe wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The datagram holds no header byte.
    #[error("empty datagram")]
    EmptyDatagram,
    /// The datagram header's version is not [`DATAGRAM_VERSION`].
    #[error("unsupported datagram version {version}")]
    UnsupportedVersion {
        /// The version found (high 4 bits of the first byte).
        version: u8,
    },
    /// The datagram kind is not one of [`DatagramKind`] (perhaps from a newer peer).
    #[error("unknown datagram kind {kind}")]
    UnknownKind {
        /// The kind found (low 4 bits of the first byte).
        kind: u8,
    },
    /// The datagram ends inside the stream id varint.
    #[error("truncated stream id")]
    TruncatedVarint,
    /// The datagram (or the packet to send) has a header but no packet bytes.
    #[error("empty packet")]
    EmptyPacket,
    /// The packet is longer than the configured maximum.
    #[error("packet of {len} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// The packet length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A stream id to encode exceeds [`MAX_STREAM_ID`].
    #[error("stream id {stream_id} exceeds 2^62 - 1")]
    StreamIdOutOfRange {
        /// The stream id.
        stream_id: u64,
    },
    /// The output slice cannot hold the datagram header.
    #[error("buffer of {available} bytes cannot hold {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A control frame announced more than the decoder's maximum. Fatal: the stream is out of
    /// sync or hostile and the link must be closed; the decoder stays failed.
    #[error("control frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced body length.
        len: u64,
        /// The decoder's maximum.
        max: usize,
    },
    /// A whole control frame names a message type this version does not know (a newer peer).
    /// Skippable: the frame was consumed and the next message can be decoded.
    #[error("unknown control message type {type_name:?}")]
    UnknownMessage {
        /// The type name read before the body (cut to 64 bytes).
        type_name: String,
    },
    /// A whole control frame could not be decoded as a [`ControlMessage`] (bad fields, bad
    /// MessagePack, trailing bytes, empty body). Skippable like [`Self::UnknownMessage`].
    #[error("malformed control message (type {type_name:?}): {reason}")]
    MalformedMessage {
        /// The type name, when one could be read.
        type_name: Option<String>,
        /// What the decoder objected to.
        reason: String,
    },
    /// A message to send encodes to more than [`MAX_CONTROL_MESSAGE`] bytes; nothing was
    /// written.
    #[error("control message of {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// The encoded body length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// MessagePack encoding failed (not expected for [`ControlMessage`]); nothing was written.
    #[error("control message encoding failed: {reason}")]
    Encode {
        /// The encoder's message.
        reason: String,
    },
}

impl WireError {
    /// True for control errors after which the decoder goes on with the next frame: the link
    /// logs and counts them, it does not disconnect.
    pub fn is_skippable(&self) -> bool {
        matches!(
            self,
            WireError::UnknownMessage { .. } | WireError::MalformedMessage { .. }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------------------------

/// What a datagram carries, and in which direction (the low 4 bits of its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DatagramKind {
    /// An RTP packet (media or RTX) of a piped producer, origin to far node.
    Rtp = 0,
    /// RTCP about a piped stream (sender reports, SDES, BYE), origin to far node.
    RtcpFromOrigin = 1,
    /// RTCP feedback about a piped stream (NACK, PLI, FIR, receiver reports), far node to
    /// origin.
    RtcpFromFar = 2,
    /// Padding sent to probe the link's bandwidth; the receiver drops it after counting.
    Probe = 3,
}

impl DatagramKind {
    /// The kind with these low 4 bits, if any.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::Rtp),
            1 => Some(Self::RtcpFromOrigin),
            2 => Some(Self::RtcpFromFar),
            3 => Some(Self::Probe),
            _ => None,
        }
    }

    /// The datagram's first byte: version in the high 4 bits, kind in the low 4.
    pub fn header_byte(self) -> u8 {
        (DATAGRAM_VERSION << 4) | self as u8
    }
}

/// A parsed datagram; the packet borrows the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// What the packet is.
    pub kind: DatagramKind,
    /// The piped stream, as assigned in [`ControlMessage::Subscribed`].
    pub stream_id: u64,
    /// The RTP or RTCP packet (or probe padding); never empty.
    pub packet: &'a [u8],
}

/// Length of the shortest QUIC varint holding `v`, or `None` above [`MAX_STREAM_ID`].
pub fn varint_len(v: u64) -> Option<usize> {
    match v {
        0..=0x3f => Some(1),
        0x40..=0x3fff => Some(2),
        0x4000..=0x3fff_ffff => Some(4),
        0x4000_0000..=MAX_STREAM_ID => Some(8),
        _ => None,
    }
}

/// Length of the header [`encode_datagram_header`] writes for `stream_id` (2 to 9 bytes), so
/// a sender can leave that much headroom before the packet.
pub fn datagram_header_len(stream_id: u64) -> Result<usize, WireError> {
    varint_len(stream_id)
        .map(|n| 1 + n)
        .ok_or(WireError::StreamIdOutOfRange { stream_id })
}

/// Writes the datagram header for `kind` and `stream_id` at the start of `out` and returns its
/// length. The packet goes right after it.
pub fn encode_datagram_header(
    kind: DatagramKind,
    stream_id: u64,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let len = datagram_header_len(stream_id)?;
    let Some(out) = out.get_mut(..len) else {
        return Err(WireError::BufferTooSmall {
            needed: len,
            available: out.len(),
        });
    };
    out[0] = kind.header_byte();
    let varint = &mut out[1..];
    let prefix: u8 = match varint.len() {
        1 => 0x00,
        2 => 0x40,
        4 => 0x80,
        _ => 0xc0,
    };
    let be = stream_id.to_be_bytes();
    varint.copy_from_slice(&be[8 - varint.len()..]);
    varint[0] |= prefix;
    Ok(len)
}

/// Appends a datagram (header then `packet`) to `out`, refusing an empty packet or one over
/// [`DEFAULT_MAX_PACKET`]. `out` is left unchanged on error; reuse it to avoid allocating.
pub fn write_datagram(
    kind: DatagramKind,
    stream_id: u64,
    packet: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    write_datagram_with_max(kind, stream_id, packet, DEFAULT_MAX_PACKET, out)
}

/// [`write_datagram`] with a configured maximum packet length.
pub fn write_datagram_with_max(
    kind: DatagramKind,
    stream_id: u64,
    packet: &[u8],
    max_packet: usize,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    check_packet_len(packet.len(), max_packet)?;
    let mut header = [0u8; MAX_DATAGRAM_HEADER];
    let n = encode_datagram_header(kind, stream_id, &mut header)?;
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(packet);
    Ok(())
}

/// Parses a received datagram, refusing packets over [`DEFAULT_MAX_PACKET`]. Never panics.
pub fn parse_datagram(datagram: &[u8]) -> Result<Datagram<'_>, WireError> {
    parse_datagram_with_max(datagram, DEFAULT_MAX_PACKET)
}

/// [`parse_datagram`] with a configured maximum packet length.
pub fn parse_datagram_with_max(
    datagram: &[u8],
    max_packet: usize,
) -> Result<Datagram<'_>, WireError> {
    let (&first, rest) = datagram.split_first().ok_or(WireError::EmptyDatagram)?;
    let version = first >> 4;
    if version != DATAGRAM_VERSION {
        return Err(WireError::UnsupportedVersion { version });
    }
    let kind = DatagramKind::from_bits(first & 0x0f)
        .ok_or(WireError::UnknownKind { kind: first & 0x0f })?;
    let (stream_id, packet) = read_varint(rest).ok_or(WireError::TruncatedVarint)?;
    check_packet_len(packet.len(), max_packet)?;
    Ok(Datagram {
        kind,
        stream_id,
        packet,
    })
}

fn check_packet_len(len: usize, max: usize) -> Result<(), WireError> {
    if len == 0 {
        Err(WireError::EmptyPacket)
    } else if len > max {
        Err(WireError::PacketTooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Reads a QUIC varint from the front of `buf`; returns it and the bytes after it.
fn read_varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return None;
    }
    let (bytes, rest) = buf.split_at(len);
    let mut v = u64::from(first & 0x3f);
    for &b in &bytes[1..] {
        v = (v << 8) | u64::from(b);
    }
    Some((v, rest))
}

// ---------------------------------------------------------------------------------------------
// Control messages
// ---------------------------------------------------------------------------------------------

/// Why a node refuses a link (or why the peer refused ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefuseCode {
    /// The peer's protocol version is older than [`MIN_PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// The peer belongs to another cluster.
    WrongCluster,
    /// The peer is not the node we dialled (or expected).
    WrongNodeId,
    /// The hello is unusable (empty node id or cluster, version 0).
    BadHello,
    /// A link with this node already exists.
    DuplicateLink,
    /// This node is draining and accepts no new links.
    ShuttingDown,
    /// A code from a newer version that this one does not know.
    #[serde(other)]
    Other,
}

/// A refusal: a code a program can act on and a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct Refusal {
    /// What went wrong.
    pub code: RefuseCode,
    /// Details for the logs of both nodes.
    pub reason: String,
}

impl From<Refusal> for ControlMessage {
    fn from(r: Refusal) -> Self {
        ControlMessage::Refuse {
            code: r.code,
            reason: r.reason,
        }
    }
}

/// A producer as the room directory announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducerInfo {
    /// The producer (the id it keeps on every node).
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Whether it is paused at the origin.
    pub paused: bool,
    /// Its router-side ("consumable") RTP parameters: router payload types and header
    /// extension ids, one encoding per simulcast stream with the SSRC the pipe carries it
    /// with. A far node derives its consumers from them, so it can answer `newConsumer` before
    /// any media is piped. Empty in announcements of builds that did not send it.
    #[serde(default)]
    pub rtp_parameters: RtpParameters,
    /// The producer's `appData` as JSON text, passed through to `newConsumer` unparsed (see
    /// [`PeerInfo::device`]).
    #[serde(default)]
    pub app_data: String,
}

/// A peer connected to the sending node, as the room directory announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// The name shown to other peers.
    pub display_name: String,
    /// The client's device description (`{flag, name, version}`) as JSON text, passed through
    /// unparsed to `join` / `newPeer`. Text, not a nested MessagePack value: the pipe never
    /// looks inside it, it keeps the JSON exactly as the client sent it, and it bounds the
    /// nesting a hostile peer can make the decoder walk.
    pub device: String,
    /// Its producers on the sending node.
    pub producers: Vec<ProducerInfo>,
}

/// The first message of each side of a link: who it is and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The highest version the sender speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The sender's node id (also checked against its certificate by the TLS glue).
    pub node_id: NodeId,
    /// The cluster name; nodes of different clusters never link.
    pub cluster: String,
    /// Software and version, for logs (e.g. "pipemesh 0.1.0").
    pub software: String,
}

/// One message of the control stream. See the module docs for the encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// First message of each side: who it is and what it speaks.
    Hello(Hello),
    /// Answer to an accepted hello.
    HelloAck {
        /// The version both sides speak from now on ([`negotiated_version`]).
        protocol_version: u16,
        /// The answering node's id.
        node_id: NodeId,
    },
    /// The link is refused; the sender closes it after this message.
    Refuse {
        /// What went wrong.
        code: RefuseCode,
        /// Details.
        reason: String,
    },
    /// The sender will close the link on purpose (draining, configuration change): the peer
    /// should not count it as a failure.
    Goodbye {
        /// Details for the logs.
        reason: String,
    },
    /// Far node to origin: forward this producer over the link.
    Subscribe {
        /// Chosen by the far node to match the answer.
        request_id: u64,
        /// The room the producer is in.
        room_id: RoomId,
        /// The producer wanted.
        producer_id: ProducerId,
    },
    /// Origin to far node: the producer is now forwarded; create a pipe producer.
    Subscribed {
        /// The request answered.
        request_id: u64,
        /// The producer.
        producer_id: ProducerId,
        /// One datagram stream id per entry of `rtp_parameters.encodings`, in order. A stream
        /// carries its encoding's media RTP, its RTX RTP (told apart by SSRC) and RTCP about
        /// both.
        stream_ids: Vec<u64>,
        /// Audio or video.
        kind: MediaKind,
        /// The producer's RTP parameters (the pipe producer is created with them).
        rtp_parameters: RtpParameters,
        /// Whether the producer is paused now.
        paused: bool,
        /// Current score of each encoding (0-10), as in [`ControlMessage::ProducerScore`].
        scores: Vec<u8>,
        /// The nodes the stream passed through before the sender, origin first: empty when
        /// the sender is the origin (and from builds that did not send it), `[origin, …]` when
        /// the sender relays a stream piped to it. The receiver records `path + [sender]`, so
        /// every piped stream knows its way from the origin.
        #[serde(default)]
        path: Vec<NodeId>,
    },
    /// Origin to far node: the subscription cannot be served.
    SubscribeFailed {
        /// The request answered.
        request_id: u64,
        /// The producer.
        producer_id: ProducerId,
        /// Why (unknown producer, closed, limit reached...).
        reason: String,
    },
    /// Far node to origin: stop forwarding this producer (no consumer left).
    Unsubscribe {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Origin to far node: the producer was paused.
    ProducerPaused {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Origin to far node: the producer was resumed.
    ProducerResumed {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Origin to far node: the producer was closed; its streams are gone.
    ProducerClosed {
        /// The producer.
        producer_id: ProducerId,
    },
    /// Origin to far node: new scores (0-10), one per encoding.
    ProducerScore {
        /// The producer.
        producer_id: ProducerId,
        /// One score per encoding.
        scores: Vec<u8>,
    },
    /// Far node to origin: a consumer needs a keyframe.
    KeyFrameRequest {
        /// The producer.
        producer_id: ProducerId,
        /// The encoding index, or `None` for all encodings.
        encoding: Option<u8>,
    },
    /// Sender (origin or relay) to far node: the link is congested and the sender withholds
    /// the top `layers` simulcast layers of everything it pipes on it (0: every layer flows
    /// again; see [`crate::pipe::shedding`]). Encoding `e` of a producer with `n` encodings is
    /// withheld when `e >= max(1, n - layers)`. Advisory: the far node's layer selection stops
    /// targeting the withheld layers at once instead of waiting for their silence. Older
    /// nodes skip it.
    ShedLayers {
        /// Top layers withheld.
        layers: u8,
    },
    /// Relay to the nodes it pipes a producer to: the stream now reaches the relay another
    /// way (its own upstream re-routed). The receiver, when the sender is its upstream for the
    /// producer, records `path + [sender]` as in [`ControlMessage::Subscribed`] and passes the
    /// news on to its own downstream nodes; a path through the receiver's downstream (a loop)
    /// is refused. Older nodes skip it (their recorded paths then go stale, nothing else).
    PathChanged {
        /// The producer.
        producer_id: ProducerId,
        /// The sender's new path, origin first, without the sender.
        path: Vec<NodeId>,
    },
    /// RTT probe; answered at once with [`ControlMessage::Pong`] carrying the same nonce.
    Ping {
        /// Chosen by the sender.
        nonce: u64,
    },
    /// Answer to [`ControlMessage::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Ask for the sender's view of a room: a [`ControlMessage::RoomPeers`] now, then
    /// `Peer*` / `Producer*` updates until [`ControlMessage::RoomUnwatch`].
    RoomWatch {
        /// The room.
        room_id: RoomId,
    },
    /// Stop the updates asked for by [`ControlMessage::RoomWatch`].
    RoomUnwatch {
        /// The room.
        room_id: RoomId,
    },
    /// All peers of the room connected to the sending node; replaces what was known.
    RoomPeers {
        /// The room.
        room_id: RoomId,
        /// Its peers on the sending node.
        peers: Vec<PeerInfo>,
    },
    /// A peer joined the room on the sending node.
    PeerJoined {
        /// The room.
        room_id: RoomId,
        /// The peer (with any producers it already has).
        peer: PeerInfo,
    },
    /// A peer left the room on the sending node.
    PeerLeft {
        /// The room.
        room_id: RoomId,
        /// The peer.
        peer_id: PeerId,
    },
    /// A peer on the sending node created a producer.
    ProducerAdded {
        /// The room.
        room_id: RoomId,
        /// The producing peer.
        peer_id: PeerId,
        /// The producer.
        producer: ProducerInfo,
    },
    /// A producer of a peer on the sending node went away.
    ProducerRemoved {
        /// The room.
        room_id: RoomId,
        /// The producing peer.
        peer_id: PeerId,
        /// The producer.
        producer_id: ProducerId,
    },
}

/// Every message type name this version knows, as written on the wire.
pub const MESSAGE_TYPES: &[&str] = &[
    "Hello",
    "HelloAck",
    "Refuse",
    "Goodbye",
    "Subscribe",
    "Subscribed",
    "SubscribeFailed",
    "Unsubscribe",
    "ProducerPaused",
    "ProducerResumed",
    "ProducerClosed",
    "ProducerScore",
    "KeyFrameRequest",
    "ShedLayers",
    "PathChanged",
    "Ping",
    "Pong",
    "RoomWatch",
    "RoomUnwatch",
    "RoomPeers",
    "PeerJoined",
    "PeerLeft",
    "ProducerAdded",
    "ProducerRemoved",
];

impl ControlMessage {
    /// The type name written on the wire (for logs and metrics).
    pub fn type_name(&self) -> &'static str {
        match self {
            ControlMessage::Hello(_) => "Hello",
            ControlMessage::HelloAck { .. } => "HelloAck",
            ControlMessage::Refuse { .. } => "Refuse",
            ControlMessage::Goodbye { .. } => "Goodbye",
            ControlMessage::Subscribe { .. } => "Subscribe",
            ControlMessage::Subscribed { .. } => "Subscribed",
            ControlMessage::SubscribeFailed { .. } => "SubscribeFailed",
            ControlMessage::Unsubscribe { .. } => "Unsubscribe",
            ControlMessage::ProducerPaused { .. } => "ProducerPaused",
            ControlMessage::ProducerResumed { .. } => "ProducerResumed",
            ControlMessage::ProducerClosed { .. } => "ProducerClosed",
            ControlMessage::ProducerScore { .. } => "ProducerScore",
            ControlMessage::KeyFrameRequest { .. } => "KeyFrameRequest",
            ControlMessage::ShedLayers { .. } => "ShedLayers",
            ControlMessage::PathChanged { .. } => "PathChanged",
            ControlMessage::Ping { .. } => "Ping",
            ControlMessage::Pong { .. } => "Pong",
            ControlMessage::RoomWatch { .. } => "RoomWatch",
            ControlMessage::RoomUnwatch { .. } => "RoomUnwatch",
            ControlMessage::RoomPeers { .. } => "RoomPeers",
            ControlMessage::PeerJoined { .. } => "PeerJoined",
            ControlMessage::PeerLeft { .. } => "PeerLeft",
            ControlMessage::ProducerAdded { .. } => "ProducerAdded",
            ControlMessage::ProducerRemoved { .. } => "ProducerRemoved",
        }
    }
}

/// Appends one control frame (4-byte big-endian length, then the MessagePack body with named
/// fields) to `out`. `out` is left unchanged on error.
pub fn encode_control(msg: &ControlMessage, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = rmp_serde::encode::write_named(out, msg) {
        out.truncate(start);
        return Err(WireError::Encode {
            reason: e.to_string(),
        });
    }
    let len = out.len() - start - 4;
    if len > MAX_CONTROL_MESSAGE {
        out.truncate(start);
        return Err(WireError::MessageTooLarge {
            len,
            max: MAX_CONTROL_MESSAGE,
        });
    }
    // Fits: len <= MAX_CONTROL_MESSAGE < u32::MAX.
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes one control body (a frame without its length prefix). Errors are all skippable.
pub fn decode_control_body(body: &[u8]) -> Result<ControlMessage, WireError> {
    let type_name = peek_type_name(body);
    if let Some(name) = type_name {
        if !MESSAGE_TYPES.contains(&name) {
            let cut = name
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .take_while(|&end| end <= MAX_TYPE_NAME)
                .last()
                .unwrap_or(0);
            return Err(WireError::UnknownMessage {
                type_name: name[..cut].to_owned(),
            });
        }
    }
    let malformed = |reason: String| WireError::MalformedMessage {
        type_name: type_name.map(str::to_owned),
        reason,
    };
    let mut rest = body;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_CONTROL_DEPTH);
    let msg = ControlMessage::deserialize(&mut de).map_err(|e| malformed(e.to_string()))?;
    drop(de);
    if !rest.is_empty() {
        return Err(malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

/// The type name of an externally tagged body: a one-entry map whose key is a string.
fn peek_type_name(body: &[u8]) -> Option<&str> {
    let (&m, rest) = body.split_first()?;
    let rest = match m {
        0x81 => rest,
        0xde => rest.strip_prefix(&[0x00, 0x01])?,
        0xdf => rest.strip_prefix(&[0x00, 0x00, 0x00, 0x01])?,
        _ => return None,
    };
    let (&m, rest) = rest.split_first()?;
    let (len, rest) = match m {
        0xa0..=0xbf => (usize::from(m & 0x1f), rest),
        0xd9 => (usize::from(*rest.first()?), rest.get(1..)?),
        0xda => {
            let b = rest.get(..2)?;
            (usize::from(u16::from_be_bytes([b[0], b[1]])), &rest[2..])
        }
        _ => return None,
    };
    std::str::from_utf8(rest.get(..len)?).ok()
}

/// Splits the control stream into messages, with a bounded buffer.
///
/// The buffer holds at most one largest frame (4 + max bytes) and grows only as frames need.
/// After a fatal error ([`WireError::FrameTooLarge`]) the decoder stays failed: the link must
/// be closed.
#[derive(Debug)]
pub struct ControlDecoder {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    max_message: usize,
    failed: Option<WireError>,
}

impl Default for ControlDecoder {
    fn default() -> Self {
        Self::new(MAX_CONTROL_MESSAGE)
    }
}

impl ControlDecoder {
    /// A decoder accepting bodies of up to `max_message` bytes (capped at
    /// [`MAX_CONTROL_MESSAGE`]).
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_message: max_message.min(MAX_CONTROL_MESSAGE),
            failed: None,
        }
    }

    /// The largest body accepted.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a fatal error occurred.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Copies as much of `data` as fits and returns how many bytes were taken. Take messages
    /// out with [`Self::next`] until it returns `Ok(None)`, then push the rest: there is then
    /// room for at least one more byte. Takes nothing once failed.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        let cap = 4 + self.max_message;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let n = data.len().min(cap - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// The next message, `Ok(None)` when more bytes are needed, a skippable error
    /// ([`WireError::is_skippable`]; call again for the next message) or a fatal one.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<ControlMessage>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_message {
            let e = WireError::FrameTooLarge {
                len: len as u64,
                max: self.max_message,
            };
            self.failed = Some(e.clone());
            return Err(e);
        }
        let Some(body) = avail.get(4..4 + len) else {
            return Ok(None);
        };
        let result = decode_control_body(body);
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        result.map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake decision
// ---------------------------------------------------------------------------------------------

/// The version two nodes speak: the lower of their highest versions.
pub fn negotiated_version(local: u16, peer: u16) -> u16 {
    local.min(peer)
}

/// Decides whether to accept a peer's [`Hello`]. `expected_node_id` is the node we dialled
/// (outgoing links) or `None` to accept any node of the cluster (incoming). On success, speak
/// [`negotiated_version`]`(local_version, hello.protocol_version)`: a newer peer is accepted,
/// as it speaks down to us.
pub fn check_hello(
    local_version: u16,
    local_cluster: &str,
    expected_node_id: Option<&str>,
    hello: &Hello,
) -> Result<(), Refusal> {
    let refuse = |code, reason: String| Err(Refusal { code, reason });
    let Hello {
        protocol_version,
        node_id,
        cluster,
        ..
    } = hello;
    if *protocol_version == 0 || node_id.as_str().is_empty() || cluster.is_empty() {
        return refuse(
            RefuseCode::BadHello,
            format!(
                "hello with version {protocol_version}, node id {:?}, cluster {cluster:?}",
                node_id.as_str()
            ),
        );
    }
    if negotiated_version(local_version, *protocol_version) < MIN_PROTOCOL_VERSION {
        return refuse(
            RefuseCode::UnsupportedVersion,
            format!(
                "peer speaks version {protocol_version}, we need at least {MIN_PROTOCOL_VERSION}"
            ),
        );
    }
    if cluster != local_cluster {
        return refuse(
            RefuseCode::WrongCluster,
            format!("peer is in cluster {cluster:?}, we are in {local_cluster:?}"),
        );
    }
    if let Some(expected) = expected_node_id {
        if node_id.as_str() != expected {
            return refuse(
                RefuseCode::WrongNodeId,
                format!(
                    "peer is node {:?}, we expected {expected:?}",
                    node_id.as_str()
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
