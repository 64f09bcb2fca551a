//! A cluster directory watching one room, fed arbitrary registry contents: snapshots and
//! changes whose keys and values are either raw bytes or built from the key layout with
//! arbitrary ids and records (valid, stale or garbled), interleaved with link ups, downs,
//! give-ups and watch changes. Nothing may panic, and the events must follow the grammar:
//! replayed from empty they give `remote_peers`, and no node sees itself.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use pipemesh::discovery::cluster::ClusterDirectory;
use pipemesh::discovery::directory::{DirectoryConfig, DirectoryEvent, RoomDirectory};
use pipemesh::discovery::keys::{self, NodeLoad, NodeRecord, NodeState};
use pipemesh::discovery::registry::{KvChange, RegistryOp, RegistryUpdate};
use pipemesh::ids::{NodeId, PeerId, ProducerId, RoomId};
use pipemesh::pipe::wire::PeerInfo;

/// Reads the input a byte or a slice at a time; zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = usize::from(self.byte()) % (max + 1);
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head.to_vec()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()]
    }
    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes(12)).into_owned()
    }
    /// Mostly a few known ids, so entries meet; sometimes anything.
    fn id(&mut self, known: &[&str]) -> String {
        if self.byte() % 4 == 0 {
            self.text()
        } else {
            self.pick(known).to_owned()
        }
    }
}

const NODES: &[&str] = &["me", "a", "b"];
const ROOMS: &[&str] = &["r", "s", "r/x"];
const PEERS: &[&str] = &["p", "q"];
const PRODUCERS: &[&str] = &["x", "y"];

fn record(node: &str, addr: Option<String>) -> NodeRecord {
    NodeRecord {
        node_id: NodeId::from(node),
        region: "fuzz".into(),
        pipe_addr: addr,
        signaling_url: String::new(),
        admin_url: String::new(),
        state: NodeState::Serving,
        load: NodeLoad::default(),
        software: "fuzz".into(),
        started_at_ms: 0,
        incarnation: String::new(),
    }
}

fn key(input: &mut Input) -> Vec<u8> {
    let room = RoomId::from(input.id(ROOMS));
    let node = NodeId::from(input.id(NODES));
    let peer = PeerId::from(input.id(PEERS));
    let producer = ProducerId::from(input.id(PRODUCERS));
    match input.byte() % 6 {
        0 => keys::node_key(&node).into_bytes(),
        1 => keys::room_host_key(&room, &node).into_bytes(),
        2 => keys::peer_key(&room, &node, &peer).into_bytes(),
        3 => keys::producer_key(&room, &node, &peer, &producer).into_bytes(),
        _ => input.bytes(80),
    }
}

fn value(input: &mut Input) -> Vec<u8> {
    let text = match input.byte() % 8 {
        0 => {
            let node = input.id(NODES);
            let addr = input.byte() % 3;
            let addr = (addr > 0).then(|| format!("10.0.0.{addr}:7000"));
            serde_json::to_string(&record(&node, addr)).ok()
        }
        1 => Some("{\"sinceMs\":1}".to_owned()),
        2 => Some(format!(
            "{{\"displayName\":{:?},\"device\":{{}}}}",
            input.text()
        )),
        3 => Some(format!(
            "{{\"kind\":\"{}\",\"paused\":{},\"appData\":{{}}}}",
            input.pick(&["audio", "video", "smell"]),
            input.byte() % 2 == 0
        )),
        4 => Some(format!(
            "{{\"kind\":\"video\",\"rtpParameters\":{{\"mid\":\"{}\",\"codecs\":[]}}}}",
            input.byte() % 3
        )),
        _ => None,
    };
    text.map(String::into_bytes)
        .unwrap_or_else(|| input.bytes(120))
}

/// Apply one event to the replayed view, checking the grammar.
fn replay(
    shown: &mut BTreeMap<(RoomId, NodeId, PeerId), PeerInfo>,
    wanted: &mut BTreeSet<NodeId>,
    ev: DirectoryEvent,
) {
    match ev {
        DirectoryEvent::RemotePeerJoined { room, node, peer } => {
            assert!(peer.producers.is_empty());
            assert_ne!(node.as_str(), "me");
            let prev = shown.insert((room, node, peer.peer_id.clone()), peer);
            assert!(prev.is_none(), "joined twice");
        }
        DirectoryEvent::RemotePeerLeft {
            room,
            node,
            peer_id,
        } => {
            let p = shown.remove(&(room, node, peer_id)).expect("left unknown");
            assert!(p.producers.is_empty(), "left with producers");
        }
        DirectoryEvent::RemoteProducerAdded {
            room,
            node,
            peer_id,
            producer,
        } => {
            let p = shown.get_mut(&(room, node, peer_id)).expect("peer known");
            assert!(!p
                .producers
                .iter()
                .any(|q| q.producer_id == producer.producer_id));
            p.producers.push(producer);
        }
        DirectoryEvent::RemoteProducerRemoved {
            room,
            node,
            peer_id,
            producer_id,
        } => {
            let p = shown.get_mut(&(room, node, peer_id)).expect("peer known");
            let i = p
                .producers
                .iter()
                .position(|q| q.producer_id == producer_id)
                .expect("producer known");
            p.producers.remove(i);
        }
        // Drain requests are not part of the remote view.
        DirectoryEvent::LocalDrain { .. } => {}
        DirectoryEvent::RemotePeerRenamed {
            room,
            node,
            peer_id,
            display_name,
            old_display_name,
        } => {
            let p = shown
                .get_mut(&(room, node, peer_id))
                .expect("renamed unknown");
            assert_eq!(p.display_name, old_display_name);
            assert_ne!(p.display_name, display_name);
            p.display_name = display_name;
        }
        DirectoryEvent::NodeGone { node } => {
            assert!(!shown.keys().any(|(_, n, _)| n == &node), "gone but shown");
        }
        DirectoryEvent::LinkWanted { node, .. } => {
            assert_ne!(node.as_str(), "me");
            wanted.insert(node);
        }
        DirectoryEvent::LinkUnwanted { node } => {
            assert!(wanted.remove(&node), "unwanted but never wanted");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = DirectoryConfig {
        max_rooms: 4,
        max_peers_per_room: 3,
        max_producers_per_peer: 2,
    };
    let mut d = ClusterDirectory::new(record("me", Some("10.0.0.9:7000".into())), config);
    let room = RoomId::from("r");
    d.watch_room(&room).expect("one room fits");
    let me = PeerInfo {
        peer_id: PeerId::from("p"),
        display_name: "me".into(),
        device: "{}".into(),
        producers: Vec::new(),
    };
    d.local_peer_joined(&room, me).expect("one peer fits");
    let mut shown = BTreeMap::new();
    let mut wanted = BTreeSet::new();
    let mut revision = 0;
    while !input.0.is_empty() {
        revision += 1;
        match input.byte() % 10 {
            0 => {
                let n = usize::from(input.byte() % 12);
                let kvs = (0..n)
                    .map(|_| (key(&mut input), value(&mut input)))
                    .collect();
                d.apply_registry(RegistryUpdate::Snapshot { revision, kvs });
            }
            1..=5 => {
                let n = 1 + usize::from(input.byte() % 6);
                let changes = (0..n)
                    .map(|_| {
                        let key = key(&mut input);
                        let value = (input.byte() % 3 != 0).then(|| value(&mut input));
                        KvChange {
                            key,
                            value,
                            mod_revision: revision,
                        }
                    })
                    .collect();
                d.apply_registry(RegistryUpdate::Changes { revision, changes });
            }
            6 => d.link_up(&NodeId::from(input.pick(NODES))),
            7 => d.link_down(&NodeId::from(input.pick(NODES))),
            8 => d.node_gone(&NodeId::from(input.pick(NODES))),
            _ => {
                let r = RoomId::from(input.pick(ROOMS));
                if input.byte() % 2 == 0 {
                    let _ = d.watch_room(&r);
                } else {
                    d.unwatch_room(&r);
                }
            }
        }
        let mut n = 0;
        while let Some(ev) = d.poll_event() {
            replay(&mut shown, &mut wanted, ev);
            n += 1;
            assert!(n < 100_000, "events do not drain");
        }
        while let Some(op) = d.poll_registry_op() {
            // Only this node's keys are ever written.
            let k = match &op {
                RegistryOp::Put { key, .. } | RegistryOp::Delete { key } => key,
            };
            let parsed = keys::parse_key(k.as_bytes()).expect("own keys parse");
            assert_eq!(parsed.node().as_str(), "me");
        }
        for r in ROOMS.iter().map(|r| RoomId::from(*r)) {
            let mut expected: Vec<(NodeId, PeerInfo)> = shown
                .iter()
                .filter(|((room, _, _), _)| room == &r)
                .map(|((_, n, _), p)| (n.clone(), p.clone()))
                .collect();
            let mut actual = d.remote_peers(&r);
            for (_, p) in expected.iter_mut().chain(actual.iter_mut()) {
                p.producers
                    .sort_by(|a, b| a.producer_id.cmp(&b.producer_id));
                for q in &mut p.producers {
                    q.paused = false;
                }
            }
            assert_eq!(actual, expected);
        }
    }
    let _ = serde_json::to_string(&d.cluster_view());
});
