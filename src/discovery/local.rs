//! [`LocalRooms`]: this node's own side of a room directory, shared by the
//! [`GossipDirectory`](crate::discovery::directory::GossipDirectory) and the
//! [`ClusterDirectory`](crate::discovery::cluster::ClusterDirectory).
//!
//! It owns the rooms this node tracks (those with local peers, and those it watches), the local
//! peers of each with their producers, and the [`DirectoryConfig`] bounds on them. It checks a
//! local change, applies it and says what changed; telling other nodes (gossip messages,
//! registry writes) is the directory's business, and so is counting refusals: a refusal is a
//! [`DirectoryError`] returned to the directory, which owns the stats.
//!
//! Joining a peer and adding a producer are two steps, `admit_*` (checks, no change) then
//! `insert_*`, so a directory can run its own checks in between (the cluster directory refuses
//! entries it cannot publish) and still refuse without having changed anything.

use std::collections::BTreeMap;

use crate::discovery::directory::{DirectoryConfig, DirectoryError};
use crate::ids::{PeerId, ProducerId, RoomId};
use crate::pipe::wire::{PeerInfo, ProducerInfo};

/// `count_refused(&mut self, &DirectoryError)` for a directory's stats struct, which has the
/// counters `refused_rooms`, `refused_peers` and `refused_producers`: a refusal by
/// [`LocalRooms`] past a bound adds one to the bound's counter; other refusals add nothing.
macro_rules! count_refused {
    ($stats:ty) => {
        impl $stats {
            fn count_refused(&mut self, e: &$crate::discovery::directory::DirectoryError) {
                use $crate::discovery::directory::DirectoryError as E;
                match e {
                    E::TooManyRooms { .. } => self.refused_rooms += 1,
                    E::TooManyPeers { .. } => self.refused_peers += 1,
                    E::TooManyProducers { .. } => self.refused_producers += 1,
                    _ => {}
                }
            }
        }
    };
}
pub(crate) use count_refused;

#[derive(Debug, Default)]
struct LocalRoom {
    peers: BTreeMap<PeerId, PeerInfo>,
    watched: bool,
}

/// This node's rooms, peers and producers, within the bounds. A room is kept while it has a
/// local peer or is watched.
#[derive(Debug)]
pub(crate) struct LocalRooms {
    config: DirectoryConfig,
    rooms: BTreeMap<RoomId, LocalRoom>,
}

impl LocalRooms {
    /// No rooms; `config` bounds what may be added.
    pub(crate) fn new(config: DirectoryConfig) -> Self {
        Self {
            config,
            rooms: BTreeMap::new(),
        }
    }

    /// Whether this node watches `room`.
    pub(crate) fn is_watched(&self, room: &RoomId) -> bool {
        self.rooms.get(room).is_some_and(|r| r.watched)
    }

    /// The rooms this node watches, in order.
    pub(crate) fn watched(&self) -> impl Iterator<Item = &RoomId> {
        self.rooms
            .iter()
            .filter(|(_, r)| r.watched)
            .map(|(id, _)| id)
    }

    /// The local peers of `room`, in id order (none for a room not tracked).
    pub(crate) fn peers(&self, room: &RoomId) -> impl Iterator<Item = &PeerInfo> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.peers.values())
    }

    /// Whether `peer` may join `room`; nothing changes either way. Checked in this order: its
    /// producers, a slot for the room, the peer not there yet, a slot for the peer.
    pub(crate) fn admit_peer(&self, room: &RoomId, peer: &PeerInfo) -> Result<(), DirectoryError> {
        let max_producers = self.config.max_producers_per_peer;
        if peer.producers.len() > max_producers {
            return Err(DirectoryError::TooManyProducers {
                peer_id: peer.peer_id.clone(),
                max: max_producers,
            });
        }
        self.room_slot_free(room)?;
        let Some(local) = self.rooms.get(room) else {
            return Ok(());
        };
        if local.peers.contains_key(&peer.peer_id) {
            return Err(DirectoryError::PeerExists {
                room: room.clone(),
                peer_id: peer.peer_id.clone(),
            });
        }
        if local.peers.len() >= self.config.max_peers_per_room {
            return Err(DirectoryError::TooManyPeers {
                room: room.clone(),
                max: self.config.max_peers_per_room,
            });
        }
        Ok(())
    }

    /// Add `peer` to `room` once [`LocalRooms::admit_peer`] allowed it. True when it is the
    /// room's first local peer.
    pub(crate) fn insert_peer(&mut self, room: &RoomId, peer: PeerInfo) -> bool {
        let local = self.rooms.entry(room.clone()).or_default();
        let first = local.peers.is_empty();
        local.peers.insert(peer.peer_id.clone(), peer);
        first
    }

    /// Remove a local peer: the peer as it was, and whether `room` has no local peer left.
    /// `None` when it was not there.
    pub(crate) fn remove_peer(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
    ) -> Option<(PeerInfo, bool)> {
        let local = self.rooms.get_mut(room)?;
        let peer = local.peers.remove(peer_id)?;
        let last = local.peers.is_empty();
        self.drop_room_if_idle(room);
        Some((peer, last))
    }

    /// Whether the local peer `peer_id` of `room` may have `producer`; nothing changes either
    /// way. Checked in this order: the peer is known, the producer is new, a slot for it.
    pub(crate) fn admit_producer(
        &self,
        room: &RoomId,
        peer_id: &PeerId,
        producer: &ProducerInfo,
    ) -> Result<(), DirectoryError> {
        let Some(peer) = self.rooms.get(room).and_then(|r| r.peers.get(peer_id)) else {
            return Err(DirectoryError::UnknownPeer {
                room: room.clone(),
                peer_id: peer_id.clone(),
            });
        };
        if peer
            .producers
            .iter()
            .any(|p| p.producer_id == producer.producer_id)
        {
            return Err(DirectoryError::ProducerExists {
                producer_id: producer.producer_id.clone(),
            });
        }
        let max = self.config.max_producers_per_peer;
        if peer.producers.len() >= max {
            return Err(DirectoryError::TooManyProducers {
                peer_id: peer_id.clone(),
                max,
            });
        }
        Ok(())
    }

    /// Add `producer` to a local peer once [`LocalRooms::admit_producer`] allowed it.
    pub(crate) fn insert_producer(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer: ProducerInfo,
    ) {
        if let Some(peer) = self.peer_mut(room, peer_id) {
            peer.producers.push(producer);
        }
    }

    /// Remove a local producer; `None` when it was not there.
    pub(crate) fn remove_producer(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer_id: &ProducerId,
    ) -> Option<ProducerInfo> {
        let peer = self.peer_mut(room, peer_id)?;
        let i = peer
            .producers
            .iter()
            .position(|p| &p.producer_id == producer_id)?;
        Some(peer.producers.remove(i))
    }

    /// Pause or resume a local producer: the producer as it is now, or `None` when it is not
    /// there or already was in that state.
    pub(crate) fn set_paused(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        producer_id: &ProducerId,
        paused: bool,
    ) -> Option<&ProducerInfo> {
        let p = self
            .peer_mut(room, peer_id)?
            .producers
            .iter_mut()
            .find(|p| &p.producer_id == producer_id)?;
        if p.paused == paused {
            return None;
        }
        p.paused = paused;
        Some(p)
    }

    /// Rename a local peer: the peer as it is now, or `None` when it is not there or already
    /// had that name.
    pub(crate) fn rename_peer(
        &mut self,
        room: &RoomId,
        peer_id: &PeerId,
        display_name: &str,
    ) -> Option<&PeerInfo> {
        let p = self.peer_mut(room, peer_id)?;
        if p.display_name == display_name {
            return None;
        }
        p.display_name = display_name.to_owned();
        Some(p)
    }

    /// Watch `room`: true when it was not watched yet.
    pub(crate) fn watch(&mut self, room: &RoomId) -> Result<bool, DirectoryError> {
        self.room_slot_free(room)?;
        let local = self.rooms.entry(room.clone()).or_default();
        Ok(!std::mem::replace(&mut local.watched, true))
    }

    /// Stop watching `room`: true when it was watched.
    pub(crate) fn unwatch(&mut self, room: &RoomId) -> bool {
        match self.rooms.get_mut(room) {
            Some(local) if local.watched => local.watched = false,
            _ => return false,
        }
        self.drop_room_if_idle(room);
        true
    }

    fn peer_mut(&mut self, room: &RoomId, peer_id: &PeerId) -> Option<&mut PeerInfo> {
        self.rooms.get_mut(room)?.peers.get_mut(peer_id)
    }

    fn room_slot_free(&self, room: &RoomId) -> Result<(), DirectoryError> {
        if !self.rooms.contains_key(room) && self.rooms.len() >= self.config.max_rooms {
            return Err(DirectoryError::TooManyRooms {
                max: self.config.max_rooms,
            });
        }
        Ok(())
    }

    fn drop_room_if_idle(&mut self, room: &RoomId) {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| !r.watched && r.peers.is_empty())
        {
            self.rooms.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::testing::{peer, producer, room};

    fn bounded(max: usize) -> LocalRooms {
        LocalRooms::new(DirectoryConfig {
            max_rooms: max,
            max_peers_per_room: max,
            max_producers_per_peer: max,
        })
    }

    #[test]
    fn admit_checks_in_order_and_changes_nothing() {
        let mut rooms = bounded(1);
        // Too many producers is reported before the room bound.
        rooms.insert_peer(&room(), peer("alice", &["p1"]));
        assert!(matches!(
            rooms.admit_peer(&RoomId::from("r2"), &peer("bob", &["b1", "b2"])),
            Err(DirectoryError::TooManyProducers { max: 1, .. })
        ));
        assert!(matches!(
            rooms.admit_peer(&RoomId::from("r2"), &peer("bob", &[])),
            Err(DirectoryError::TooManyRooms { max: 1 })
        ));
        // An existing peer is reported before the peer bound.
        assert!(matches!(
            rooms.admit_peer(&room(), &peer("alice", &[])),
            Err(DirectoryError::PeerExists { .. })
        ));
        assert!(matches!(
            rooms.admit_peer(&room(), &peer("bob", &[])),
            Err(DirectoryError::TooManyPeers { max: 1, .. })
        ));
        // An existing producer is reported before the producer bound.
        let alice = PeerId::from("alice");
        assert!(matches!(
            rooms.admit_producer(&room(), &alice, &producer("p1")),
            Err(DirectoryError::ProducerExists { .. })
        ));
        assert!(matches!(
            rooms.admit_producer(&room(), &alice, &producer("p2")),
            Err(DirectoryError::TooManyProducers { max: 1, .. })
        ));
        assert!(matches!(
            rooms.admit_producer(&room(), &PeerId::from("zed"), &producer("z")),
            Err(DirectoryError::UnknownPeer { .. })
        ));
        assert_eq!(
            rooms.peers(&room()).cloned().collect::<Vec<_>>(),
            vec![peer("alice", &["p1"])]
        );
        assert_eq!(rooms.peers(&RoomId::from("r2")).count(), 0);
    }

    #[test]
    fn a_room_is_kept_while_it_has_peers_or_is_watched() {
        let mut rooms = bounded(1);
        assert!(rooms.insert_peer(&room(), peer("alice", &[])));
        assert_eq!(rooms.watch(&room()), Ok(true));
        assert_eq!(rooms.watch(&room()), Ok(false));
        let (left, last) = rooms.remove_peer(&room(), &PeerId::from("alice")).unwrap();
        assert_eq!((left, last), (peer("alice", &[]), true));
        assert_eq!(rooms.remove_peer(&room(), &PeerId::from("alice")), None);
        // Still watched: the room holds its slot.
        assert!(rooms
            .admit_peer(&RoomId::from("r2"), &peer("bob", &[]))
            .is_err());
        assert!(rooms.unwatch(&room()));
        assert!(!rooms.unwatch(&room()));
        assert_eq!(rooms.watched().count(), 0);
        rooms
            .admit_peer(&RoomId::from("r2"), &peer("bob", &[]))
            .unwrap();
    }

    #[test]
    fn producers_change_only_when_known() {
        let mut rooms = bounded(2);
        let alice = PeerId::from("alice");
        rooms.insert_peer(&room(), peer("alice", &["p1"]));
        rooms.insert_producer(&room(), &alice, producer("p2"));
        let p2 = ProducerId::from("p2");
        assert_eq!(rooms.set_paused(&room(), &alice, &p2, false), None);
        assert_eq!(
            rooms
                .set_paused(&room(), &alice, &p2, true)
                .map(|p| p.paused),
            Some(true)
        );
        assert_eq!(rooms.set_paused(&room(), &alice, &p2, true), None);
        assert_eq!(
            rooms
                .remove_producer(&room(), &alice, &ProducerId::from("p1"))
                .map(|p| p.producer_id),
            Some(ProducerId::from("p1"))
        );
        assert_eq!(
            rooms.remove_producer(&room(), &alice, &ProducerId::from("p1")),
            None
        );
        assert_eq!(
            rooms.set_paused(&room(), &PeerId::from("zed"), &p2, false),
            None
        );
        let (left, _) = rooms.remove_peer(&room(), &alice).unwrap();
        assert_eq!(left.producers.len(), 1);
        assert!(left.producers[0].paused);
    }
}
