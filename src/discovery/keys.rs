//! The key layout and value records of the cluster registry.
//!
//! Keys are relative to the cluster prefix; the backend adds `/pipemesh/<cluster>/`:
//!
//! - `nodes/<node>` → [`NodeRecord`], while the node runs;
//! - `rooms/<room>/nodes/<node>` → [`RoomHostRecord`], while the node has a local peer in the
//!   room;
//! - `rooms/<room>/peers/<node>/<peer>` → [`PeerRecord`], while the peer is connected to the
//!   node;
//! - `rooms/<room>/producers/<node>/<peer>/<producer>` → [`ProducerRecord`], while the producer
//!   exists.
//!
//! Every key is written by the node it names, bound to that node's lease, so a dead node's
//! keys vanish together when its lease expires. Putting the node before the peer in peer and
//! producer keys lets a node list or delete everything it wrote in a room by prefix.
//!
//! Each id is one path segment, percent-encoded: bytes outside `[A-Za-z0-9._~-]` become `%XX`
//! (uppercase hex), so `/` and `%` in a room name cannot forge another key. Decoding is strict:
//! an empty segment, a bad escape, a result that is not UTF-8, or a segment that would not
//! re-encode to exactly the same bytes (lowercase hex, needless escapes, raw bytes that should
//! have been escaped) is an error. So every id has exactly one key. Node ids must also pass
//! [`crate::config::valid_node_id`].
//!
//! Values are JSON objects with camelCase fields. Readers ignore unknown fields and fill
//! missing optional ones with defaults, so a newer node may add fields without breaking older
//! ones. Keys longer than [`MAX_KEY_LEN`] bytes and values longer than [`MAX_VALUE_LEN`] bytes
//! are malformed.
//!
//! This module is pure: it builds and parses keys and values, and knows nothing of the
//! directory that interprets them ([`crate::discovery::cluster`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::pipe::wire::{PeerInfo, ProducerInfo};
use crate::router::rtp_parameters::{MediaKind, RtpParameters};

/// The longest key (relative to the cluster prefix) a reader accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest value a reader accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Whether a node takes new peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Taking peers.
    #[default]
    Serving,
    /// Shutting down: keeps its peers until they leave, takes no new ones.
    Draining,
}

/// What a node carries, as it last published it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeLoad {
    /// Rooms with local peers.
    pub rooms: u64,
    /// Local peers.
    pub peers: u64,
    /// Local producers.
    pub producers: u64,
    /// Consumers (of local and piped producers).
    pub consumers: u64,
    /// Pipe links up.
    pub pipe_links: u64,
}

/// `nodes/<node>`: a node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node; must equal the id in the key.
    pub node_id: NodeId,
    /// Where it runs (operator-defined).
    #[serde(default)]
    pub region: String,
    /// The pipe listener other nodes dial ("ip:port"); `None` when the node takes no pipes.
    #[serde(default)]
    pub pipe_addr: Option<String>,
    /// Where clients connect for signaling.
    #[serde(default)]
    pub signaling_url: String,
    /// Its admin endpoint.
    #[serde(default)]
    pub admin_url: String,
    /// Serving or draining.
    #[serde(default)]
    pub state: NodeState,
    /// What it carries.
    #[serde(default)]
    pub load: NodeLoad,
    /// Software and version ("pipemesh 0.1.0").
    #[serde(default)]
    pub software: String,
    /// When the process started (Unix milliseconds).
    #[serde(default)]
    pub started_at_ms: u64,
    /// A value fresh at every start, telling one run of a node id from the next.
    #[serde(default)]
    pub incarnation: String,
}

/// `rooms/<room>/nodes/<node>`: the node has at least one local peer in the room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoomHostRecord {
    /// Since when (Unix milliseconds, as the node's clock told it).
    pub since_ms: u64,
}

/// `drain/<node>`: an operator asks the node to drain (`pipemesh drain`). Not bound to any
/// lease: it stays until `pipemesh undrain` deletes it, across restarts of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DrainRecord {
    /// When the request was made (Unix milliseconds, the operator's clock).
    pub requested_at_ms: u64,
    /// After this (Unix milliseconds), the node closes the sessions it still has; `None`:
    /// never, they end on their own.
    pub deadline_ms: Option<u64>,
    /// Who or why, for people reading `pipemesh nodes`.
    pub reason: String,
}

/// `rooms/<room>/peers/<node>/<peer>`: a peer connected to the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerRecord {
    /// The name shown to other peers.
    pub display_name: String,
    /// The client's device description, as the client sent it.
    pub device: serde_json::Value,
}

/// `rooms/<room>/producers/<node>/<peer>/<producer>`: a producer of a peer on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerRecord {
    /// Audio or video.
    pub kind: MediaKind,
    /// Paused at the origin. Informative: the pipe carries pause changes to subscribers.
    #[serde(default)]
    pub paused: bool,
    /// Its router-side ("consumable") RTP parameters (see [`ProducerInfo::rtp_parameters`]).
    #[serde(default)]
    pub rtp_parameters: RtpParameters,
    /// The producer's `appData`.
    #[serde(default)]
    pub app_data: serde_json::Value,
}

impl PeerRecord {
    /// The record of a local peer. A device that is not JSON text is stored as `null`.
    pub fn from_info(peer: &PeerInfo) -> Self {
        Self {
            display_name: peer.display_name.clone(),
            device: serde_json::from_str(&peer.device).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The peer as the directory reports it (JSON text for the device, no producers).
    pub fn to_info(&self, peer_id: &PeerId) -> PeerInfo {
        PeerInfo {
            peer_id: peer_id.clone(),
            display_name: self.display_name.clone(),
            device: self.device.to_string(),
            producers: Vec::new(),
        }
    }
}

impl ProducerRecord {
    /// The record of a local producer. `appData` that is not JSON text is stored as `{}`.
    pub fn from_info(producer: &ProducerInfo) -> Self {
        Self {
            kind: producer.kind,
            paused: producer.paused,
            rtp_parameters: producer.rtp_parameters.clone(),
            app_data: serde_json::from_str(&producer.app_data)
                .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        }
    }

    /// The producer as the directory reports it (JSON text for `appData`).
    pub fn to_info(&self, producer_id: &ProducerId) -> ProducerInfo {
        ProducerInfo {
            producer_id: producer_id.clone(),
            kind: self.kind,
            paused: self.paused,
            rtp_parameters: self.rtp_parameters.clone(),
            app_data: self.app_data.to_string(),
        }
    }
}

/// A value record of the layout; names the record in errors.
pub trait Record: Serialize + DeserializeOwned {
    /// The record's name, for errors and logs.
    const NAME: &'static str;
}

impl Record for NodeRecord {
    const NAME: &'static str = "node record";
}
impl Record for DrainRecord {
    const NAME: &'static str = "drain request";
}
impl Record for RoomHostRecord {
    const NAME: &'static str = "room host record";
}
impl Record for PeerRecord {
    const NAME: &'static str = "peer record";
}
impl Record for ProducerRecord {
    const NAME: &'static str = "producer record";
}

/// A key that is not part of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Longer than [`MAX_KEY_LEN`].
    #[error("key of {len} bytes (max {max})")]
    TooLong {
        /// The key's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not one of the four key shapes.
    #[error("not a pipemesh key")]
    UnknownShape,
    /// An id segment is empty.
    #[error("empty id segment")]
    EmptySegment,
    /// A `%` not followed by two hex digits.
    #[error("bad percent escape in segment {segment:?}")]
    BadEscape {
        /// The segment (lossy).
        segment: String,
    },
    /// The decoded id is not UTF-8.
    #[error("segment {segment:?} does not decode to UTF-8")]
    NotUtf8 {
        /// The segment (lossy).
        segment: String,
    },
    /// The segment is not the one encoding of its id (lowercase hex, needless escape, raw
    /// byte that must be escaped).
    #[error("segment {segment:?} is not canonically encoded")]
    NotCanonical {
        /// The segment (lossy).
        segment: String,
    },
    /// The node id fails [`crate::config::valid_node_id`].
    #[error("invalid node id {node:?}")]
    InvalidNodeId {
        /// The decoded node id.
        node: String,
    },
}

/// A value that is not the record its key calls for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Longer than [`MAX_VALUE_LEN`].
    #[error("value of {len} bytes (max {max})")]
    TooLong {
        /// The value's length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not JSON, or JSON of the wrong shape.
    #[error("bad {record}: {reason}")]
    Json {
        /// The record expected ([`Record::NAME`]).
        record: &'static str,
        /// What serde said.
        reason: String,
    },
    /// A node record under another node's key.
    #[error("node record for {record} under the key of {key}")]
    NodeMismatch {
        /// The node of the key.
        key: NodeId,
        /// The node the record names.
        record: NodeId,
    },
}

/// A key of the layout, decoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParsedKey {
    /// `nodes/<node>`.
    Node(NodeId),
    /// `rooms/<room>/nodes/<node>`.
    RoomHost {
        /// The room.
        room: RoomId,
        /// The hosting node.
        node: NodeId,
    },
    /// `rooms/<room>/peers/<node>/<peer>`.
    Peer {
        /// The room.
        room: RoomId,
        /// The node the peer is connected to.
        node: NodeId,
        /// The peer.
        peer: PeerId,
    },
    /// `rooms/<room>/producers/<node>/<peer>/<producer>`.
    Producer {
        /// The room.
        room: RoomId,
        /// The node the producer lives on.
        node: NodeId,
        /// The producing peer.
        peer: PeerId,
        /// The producer.
        producer: ProducerId,
    },
}

impl ParsedKey {
    /// The node that writes this key.
    pub fn node(&self) -> &NodeId {
        match self {
            ParsedKey::Node(node)
            | ParsedKey::RoomHost { node, .. }
            | ParsedKey::Peer { node, .. }
            | ParsedKey::Producer { node, .. } => node,
        }
    }

    /// The room, for room keys.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            ParsedKey::Node(_) => None,
            ParsedKey::RoomHost { room, .. }
            | ParsedKey::Peer { room, .. }
            | ParsedKey::Producer { room, .. } => Some(room),
        }
    }

    /// The key's text (the inverse of [`parse_key`]).
    pub fn to_key(&self) -> String {
        match self {
            ParsedKey::Node(node) => node_key(node),
            ParsedKey::RoomHost { room, node } => room_host_key(room, node),
            ParsedKey::Peer { room, node, peer } => peer_key(room, node, peer),
            ParsedKey::Producer {
                room,
                node,
                peer,
                producer,
            } => producer_key(room, node, peer, producer),
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// One id as a key segment: bytes outside `[A-Za-z0-9._~-]` become `%XX`.
pub fn encode_segment(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The id a key segment encodes; strict (see the module docs).
pub fn decode_segment(segment: &[u8]) -> Result<String, KeyError> {
    let lossy = || String::from_utf8_lossy(segment).into_owned();
    if segment.is_empty() {
        return Err(KeyError::EmptySegment);
    }
    let mut bytes = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        if b == b'%' {
            let hex = |j: usize| segment.get(j).and_then(|&c| char::from(c).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(KeyError::BadEscape { segment: lossy() });
            };
            // Two hex digits: hi * 16 + lo is at most 255.
            bytes.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            bytes.push(b);
            i += 1;
        }
    }
    let id = String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8 { segment: lossy() })?;
    if encode_segment(&id).as_bytes() != segment {
        return Err(KeyError::NotCanonical { segment: lossy() });
    }
    Ok(id)
}

fn decode_node(segment: &[u8]) -> Result<NodeId, KeyError> {
    let id = decode_segment(segment)?;
    if !crate::config::valid_node_id(&id) {
        return Err(KeyError::InvalidNodeId { node: id });
    }
    Ok(NodeId::from(id))
}

/// Decode a key (relative to the cluster prefix).
pub fn parse_key(key: &[u8]) -> Result<ParsedKey, KeyError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    let parts: Vec<&[u8]> = key.split(|&b| b == b'/').collect();
    let room = |s: &[u8]| decode_segment(s).map(RoomId::from);
    let peer = |s: &[u8]| decode_segment(s).map(PeerId::from);
    match parts.as_slice() {
        [b"nodes", n] => Ok(ParsedKey::Node(decode_node(n)?)),
        [b"rooms", r, b"nodes", n] => Ok(ParsedKey::RoomHost {
            room: room(r)?,
            node: decode_node(n)?,
        }),
        [b"rooms", r, b"peers", n, p] => Ok(ParsedKey::Peer {
            room: room(r)?,
            node: decode_node(n)?,
            peer: peer(p)?,
        }),
        [b"rooms", r, b"producers", n, p, q] => Ok(ParsedKey::Producer {
            room: room(r)?,
            node: decode_node(n)?,
            peer: peer(p)?,
            producer: ProducerId::from(decode_segment(q)?),
        }),
        _ => Err(KeyError::UnknownShape),
    }
}

/// `nodes/<node>`.
pub fn node_key(node: &NodeId) -> String {
    format!("nodes/{}", encode_segment(node.as_str()))
}

/// `drain/<node>`.
pub fn drain_key(node: &NodeId) -> String {
    format!("drain/{}", encode_segment(node.as_str()))
}

/// The node of a `drain/<node>` key; `None` when `key` is not a drain key at all.
pub fn parse_drain_key(key: &[u8]) -> Option<Result<NodeId, KeyError>> {
    let rest = key.strip_prefix(b"drain/")?;
    Some(decode_node(rest))
}

/// `rooms/<room>/nodes/<node>`.
pub fn room_host_key(room: &RoomId, node: &NodeId) -> String {
    format!(
        "rooms/{}/nodes/{}",
        encode_segment(room.as_str()),
        encode_segment(node.as_str())
    )
}

/// `rooms/<room>/peers/<node>/<peer>`.
pub fn peer_key(room: &RoomId, node: &NodeId, peer: &PeerId) -> String {
    format!(
        "rooms/{}/peers/{}/{}",
        encode_segment(room.as_str()),
        encode_segment(node.as_str()),
        encode_segment(peer.as_str())
    )
}

/// `rooms/<room>/producers/<node>/<peer>/<producer>`.
pub fn producer_key(room: &RoomId, node: &NodeId, peer: &PeerId, producer: &ProducerId) -> String {
    format!(
        "rooms/{}/producers/{}/{}/{}",
        encode_segment(room.as_str()),
        encode_segment(node.as_str()),
        encode_segment(peer.as_str()),
        encode_segment(producer.as_str())
    )
}

/// Decode a value as record `T`.
pub fn parse_value<T: Record>(value: &[u8]) -> Result<T, ValueError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLong {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    serde_json::from_slice(value).map_err(|e| ValueError::Json {
        record: T::NAME,
        reason: e.to_string(),
    })
}

/// Decode the node record stored under `nodes/<key_node>`; it must name the same node.
pub fn parse_node_record(key_node: &NodeId, value: &[u8]) -> Result<NodeRecord, ValueError> {
    let record: NodeRecord = parse_value(value)?;
    if &record.node_id != key_node {
        return Err(ValueError::NodeMismatch {
            key: key_node.clone(),
            record: record.node_id,
        });
    }
    Ok(record)
}

/// Encode a record as JSON text; refuses values readers would refuse ([`MAX_VALUE_LEN`]).
pub fn encode_value<T: Record>(record: &T) -> Result<String, ValueError> {
    let text = serde_json::to_string(record).map_err(|e| ValueError::Json {
        record: T::NAME,
        reason: e.to_string(),
    })?;
    if text.len() > MAX_VALUE_LEN {
        return Err(ValueError::TooLong {
            len: text.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(key: &str) -> Result<ParsedKey, KeyError> {
        parse_key(key.as_bytes())
    }

    #[test]
    fn keys_build_and_parse() {
        let (r, n, p, q) = (
            RoomId::from("r/1 %"),
            NodeId::from("node-a.1"),
            PeerId::from("ünï"),
            ProducerId::from("p~_.-"),
        );
        assert_eq!(node_key(&n), "nodes/node-a.1");
        assert_eq!(room_host_key(&r, &n), "rooms/r%2F1%20%25/nodes/node-a.1");
        assert_eq!(
            peer_key(&r, &n, &p),
            "rooms/r%2F1%20%25/peers/node-a.1/%C3%BCn%C3%AF"
        );
        assert_eq!(
            producer_key(&r, &n, &p, &q),
            "rooms/r%2F1%20%25/producers/node-a.1/%C3%BCn%C3%AF/p~_.-"
        );
        let keys = [
            ParsedKey::Node(n.clone()),
            ParsedKey::RoomHost {
                room: r.clone(),
                node: n.clone(),
            },
            ParsedKey::Peer {
                room: r.clone(),
                node: n.clone(),
                peer: p.clone(),
            },
            ParsedKey::Producer {
                room: r.clone(),
                node: n.clone(),
                peer: p.clone(),
                producer: q.clone(),
            },
        ];
        for k in keys {
            assert_eq!(parse(&k.to_key()), Ok(k.clone()));
            assert_eq!(k.node(), &n);
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        let cases: &[(&[u8], KeyError)] = &[
            (b"", KeyError::UnknownShape),
            (b"nodes", KeyError::UnknownShape),
            (b"nodes/a/b", KeyError::UnknownShape),
            (b"rooms/r/hosts/a", KeyError::UnknownShape),
            (b"rooms/r/peers/a", KeyError::UnknownShape),
            (b"rooms/r/producers/a/p", KeyError::UnknownShape),
            (b"/nodes/a", KeyError::UnknownShape),
            (b"nodes/", KeyError::EmptySegment),
            (b"rooms//nodes/a", KeyError::EmptySegment),
            (
                b"nodes/a%2",
                KeyError::BadEscape {
                    segment: "a%2".into(),
                },
            ),
            (
                b"rooms/%zz/nodes/a",
                KeyError::BadEscape {
                    segment: "%zz".into(),
                },
            ),
            (
                b"rooms/%FF/nodes/a",
                KeyError::NotUtf8 {
                    segment: "%FF".into(),
                },
            ),
            (
                b"rooms/%2f/nodes/a",
                KeyError::NotCanonical {
                    segment: "%2f".into(),
                },
            ),
            (
                b"rooms/%41/nodes/a",
                KeyError::NotCanonical {
                    segment: "%41".into(),
                },
            ),
            (
                b"rooms/a b/nodes/a",
                KeyError::NotCanonical {
                    segment: "a b".into(),
                },
            ),
            (
                b"rooms/r/nodes/\xc3\xa9",
                KeyError::NotCanonical {
                    segment: "é".into(),
                },
            ),
            (b"nodes/a~b", KeyError::InvalidNodeId { node: "a~b".into() }),
            (
                b"rooms/r/peers/%C3%A9/p",
                KeyError::InvalidNodeId { node: "é".into() },
            ),
        ];
        for (key, err) in cases {
            assert_eq!(
                parse_key(key).as_ref(),
                Err(err),
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        let long = format!("nodes/{}", "a".repeat(MAX_KEY_LEN));
        assert!(matches!(parse(&long), Err(KeyError::TooLong { .. })));
    }

    /// A tiny deterministic generator (xorshift), so the test needs no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn string(&mut self) -> String {
            const ALPHABET: &[char] = &[
                'a', 'Z', '0', '/', '%', '.', '~', '-', '_', ' ', '+', '?', '#', 'é', '日', '🎥',
                '\0', '\n', '%', '2', 'F',
            ];
            let len = 1 + (self.next() % 12) as usize;
            (0..len)
                .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn segments_round_trip_for_any_string() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5_000 {
            let s = rng.string();
            let enc = encode_segment(&s);
            assert!(enc.bytes().all(|b| b == b'%' || unreserved(b)), "{enc}");
            assert_eq!(decode_segment(enc.as_bytes()).as_deref(), Ok(s.as_str()));
            let (room, peer, producer) = (
                RoomId::from(s.clone()),
                PeerId::from(rng.string()),
                ProducerId::from(rng.string()),
            );
            let key = producer_key(&room, &NodeId::from("n"), &peer, &producer);
            assert_eq!(
                parse(&key),
                Ok(ParsedKey::Producer {
                    room,
                    node: NodeId::from("n"),
                    peer,
                    producer
                })
            );
        }
    }

    #[test]
    fn values_round_trip_and_tolerate_unknown_fields() {
        let rec = NodeRecord {
            node_id: NodeId::from("a"),
            region: "eu".into(),
            pipe_addr: Some("10.0.0.1:7000".into()),
            signaling_url: "wss://a".into(),
            admin_url: "http://a:9090".into(),
            state: NodeState::Draining,
            load: NodeLoad {
                rooms: 1,
                peers: 2,
                producers: 3,
                consumers: 4,
                pipe_links: 5,
            },
            software: "pipemesh 0.1.0".into(),
            started_at_ms: 7,
            incarnation: "x".into(),
        };
        let text = encode_value(&rec).unwrap();
        assert!(text.contains("\"pipeAddr\"") && text.contains("\"draining\""));
        assert_eq!(
            parse_node_record(&NodeId::from("a"), text.as_bytes()),
            Ok(rec)
        );
        assert!(matches!(
            parse_node_record(&NodeId::from("b"), text.as_bytes()),
            Err(ValueError::NodeMismatch { .. })
        ));

        let minimal: NodeRecord =
            parse_value(br#"{"nodeId":"a","future":{"x":1},"load":{"peers":3,"gpu":1}}"#).unwrap();
        assert_eq!(minimal.state, NodeState::Serving);
        assert_eq!(minimal.load.peers, 3);
        assert_eq!(minimal.pipe_addr, None);

        let p: ProducerRecord = parse_value(br#"{"kind":"audio","extra":true}"#).unwrap();
        assert_eq!(p.kind, MediaKind::Audio);
        assert!(!p.paused);
        let host: RoomHostRecord = parse_value(b"{}").unwrap();
        assert_eq!(host.since_ms, 0);

        for bad in [&b"nope"[..], b"[]", b"{\"kind\":\"smell\"}", b""] {
            assert!(matches!(
                parse_value::<ProducerRecord>(bad),
                Err(ValueError::Json {
                    record: "producer record",
                    ..
                })
            ));
        }
        let big = format!("{{\"displayName\":\"{}\"}}", "x".repeat(MAX_VALUE_LEN));
        assert!(matches!(
            parse_value::<PeerRecord>(big.as_bytes()),
            Err(ValueError::TooLong { .. })
        ));
        assert!(matches!(
            encode_value(&PeerRecord {
                display_name: "x".repeat(MAX_VALUE_LEN),
                device: serde_json::Value::Null,
            }),
            Err(ValueError::TooLong { .. })
        ));
    }

    #[test]
    fn infos_convert_through_records() {
        let peer = PeerInfo {
            peer_id: PeerId::from("p"),
            display_name: "P".into(),
            device: r#"{"flag":"chrome"}"#.into(),
            producers: Vec::new(),
        };
        assert_eq!(PeerRecord::from_info(&peer).to_info(&peer.peer_id), peer);
        let garbled = PeerInfo {
            device: "not json".into(),
            ..peer.clone()
        };
        assert_eq!(
            PeerRecord::from_info(&garbled).device,
            serde_json::Value::Null
        );

        let producer = ProducerInfo {
            producer_id: ProducerId::from("q"),
            kind: MediaKind::Video,
            paused: true,
            rtp_parameters: RtpParameters::default(),
            app_data: r#"{"share":true}"#.into(),
        };
        let rec = ProducerRecord::from_info(&producer);
        assert_eq!(rec.to_info(&producer.producer_id), producer);
        let empty = ProducerInfo {
            app_data: String::new(),
            ..producer
        };
        assert_eq!(ProducerRecord::from_info(&empty).app_data.to_string(), "{}");
    }
}
