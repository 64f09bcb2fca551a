//! The registry as the operator commands read it: key/value pairs (relative to the cluster
//! prefix) decoded into records, the way a node's directory decodes them. Pure: no etcd, no
//! clock. Malformed entries are skipped and counted, never fatal.

use std::collections::BTreeMap;

use crate::discovery::keys::{
    self, DrainRecord, NodeRecord, ParsedKey, PeerRecord, ProducerRecord, RoomHostRecord,
};
use crate::ids::{NodeId, PeerId, ProducerId, RoomId};

/// The entries of one room, by the node that wrote them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomEntries {
    /// Nodes with local peers in the room.
    pub hosts: BTreeMap<NodeId, RoomHostRecord>,
    /// Peers, by (node, peer).
    pub peers: BTreeMap<(NodeId, PeerId), PeerRecord>,
    /// Producers, by (origin node, peer, producer).
    pub producers: BTreeMap<(NodeId, PeerId, ProducerId), ProducerRecord>,
}

/// Decoded registry entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Node records, by node.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Operators' drain requests, by node (an unreadable one counts as a request without a
    /// deadline, as the node itself reads it).
    pub drains: BTreeMap<NodeId, DrainRecord>,
    /// Rooms with at least one entry.
    pub rooms: BTreeMap<RoomId, RoomEntries>,
    /// Entries skipped because their key or value is malformed.
    pub malformed: usize,
}

impl Snapshot {
    /// Decodes `kvs` (keys relative to `/pipemesh/<cluster>/`).
    pub fn from_kvs<K: AsRef<[u8]>, V: AsRef<[u8]>>(kvs: &[(K, V)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (key, value) in kvs {
            if !s.insert(key.as_ref(), value.as_ref()) {
                s.malformed += 1;
            }
        }
        s
    }

    /// Adds one entry; false when it is malformed.
    fn insert(&mut self, key: &[u8], value: &[u8]) -> bool {
        if let Some(node) = keys::parse_drain_key(key) {
            let Ok(node) = node else { return false };
            let record = keys::parse_value::<DrainRecord>(value);
            let ok = record.is_ok();
            self.drains.insert(node, record.unwrap_or_default());
            return ok;
        }
        let Ok(parsed) = keys::parse_key(key) else {
            return false;
        };
        match parsed {
            ParsedKey::Node(node) => match keys::parse_node_record(&node, value) {
                Ok(record) => {
                    self.nodes.insert(node, record);
                }
                Err(_) => return false,
            },
            ParsedKey::RoomHost { room, node } => match keys::parse_value(value) {
                Ok(record) => {
                    self.room(room).hosts.insert(node, record);
                }
                Err(_) => return false,
            },
            ParsedKey::Peer { room, node, peer } => match keys::parse_value(value) {
                Ok(record) => {
                    self.room(room).peers.insert((node, peer), record);
                }
                Err(_) => return false,
            },
            ParsedKey::Producer {
                room,
                node,
                peer,
                producer,
            } => match keys::parse_value(value) {
                Ok(record) => {
                    self.room(room)
                        .producers
                        .insert((node, peer, producer), record);
                }
                Err(_) => return false,
            },
        }
        true
    }

    fn room(&mut self, room: RoomId) -> &mut RoomEntries {
        self.rooms.entry(room).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::rtp_parameters::MediaKind;

    #[test]
    fn decodes_every_key_shape_and_counts_malformed_entries() {
        let kvs: Vec<(&str, &str)> = vec![
            (
                "nodes/n1",
                r#"{"nodeId":"n1","region":"eu","state":"draining"}"#,
            ),
            ("nodes/n2", r#"{"nodeId":"n1"}"#), // record of another node
            ("nodes/n3", "not json"),
            (
                "drain/n1",
                r#"{"requestedAtMs":5,"deadlineMs":9,"reason":"x"}"#,
            ),
            ("drain/n4", "garbled"), // still a request, counted as malformed
            ("drain/bad~id", "{}"),
            ("rooms/r%20x/nodes/n1", r#"{"sinceMs":3}"#),
            ("rooms/r%20x/peers/n1/p", r#"{"displayName":"P"}"#),
            (
                "rooms/r%20x/producers/n1/p/q",
                r#"{"kind":"video","paused":true}"#,
            ),
            ("rooms/r%20x/producers/n1/p/z", r#"{"kind":"smell"}"#),
            ("rooms/other/peers/n2/p2", "{}"),
            ("future/shape", "{}"),
            ("rooms/r x/nodes/n1", "{}"), // not canonically encoded
        ];
        let s = Snapshot::from_kvs(&kvs);
        assert_eq!(s.malformed, 7);
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), [&NodeId::from("n1")]);
        assert_eq!(s.drains[&NodeId::from("n1")].deadline_ms, Some(9));
        assert_eq!(s.drains[&NodeId::from("n4")], DrainRecord::default());
        let r = &s.rooms[&RoomId::from("r x")];
        assert_eq!(r.hosts[&NodeId::from("n1")].since_ms, 3);
        assert_eq!(r.peers.len(), 1);
        let (key, producer) = r.producers.iter().next().unwrap();
        assert_eq!(key.2, ProducerId::from("q"));
        assert_eq!((producer.kind, producer.paused), (MediaKind::Video, true));
        assert_eq!(r.producers.len(), 1);
        assert_eq!(s.rooms[&RoomId::from("other")].peers.len(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let junk: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (vec![], vec![]),
            (b"drain/".to_vec(), vec![0xff]),
            (b"nodes/\xff".to_vec(), b"{}".to_vec()),
            (b"rooms/%/peers//".to_vec(), b"null".to_vec()),
            (vec![b'/'; 5000], vec![b'{'; 70_000]),
        ];
        assert_eq!(Snapshot::from_kvs(&junk).malformed, junk.len());
    }
}
