//! Fixtures shared by the directory tests: one room, two nodes, peers and producers, and the
//! events a directory reports about them.

use crate::discovery::directory::{DirectoryConfig, DirectoryError, DirectoryEvent, RoomDirectory};
use crate::ids::{NodeId, PeerId, ProducerId, RoomId};
use crate::pipe::wire::{PeerInfo, ProducerInfo};
use crate::router::rtp_parameters::{MediaKind, RtpParameters};

pub(crate) fn room() -> RoomId {
    RoomId::from("r")
}
pub(crate) fn node_a() -> NodeId {
    NodeId::from("a")
}
pub(crate) fn node_b() -> NodeId {
    NodeId::from("b")
}
pub(crate) fn producer(id: &str) -> ProducerInfo {
    ProducerInfo {
        producer_id: ProducerId::from(id),
        kind: MediaKind::Video,
        paused: false,
        rtp_parameters: RtpParameters::default(),
        app_data: "{}".into(),
    }
}
/// A peer whose display name is its id in capitals, with these producers.
pub(crate) fn peer(id: &str, producers: &[&str]) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId::from(id),
        display_name: id.to_uppercase(),
        device: r#"{"flag":"test"}"#.into(),
        producers: producers.iter().map(|p| producer(p)).collect(),
    }
}
/// Every event queued so far.
pub(crate) fn events(d: &mut dyn RoomDirectory) -> Vec<DirectoryEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}
pub(crate) fn joined(node: &NodeId, id: &str) -> DirectoryEvent {
    DirectoryEvent::RemotePeerJoined {
        room: room(),
        node: node.clone(),
        peer: peer(id, &[]),
    }
}
pub(crate) fn left(node: &NodeId, id: &str) -> DirectoryEvent {
    DirectoryEvent::RemotePeerLeft {
        room: room(),
        node: node.clone(),
        peer_id: PeerId::from(id),
    }
}
pub(crate) fn added(node: &NodeId, id: &str, p: &str) -> DirectoryEvent {
    DirectoryEvent::RemoteProducerAdded {
        room: room(),
        node: node.clone(),
        peer_id: PeerId::from(id),
        producer: producer(p),
    }
}
pub(crate) fn removed(node: &NodeId, id: &str, p: &str) -> DirectoryEvent {
    DirectoryEvent::RemoteProducerRemoved {
        room: room(),
        node: node.clone(),
        peer_id: PeerId::from(id),
        producer_id: ProducerId::from(p),
    }
}

/// Every bound at one.
pub(crate) fn unit_bounds() -> DirectoryConfig {
    DirectoryConfig {
        max_rooms: 1,
        max_peers_per_room: 1,
        max_producers_per_peer: 1,
    }
}

/// Drive a new directory with [`unit_bounds`] through every local change its bounds refuse,
/// each refused with the error it should be. Alice (with p1) joins [`room`]; the refusals count
/// two rooms, one peer and two producers.
pub(crate) fn refuse_past_unit_bounds(d: &mut dyn RoomDirectory) {
    assert!(matches!(
        d.local_peer_joined(&room(), peer("zed", &["z1", "z2"])),
        Err(DirectoryError::TooManyProducers { max: 1, .. })
    ));
    d.local_peer_joined(&room(), peer("alice", &["p1"]))
        .unwrap();
    assert!(matches!(
        d.local_peer_joined(&room(), peer("bob", &[])),
        Err(DirectoryError::TooManyPeers { max: 1, .. })
    ));
    assert!(matches!(
        d.local_peer_joined(&room(), peer("alice", &[])),
        Err(DirectoryError::PeerExists { .. })
    ));
    assert!(matches!(
        d.local_peer_joined(&RoomId::from("r2"), peer("carol", &[])),
        Err(DirectoryError::TooManyRooms { max: 1 })
    ));
    assert!(matches!(
        d.watch_room(&RoomId::from("r2")),
        Err(DirectoryError::TooManyRooms { max: 1 })
    ));
    let alice = PeerId::from("alice");
    assert!(matches!(
        d.local_producer_added(&room(), &alice, producer("p2")),
        Err(DirectoryError::TooManyProducers { max: 1, .. })
    ));
    assert!(matches!(
        d.local_producer_added(&room(), &alice, producer("p1")),
        Err(DirectoryError::ProducerExists { .. })
    ));
    assert!(matches!(
        d.local_producer_added(&room(), &PeerId::from("zed"), producer("z")),
        Err(DirectoryError::UnknownPeer { .. })
    ));
}
