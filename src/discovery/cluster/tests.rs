//! Two [`ClusterDirectory`]s over a tiny in-memory registry: no sockets, no clock.

use super::*;
use crate::discovery::registry::KvChange;
use crate::discovery::testing::{
    added, events, joined, left, node_a, node_b, peer, producer, refuse_past_unit_bounds, removed,
    room, unit_bounds,
};
use crate::router::rtp_parameters::MediaKind;

fn addr(node: &NodeId) -> String {
    format!(
        "10.0.0.{}:7000",
        node.as_str().len() + usize::from(node.as_str() == "b")
    )
}
fn record(node: &NodeId) -> NodeRecord {
    NodeRecord {
        node_id: node.clone(),
        region: "eu".into(),
        pipe_addr: Some(addr(node)),
        signaling_url: format!("wss://{node}"),
        admin_url: format!("http://{node}:9090"),
        state: NodeState::Serving,
        load: NodeLoad::default(),
        software: "pipemesh test".into(),
        started_at_ms: 1_000,
        incarnation: format!("{node}-1"),
    }
}
fn ops(d: &mut ClusterDirectory) -> Vec<RegistryOp> {
    std::iter::from_fn(|| d.poll_registry_op()).collect()
}
fn wanted(node: &NodeId) -> DirectoryEvent {
    DirectoryEvent::LinkWanted {
        node: node.clone(),
        pipe_addr: addr(node),
    }
}
fn unwanted(node: &NodeId) -> DirectoryEvent {
    DirectoryEvent::LinkUnwanted { node: node.clone() }
}
fn gone(node: &NodeId) -> DirectoryEvent {
    DirectoryEvent::NodeGone { node: node.clone() }
}
fn put(key: &str, value: &str) -> KvChange {
    KvChange {
        key: key.as_bytes().to_vec(),
        value: Some(value.as_bytes().to_vec()),
        mod_revision: 0,
    }
}
fn del(key: &str) -> KvChange {
    KvChange {
        key: key.as_bytes().to_vec(),
        value: None,
        mod_revision: 0,
    }
}

/// The registry: keys with their value and the node whose lease holds them.
#[derive(Default)]
struct Kv {
    revision: i64,
    data: BTreeMap<Vec<u8>, (Vec<u8>, Option<NodeId>)>,
}

impl Kv {
    /// Apply one write, as a change the watch reports.
    fn apply(&mut self, owner: Option<&NodeId>, key: &[u8], value: Option<&[u8]>) -> KvChange {
        self.revision += 1;
        match value {
            Some(v) => {
                self.data.insert(key.to_vec(), (v.to_vec(), owner.cloned()));
            }
            None => {
                self.data.remove(key);
            }
        }
        KvChange {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            mod_revision: self.revision,
        }
    }

    fn snapshot(&self) -> RegistryUpdate {
        RegistryUpdate::Snapshot {
            revision: self.revision,
            kvs: self
                .data
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Nodes "a" and "b" over one registry. Each watch can be paused (`deaf`) to model a node
/// cut off from the registry or a watch fallen behind.
struct Mesh {
    a: ClusterDirectory,
    b: ClusterDirectory,
    kv: Kv,
    /// Drop a's writes instead of applying them (a lost the registry).
    a_cut: bool,
    /// Don't deliver changes to b.
    b_deaf: bool,
}

impl Mesh {
    fn new(config: DirectoryConfig) -> Self {
        let mut m = Self {
            a: ClusterDirectory::new(record(&node_a()), config.clone()),
            b: ClusterDirectory::new(record(&node_b()), config),
            kv: Kv::default(),
            a_cut: false,
            b_deaf: false,
        };
        m.pump();
        m
    }

    fn dir(&mut self, node: &NodeId) -> &mut ClusterDirectory {
        if node == &node_a() {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Deliver a batch of changes to every listening directory.
    fn deliver(&mut self, changes: Vec<KvChange>) {
        if changes.is_empty() {
            return;
        }
        let update = RegistryUpdate::Changes {
            revision: self.kv.revision,
            changes,
        };
        if !self.a_cut {
            self.a.apply_registry(update.clone());
        }
        if !self.b_deaf {
            self.b.apply_registry(update);
        }
    }

    /// Apply every queued write, one batch per directory, until both are quiet.
    fn pump(&mut self) {
        for _ in 0..20 {
            let mut moved = false;
            for node in [node_a(), node_b()] {
                let batch = ops(self.dir(&node));
                if batch.is_empty() || (node == node_a() && self.a_cut) {
                    continue;
                }
                moved = true;
                let changes = batch
                    .iter()
                    .map(|op| match op {
                        RegistryOp::Put { key, value } => {
                            self.kv
                                .apply(Some(&node), key.as_bytes(), Some(value.as_bytes()))
                        }
                        RegistryOp::Delete { key } => self.kv.apply(None, key.as_bytes(), None),
                    })
                    .collect();
                self.deliver(changes);
            }
            if !moved {
                return;
            }
        }
        panic!("registry writes never settled");
    }

    /// `node`'s lease expires: every key it holds goes, in one revision.
    fn expire(&mut self, node: &NodeId) {
        let keys: Vec<Vec<u8>> = self
            .kv
            .data
            .iter()
            .filter(|(_, (_, owner))| owner.as_ref() == Some(node))
            .map(|(k, _)| k.clone())
            .collect();
        let changes = keys.iter().map(|k| self.kv.apply(None, k, None)).collect();
        self.deliver(changes);
    }

    /// `node`'s backend got a new lease and puts everything the node owns, in one revision.
    fn republish(&mut self, node: &NodeId) {
        let owned: Vec<(String, String)> = self
            .dir(node)
            .owned()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let changes = owned
            .iter()
            .map(|(k, v)| self.kv.apply(Some(node), k.as_bytes(), Some(v.as_bytes())))
            .collect();
        self.deliver(changes);
        self.pump();
    }
}

/// B watches R with bob; A hosts alice with p1 in R.
fn alice_and_bob() -> Mesh {
    let mut m = Mesh::new(DirectoryConfig::default());
    m.b.watch_room(&room()).unwrap();
    m.b.local_peer_joined(&room(), peer("bob", &[])).unwrap();
    m.pump();
    m.a.watch_room(&room()).unwrap();
    m.a.local_peer_joined(&room(), peer("alice", &["p1"]))
        .unwrap();
    m.pump();
    m
}

/// [`alice_and_bob`] with every event so far drained.
fn settled() -> Mesh {
    let mut m = alice_and_bob();
    events(&mut m.a);
    events(&mut m.b);
    m
}

#[test]
fn construction_puts_the_node_record_first() {
    let mut d = ClusterDirectory::new(record(&node_a()), DirectoryConfig::default());
    let expected = keys::encode_value(&record(&node_a())).unwrap();
    assert_eq!(
        ops(&mut d),
        vec![RegistryOp::Put {
            key: "nodes/a".into(),
            value: expected.clone()
        }]
    );
    assert_eq!(
        d.owned(),
        &BTreeMap::from([("nodes/a".to_string(), expected)])
    );
}

#[test]
fn local_changes_become_ordered_ops() {
    let mut d = ClusterDirectory::new(record(&node_a()), DirectoryConfig::default());
    ops(&mut d);
    RoomDirectory::set_wall_clock(&mut d, 5_000);
    d.local_peer_joined(&room(), peer("alice", &["p1", "p2"]))
        .unwrap();
    let keys_of = |ops: &[RegistryOp]| -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                RegistryOp::Put { key, .. } => format!("put {key}"),
                RegistryOp::Delete { key } => format!("del {key}"),
            })
            .collect()
    };
    let written = ops(&mut d);
    assert_eq!(
        keys_of(&written),
        [
            "put rooms/r/nodes/a",
            "put rooms/r/peers/a/alice",
            "put rooms/r/producers/a/alice/p1",
            "put rooms/r/producers/a/alice/p2",
        ]
    );
    assert_eq!(
        written[0],
        RegistryOp::Put {
            key: "rooms/r/nodes/a".into(),
            value: r#"{"sinceMs":5000}"#.into()
        }
    );
    // A second peer: no second host key.
    d.local_peer_joined(&room(), peer("carol", &[])).unwrap();
    assert_eq!(keys_of(&ops(&mut d)), ["put rooms/r/peers/a/carol"]);

    let alice = PeerId::from("alice");
    d.local_producer_paused(&room(), &alice, &ProducerId::from("p1"), true);
    d.local_producer_paused(&room(), &alice, &ProducerId::from("p1"), true);
    let paused = ops(&mut d);
    assert_eq!(keys_of(&paused), ["put rooms/r/producers/a/alice/p1"]);
    let RegistryOp::Put { value, .. } = &paused[0] else {
        unreachable!()
    };
    assert!(
        keys::parse_value::<ProducerRecord>(value.as_bytes())
            .unwrap()
            .paused
    );

    d.local_peer_left(&room(), &alice);
    assert_eq!(
        keys_of(&ops(&mut d)),
        [
            "del rooms/r/producers/a/alice/p1",
            "del rooms/r/producers/a/alice/p2",
            "del rooms/r/peers/a/alice",
        ]
    );
    d.local_peer_left(&room(), &PeerId::from("carol"));
    assert_eq!(
        keys_of(&ops(&mut d)),
        ["del rooms/r/peers/a/carol", "del rooms/r/nodes/a"]
    );
    assert_eq!(d.owned().keys().collect::<Vec<_>>(), ["nodes/a"]);

    // The node record is put again only when it changes.
    d.set_local_load(NodeLoad::default());
    d.set_local_state(NodeState::Serving);
    assert!(ops(&mut d).is_empty());
    d.set_local_load(NodeLoad {
        peers: 3,
        ..NodeLoad::default()
    });
    d.set_local_state(NodeState::Draining);
    let written = ops(&mut d);
    assert_eq!(keys_of(&written), ["put nodes/a", "put nodes/a"]);
    let RegistryOp::Put { value, .. } = &written[1] else {
        unreachable!()
    };
    let rec = keys::parse_node_record(&node_a(), value.as_bytes()).unwrap();
    assert_eq!((rec.state, rec.load.peers), (NodeState::Draining, 3));
    assert_eq!(d.owned()["nodes/a"], *value);
}

#[test]
fn peer_and_producer_appear_in_grammar_order() {
    let mut m = alice_and_bob();
    assert_eq!(
        events(&mut m.b),
        vec![
            wanted(&node_a()),
            joined(&node_a(), "alice"),
            added(&node_a(), "alice", "p1")
        ]
    );
    assert_eq!(
        m.b.remote_peers(&room()),
        vec![(node_a(), peer("alice", &["p1"]))]
    );
    // A started watching after bob joined: it learned of him at once.
    assert_eq!(
        events(&mut m.a),
        vec![wanted(&node_b()), joined(&node_b(), "bob")]
    );
    assert_eq!(
        m.a.remote_peers(&room()),
        vec![(node_b(), peer("bob", &[]))]
    );
    // Nobody ever sees itself, nor repairs anything.
    assert!(m
        .a
        .remote_peers(&room())
        .iter()
        .all(|(n, _)| n != &node_a()));
    assert_eq!(
        m.a.stats().stale_own_deleted + m.a.stats().own_republished,
        0
    );
    assert_eq!(
        m.b.stats().stale_own_deleted + m.b.stats().own_republished,
        0
    );
    assert_eq!(m.a.stats().malformed + m.b.stats().malformed, 0);
}

#[test]
fn watching_later_sees_what_exists() {
    let mut m = Mesh::new(DirectoryConfig::default());
    m.a.local_peer_joined(&room(), peer("alice", &["p1"]))
        .unwrap();
    m.pump();
    assert!(events(&mut m.b).is_empty(), "b does not watch r");
    m.b.watch_room(&room()).unwrap();
    assert_eq!(
        events(&mut m.b),
        vec![
            wanted(&node_a()),
            joined(&node_a(), "alice"),
            added(&node_a(), "alice", "p1")
        ]
    );
    // Watching again changes nothing.
    m.b.watch_room(&room()).unwrap();
    assert!(events(&mut m.b).is_empty());
}

#[test]
fn pause_is_republished_without_events() {
    let mut m = settled();
    m.a.local_producer_paused(
        &room(),
        &PeerId::from("alice"),
        &ProducerId::from("p1"),
        true,
    );
    m.pump();
    assert!(events(&mut m.b).is_empty());
    let shown = m.b.remote_peers(&room());
    assert!(shown[0].1.producers[0].paused);
}

#[test]
fn a_rename_is_one_event_and_keeps_the_producers() {
    let mut m = settled();
    let alice = PeerId::from("alice");
    m.a.local_peer_renamed(&room(), &alice, "Alicia");
    m.pump();
    assert_eq!(
        events(&mut m.b),
        vec![DirectoryEvent::RemotePeerRenamed {
            room: room(),
            node: node_a(),
            peer_id: alice.clone(),
            display_name: "Alicia".into(),
            old_display_name: peer("alice", &[]).display_name,
        }]
    );
    let shown = m.b.remote_peers(&room());
    assert_eq!(shown[0].1.display_name, "Alicia");
    assert_eq!(shown[0].1.producers.len(), 1, "producers untouched");
    // The same name again, or an unknown peer: nothing.
    m.a.local_peer_renamed(&room(), &alice, "Alicia");
    m.a.local_peer_renamed(&room(), &PeerId::from("nobody"), "X");
    m.pump();
    assert!(events(&mut m.b).is_empty());
}

#[test]
fn producers_and_peers_go_with_removals() {
    let mut m = settled();
    let alice = PeerId::from("alice");
    m.a.local_producer_added(&room(), &alice, producer("p2"))
        .unwrap();
    m.pump();
    assert_eq!(events(&mut m.b), vec![added(&node_a(), "alice", "p2")]);
    m.a.local_producer_removed(&room(), &alice, &ProducerId::from("p1"));
    m.pump();
    assert_eq!(events(&mut m.b), vec![removed(&node_a(), "alice", "p1")]);
    m.a.local_peer_left(&room(), &alice);
    m.pump();
    assert_eq!(
        events(&mut m.b),
        vec![
            removed(&node_a(), "alice", "p2"),
            left(&node_a(), "alice"),
            unwanted(&node_a())
        ]
    );
    assert!(m.b.remote_peers(&room()).is_empty());
    m.a.unwatch_room(&room());
    m.pump();
    assert!(events(&mut m.b).is_empty());
    // Every key of a's room is gone from the registry.
    assert!(m.kv.data.keys().all(|k| k.starts_with(b"nodes/")
        || k.ends_with(b"/b")
        || k.windows(3).any(|w| w == b"/b/")));
}

#[test]
fn unwatch_removes_what_was_shown() {
    let mut m = settled();
    m.b.unwatch_room(&room());
    assert_eq!(
        events(&mut m.b),
        vec![
            removed(&node_a(), "alice", "p1"),
            left(&node_a(), "alice"),
            unwanted(&node_a())
        ]
    );
    assert!(m.b.remote_peers(&room()).is_empty());
    // Later changes in r are not shown.
    m.a.local_peer_joined(&room(), peer("frank", &[])).unwrap();
    m.pump();
    assert!(events(&mut m.b).is_empty());
}

#[test]
fn relisting_reports_only_differences() {
    let mut m = settled();
    m.a.local_peer_joined(&room(), peer("dave", &["d1"]))
        .unwrap();
    m.pump();
    events(&mut m.b);

    // b's watch falls behind; meanwhile alice loses p1 and gains p3, dave leaves, erin joins.
    m.b_deaf = true;
    let alice = PeerId::from("alice");
    m.a.local_producer_removed(&room(), &alice, &ProducerId::from("p1"));
    m.a.local_producer_added(&room(), &alice, producer("p3"))
        .unwrap();
    m.a.local_peer_left(&room(), &PeerId::from("dave"));
    m.a.local_peer_joined(&room(), peer("erin", &[])).unwrap();
    m.pump();
    assert!(events(&mut m.b).is_empty());

    m.b_deaf = false;
    let snapshot = m.kv.snapshot();
    m.b.apply_registry(snapshot.clone());
    assert_eq!(
        events(&mut m.b),
        vec![
            removed(&node_a(), "alice", "p1"),
            removed(&node_a(), "dave", "d1"),
            left(&node_a(), "dave"),
            added(&node_a(), "alice", "p3"),
            joined(&node_a(), "erin"),
        ]
    );
    assert!(ops(&mut m.b).is_empty());
    // The same listing again: nothing.
    m.b.apply_registry(snapshot);
    assert!(events(&mut m.b).is_empty());
    assert!(ops(&mut m.b).is_empty());
    assert_eq!(m.b.stats().snapshots, 2);
    assert_eq!(m.b.revision(), m.kv.revision);
}

#[test]
fn a_producer_waits_for_its_peer() {
    let mut b = ClusterDirectory::new(record(&node_b()), DirectoryConfig::default());
    b.watch_room(&room()).unwrap();
    let value = |r: &dyn Fn() -> Result<String, keys::ValueError>| r().unwrap();
    let node = value(&|| keys::encode_value(&record(&node_a())));
    let p1 = value(&|| keys::encode_value(&ProducerRecord::from_info(&producer("p1"))));
    let alice = value(&|| keys::encode_value(&PeerRecord::from_info(&peer("alice", &[]))));
    b.apply_registry(RegistryUpdate::Changes {
        revision: 1,
        changes: vec![
            put("nodes/a", &node),
            put("rooms/r/producers/a/alice/p1", &p1),
        ],
    });
    assert!(events(&mut b).is_empty());
    b.apply_registry(RegistryUpdate::Changes {
        revision: 2,
        changes: vec![put("rooms/r/peers/a/alice", &alice)],
    });
    assert_eq!(
        events(&mut b),
        vec![
            wanted(&node_a()),
            joined(&node_a(), "alice"),
            added(&node_a(), "alice", "p1")
        ]
    );
    // New RTP parameters are a new producer as far as consumers go.
    let mut changed = producer("p1");
    changed.rtp_parameters.mid = Some("3".into());
    let changed_value = keys::encode_value(&ProducerRecord::from_info(&changed)).unwrap();
    b.apply_registry(RegistryUpdate::Changes {
        revision: 3,
        changes: vec![put("rooms/r/producers/a/alice/p1", &changed_value)],
    });
    let DirectoryEvent::RemoteProducerAdded { producer: p, .. } = &events(&mut b)[1] else {
        panic!("expected removal then addition");
    };
    assert_eq!(p, &changed);
    // A renamed peer is renamed, not replaced (its producers stay); a new device is a new
    // peer (it leaves and joins again).
    let mut renamed = peer("alice", &[]);
    renamed.display_name = "Alice II".into();
    let renamed_value = keys::encode_value(&PeerRecord::from_info(&renamed)).unwrap();
    b.apply_registry(RegistryUpdate::Changes {
        revision: 4,
        changes: vec![put("rooms/r/peers/a/alice", &renamed_value)],
    });
    let evs = events(&mut b);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(matches!(
        &evs[0],
        DirectoryEvent::RemotePeerRenamed { display_name, .. } if display_name == "Alice II"
    ));
    renamed.device = r#"{"flag":"other"}"#.into();
    let new_device = keys::encode_value(&PeerRecord::from_info(&renamed)).unwrap();
    b.apply_registry(RegistryUpdate::Changes {
        revision: 5,
        changes: vec![put("rooms/r/peers/a/alice", &new_device)],
    });
    let evs = events(&mut b);
    assert_eq!(evs.len(), 4, "{evs:?}");
    assert_eq!(evs[1], left(&node_a(), "alice"));
    assert!(matches!(
        &evs[2],
        DirectoryEvent::RemotePeerJoined { peer, .. } if peer.display_name == "Alice II"
    ));
}

#[test]
fn lease_expiry_with_link_down_removes_everything() {
    let mut m = settled();
    m.b.link_up(&node_a());
    m.b.link_down(&node_a());
    assert!(
        events(&mut m.b).is_empty(),
        "a listed node stays while its link is down"
    );
    m.a_cut = true;
    m.expire(&node_a());
    assert_eq!(
        events(&mut m.b),
        vec![
            removed(&node_a(), "alice", "p1"),
            left(&node_a(), "alice"),
            gone(&node_a()),
            unwanted(&node_a())
        ]
    );
    assert!(m.b.remote_peers(&room()).is_empty());
}

#[test]
fn lease_expiry_with_link_up_freezes_until_relisted() {
    let mut m = settled();
    m.a.local_peer_joined(&room(), peer("dave", &["d1"]))
        .unwrap();
    m.pump();
    m.b.link_up(&node_a());
    events(&mut m.b);

    // a loses the registry: its lease expires, but its pipe to b is up.
    m.a_cut = true;
    m.expire(&node_a());
    assert!(events(&mut m.b).is_empty());
    assert_eq!(m.b.remote_peers(&room()).len(), 2);
    let view = m.b.cluster_view();
    let a_view = view
        .nodes
        .iter()
        .find(|n| n.record.node_id == node_a())
        .unwrap();
    assert!(!a_view.listed && a_view.frozen && a_view.wanted);
    assert_eq!(a_view.link, LinkView::Up);

    // a comes back with the same entries: nothing to report.
    m.a_cut = false;
    m.republish(&node_a());
    assert!(events(&mut m.b).is_empty());
    assert!(!m.b.cluster_view().nodes[0].frozen);

    // Again, and this time dave leaves while a is cut off.
    m.a_cut = true;
    m.expire(&node_a());
    m.a.local_peer_left(&room(), &PeerId::from("dave"));
    m.pump();
    assert!(events(&mut m.b).is_empty());
    m.a_cut = false;
    m.republish(&node_a());
    assert_eq!(
        events(&mut m.b),
        vec![removed(&node_a(), "dave", "d1"), left(&node_a(), "dave")]
    );
    assert_eq!(
        m.b.remote_peers(&room()),
        vec![(node_a(), peer("alice", &["p1"]))]
    );
    // a saw its own keys come back as it owns them: nothing to repair.
    assert!(ops(&mut m.a).is_empty());
}

#[test]
fn link_down_while_frozen_drops_the_copy() {
    let mut m = settled();
    m.b.link_up(&node_a());
    m.a_cut = true;
    m.expire(&node_a());
    assert!(events(&mut m.b).is_empty());
    m.b.link_down(&node_a());
    assert_eq!(
        events(&mut m.b),
        vec![
            removed(&node_a(), "alice", "p1"),
            left(&node_a(), "alice"),
            gone(&node_a()),
            unwanted(&node_a())
        ]
    );
    // The link coming back brings nothing back: only the registry can.
    m.b.link_up(&node_a());
    assert!(events(&mut m.b).is_empty());
    assert!(m.b.remote_peers(&room()).is_empty());
    m.a_cut = false;
    m.republish(&node_a());
    assert_eq!(
        events(&mut m.b),
        vec![
            wanted(&node_a()),
            joined(&node_a(), "alice"),
            added(&node_a(), "alice", "p1")
        ]
    );
}

#[test]
fn unwatching_a_frozen_room_lets_the_link_go() {
    let mut m = settled();
    m.b.link_up(&node_a());
    m.a_cut = true;
    m.expire(&node_a());
    m.b.unwatch_room(&room());
    assert_eq!(
        events(&mut m.b),
        vec![
            removed(&node_a(), "alice", "p1"),
            left(&node_a(), "alice"),
            unwanted(&node_a())
        ]
    );
    m.b.watch_room(&room()).unwrap();
    assert!(events(&mut m.b).is_empty());
}

#[test]
fn node_gone_hides_until_link_up() {
    let mut m = settled();
    m.b.link_up(&node_a());
    m.b.link_down(&node_a());
    m.b.node_gone(&node_a());
    // Hidden, but still wanted: the worker should dial it again.
    assert_eq!(
        events(&mut m.b),
        vec![removed(&node_a(), "alice", "p1"), left(&node_a(), "alice")]
    );
    assert!(m.b.remote_peers(&room()).is_empty());
    assert_eq!(m.b.cluster_view().nodes[0].link, LinkView::Gone);
    // Registry changes of a gone node stay hidden.
    m.a.local_peer_joined(&room(), peer("gina", &[])).unwrap();
    m.pump();
    assert!(events(&mut m.b).is_empty());
    m.b.link_up(&node_a());
    assert_eq!(
        events(&mut m.b),
        vec![
            joined(&node_a(), "alice"),
            added(&node_a(), "alice", "p1"),
            joined(&node_a(), "gina")
        ]
    );
}

#[test]
fn links_are_wanted_while_a_watched_room_needs_them() {
    let mut m = Mesh::new(DirectoryConfig::default());
    m.b.watch_room(&room()).unwrap();
    // A room host key alone (a's peer is joining) is reason enough.
    let host = keys::encode_value(&RoomHostRecord { since_ms: 1 }).unwrap();
    let revision = m.kv.revision;
    m.b.apply_registry(RegistryUpdate::Changes {
        revision,
        changes: vec![put("rooms/r/nodes/a", &host)],
    });
    assert_eq!(events(&mut m.b), vec![wanted(&node_a())]);
    // Load updates change nothing.
    m.a.set_local_load(NodeLoad {
        peers: 9,
        ..NodeLoad::default()
    });
    m.pump();
    assert!(events(&mut m.b).is_empty());
    // A new address is announced again.
    let mut moved = record(&node_a());
    moved.pipe_addr = Some("10.9.9.9:7000".into());
    let value = keys::encode_value(&moved).unwrap();
    m.b.apply_registry(RegistryUpdate::Changes {
        revision,
        changes: vec![put("nodes/a", &value)],
    });
    assert_eq!(
        events(&mut m.b),
        vec![DirectoryEvent::LinkWanted {
            node: node_a(),
            pipe_addr: "10.9.9.9:7000".into()
        }]
    );
    // No address: not wanted.
    moved.pipe_addr = None;
    let value = keys::encode_value(&moved).unwrap();
    m.b.apply_registry(RegistryUpdate::Changes {
        revision,
        changes: vec![put("nodes/a", &value)],
    });
    assert_eq!(events(&mut m.b), vec![unwanted(&node_a())]);
    // A's own directory never wants itself.
    m.a.watch_room(&room()).unwrap();
    m.a.local_peer_joined(&room(), peer("alice", &[])).unwrap();
    m.pump();
    assert!(!events(&mut m.a)
        .iter()
        .any(|e| matches!(e, DirectoryEvent::LinkWanted { node, .. } if node == &node_a())));
}

#[test]
fn own_entries_are_never_trusted() {
    let mut m = settled();
    let mut stale = record(&node_b());
    stale.incarnation = "b-0".into();
    let stale_value = keys::encode_value(&stale).unwrap();
    let ghost = keys::encode_value(&PeerRecord::from_info(&peer("ghost", &[]))).unwrap();
    let revision = m.kv.revision;
    // A previous run of b left a peer; someone overwrote b's record.
    m.b.apply_registry(RegistryUpdate::Changes {
        revision,
        changes: vec![
            put("rooms/r/peers/b/ghost", &ghost),
            put("nodes/b", &stale_value),
            put("rooms/r/peers/b/bob", "garbage"),
        ],
    });
    let own = m.b.owned().clone();
    assert_eq!(
        ops(&mut m.b),
        vec![
            RegistryOp::Put {
                key: "nodes/b".into(),
                value: own["nodes/b"].clone()
            },
            RegistryOp::Put {
                key: "rooms/r/peers/b/bob".into(),
                value: own["rooms/r/peers/b/bob"].clone()
            },
            RegistryOp::Delete {
                key: "rooms/r/peers/b/ghost".into()
            },
        ]
    );
    assert_eq!(m.b.stats().stale_own_deleted, 1);
    assert_eq!(m.b.stats().own_republished, 2);
    assert_eq!(m.b.stats().malformed, 1);
    assert!(events(&mut m.b).is_empty(), "own entries are never shown");

    // Someone deletes one of b's keys: b puts it back.
    m.b.apply_registry(RegistryUpdate::Changes {
        revision,
        changes: vec![del("rooms/r/nodes/b")],
    });
    assert_eq!(
        ops(&mut m.b),
        vec![RegistryOp::Put {
            key: "rooms/r/nodes/b".into(),
            value: own["rooms/r/nodes/b"].clone()
        }]
    );

    // A re-listing checks every own entry: one missing, one stale.
    let mut snapshot = m.kv.snapshot();
    if let RegistryUpdate::Snapshot { kvs, .. } = &mut snapshot {
        kvs.retain(|(k, _)| k.as_slice() != b"rooms/r/peers/b/bob");
        kvs.push((b"rooms/r/producers/b/bob/old".to_vec(), b"{}".to_vec()));
    }
    m.b.apply_registry(snapshot);
    let repaired = ops(&mut m.b);
    assert_eq!(repaired.len(), 2, "{repaired:?}");
    assert!(repaired.contains(&RegistryOp::Put {
        key: "rooms/r/peers/b/bob".into(),
        value: own["rooms/r/peers/b/bob"].clone()
    }));
    assert!(repaired.contains(&RegistryOp::Delete {
        key: "rooms/r/producers/b/bob/old".into()
    }));
}

#[test]
fn malformed_entries_are_skipped_and_counted_once() {
    let mut b = ClusterDirectory::new(record(&node_b()), DirectoryConfig::default());
    b.watch_room(&room()).unwrap();
    ops(&mut b);
    let node = keys::encode_value(&record(&node_a())).unwrap();
    let peer_value = keys::encode_value(&PeerRecord::from_info(&peer("alice", &[]))).unwrap();
    let long_key = format!("rooms/r/peers/a/{}", "x".repeat(MAX_KEY_LEN));
    let long_value = format!(r#"{{"displayName":"{}"}}"#, "x".repeat(MAX_VALUE_LEN));
    let own = b.owned()["nodes/b"].clone().into_bytes();
    let kvs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"nodes/b".to_vec(), own),
        (b"nodes/a".to_vec(), node.clone().into_bytes()),
        (
            b"rooms/r/peers/a/alice".to_vec(),
            peer_value.clone().into_bytes(),
        ),
        // Bad escape, non-UTF-8 key, not canonical, unknown shape, invalid node id.
        (
            b"rooms/r/peers/a/%G1".to_vec(),
            peer_value.clone().into_bytes(),
        ),
        (
            b"rooms/r/peers/a/\xff\xfe".to_vec(),
            peer_value.clone().into_bytes(),
        ),
        (
            b"rooms/r/peers/a/%ff".to_vec(),
            peer_value.clone().into_bytes(),
        ),
        (
            b"rooms/r/guests/a/x".to_vec(),
            peer_value.clone().into_bytes(),
        ),
        (
            b"rooms/r/peers/a!/x".to_vec(),
            peer_value.clone().into_bytes(),
        ),
        // Oversized key and value.
        (long_key.into_bytes(), peer_value.clone().into_bytes()),
        (b"rooms/r/peers/a/big".to_vec(), long_value.into_bytes()),
        // Wrong JSON, a record of another node, a producer of unknown kind.
        (b"rooms/r/peers/a/bob".to_vec(), b"[1,2]".to_vec()),
        (b"nodes/c".to_vec(), node.clone().into_bytes()),
        (
            b"rooms/r/producers/a/alice/p9".to_vec(),
            br#"{"kind":"smell"}"#.to_vec(),
        ),
    ];
    let snapshot = RegistryUpdate::Snapshot { revision: 7, kvs };
    b.apply_registry(snapshot.clone());
    assert_eq!(
        events(&mut b),
        vec![wanted(&node_a()), joined(&node_a(), "alice")]
    );
    assert_eq!(b.stats().malformed, 10);
    // Re-listed as is: no new complaints.
    b.apply_registry(snapshot);
    assert_eq!(b.stats().malformed, 10);
    // The same bad value written again: still no complaint; another bad value: one.
    b.apply_registry(RegistryUpdate::Changes {
        revision: 8,
        changes: vec![put("rooms/r/peers/a/bob", "[1,2]")],
    });
    assert_eq!(b.stats().malformed, 10);
    b.apply_registry(RegistryUpdate::Changes {
        revision: 9,
        changes: vec![put("rooms/r/peers/a/bob", "{\"displayName\": 3}")],
    });
    assert_eq!(b.stats().malformed, 11);
    // A good value turning bad is a removal.
    b.apply_registry(RegistryUpdate::Changes {
        revision: 10,
        changes: vec![put("rooms/r/peers/a/alice", "nope")],
    });
    assert_eq!(
        events(&mut b),
        vec![left(&node_a(), "alice"), unwanted(&node_a())]
    );
    assert_eq!(b.stats().malformed, 12);
    assert!(ops(&mut b).is_empty());
    // Deleting malformed entries is quiet.
    b.apply_registry(RegistryUpdate::Snapshot {
        revision: 11,
        kvs: Vec::new(),
    });
    assert_eq!(b.stats().malformed, 12);
    assert_eq!(events(&mut b), vec![gone(&node_a())]);
}

#[test]
fn local_bounds_refuse_and_count() {
    let mut d = ClusterDirectory::new(record(&node_a()), unit_bounds());
    ops(&mut d);
    refuse_past_unit_bounds(&mut d);
    let alice = PeerId::from("alice");
    let s = d.stats();
    assert_eq!(
        (s.refused_rooms, s.refused_peers, s.refused_producers),
        (2, 1, 2)
    );
    // Only alice's entries were written.
    assert_eq!(ops(&mut d).len(), 3);
    d.local_peer_left(&room(), &alice);
    ops(&mut d);
    d.watch_room(&RoomId::from("r2")).unwrap();

    // What readers would refuse is not written.
    let mut d = ClusterDirectory::new(record(&node_a()), DirectoryConfig::default());
    ops(&mut d);
    for bad in [
        peer("", &[]),
        peer(&"x".repeat(MAX_KEY_LEN), &[]),
        peer("ok", &[""]),
        PeerInfo {
            display_name: "x".repeat(MAX_VALUE_LEN),
            ..peer("big", &[])
        },
    ] {
        assert!(matches!(
            d.local_peer_joined(&room(), bad),
            Err(DirectoryError::Unpublishable { .. })
        ));
    }
    assert!(matches!(
        d.local_peer_joined(&room(), peer("twice", &["p", "p"])),
        Err(DirectoryError::ProducerExists { .. })
    ));
    d.local_peer_joined(&room(), peer("ok", &[])).unwrap();
    assert!(matches!(
        d.local_producer_added(&room(), &PeerId::from("ok"), producer("")),
        Err(DirectoryError::Unpublishable { .. })
    ));
    assert_eq!(ops(&mut d).len(), 2, "room host key and peer only");
}

#[test]
fn remote_bounds_show_the_first_entries() {
    let config = DirectoryConfig {
        max_rooms: 10,
        max_peers_per_room: 2,
        max_producers_per_peer: 1,
    };
    let mut m = Mesh::new(DirectoryConfig::default());
    let mut b = ClusterDirectory::new(record(&node_b()), config);
    b.watch_room(&room()).unwrap();
    m.a.local_peer_joined(&room(), peer("p", &["p1", "p2"]))
        .unwrap();
    m.a.local_peer_joined(&room(), peer("q", &[])).unwrap();
    m.a.local_peer_joined(&room(), peer("s", &[])).unwrap();
    m.pump();
    b.apply_registry(m.kv.snapshot());
    assert_eq!(
        events(&mut b),
        vec![
            wanted(&node_a()),
            joined(&node_a(), "p"),
            added(&node_a(), "p", "p1"),
            joined(&node_a(), "q")
        ]
    );
}

#[test]
fn cluster_view_pictures_the_registry() {
    let mut m = settled();
    m.b.link_up(&node_a());
    let view = m.b.cluster_view();
    assert_eq!(view.local_node, node_b());
    assert_eq!(view.revision, m.kv.revision);
    let links: Vec<_> = view
        .nodes
        .iter()
        .map(|n| (n.record.node_id.as_str(), n.link, n.listed, n.wanted))
        .collect();
    assert_eq!(
        links,
        [
            ("a", LinkView::Up, true, true),
            ("b", LinkView::Local, true, false)
        ]
    );
    assert_eq!(view.rooms.len(), 1);
    let r = &view.rooms[0];
    assert!(r.watched);
    assert_eq!(r.hosts, [node_a(), node_b()]);
    let peers: Vec<_> = r
        .peers
        .iter()
        .map(|p| (p.node.as_str(), p.peer_id.as_str(), p.producers.len()))
        .collect();
    assert_eq!(peers, [("a", "alice", 1), ("b", "bob", 0)]);

    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["localNode"], "b");
    assert_eq!(json["nodes"][0]["link"], "up");
    assert_eq!(json["nodes"][0]["record"]["pipeAddr"], addr(&node_a()));
    assert_eq!(
        json["rooms"][0]["peers"][0]["producers"][0]["kind"],
        "video"
    );
    assert_eq!(json["stats"]["staleOwnDeleted"], 0);
    let back: ClusterView = serde_json::from_value(json).unwrap();
    assert_eq!(back, view);

    // The worker holds it as a boxed trait object.
    let dir: Box<dyn RoomDirectory + Send> = Box::new(m.b);
    assert_eq!(dir.cluster_view(), Some(view));
}

/// Replaying the events from empty gives `remote_peers`, whatever the inputs: a seeded random
/// walk over registry changes (valid and not), links, give-ups and watches.
#[test]
fn events_replay_to_the_shown_view() {
    let nodes = ["a", "c", "zz"];
    let rooms = ["r", "s"];
    let peer_value = keys::encode_value(&PeerRecord::from_info(&peer("x", &[]))).unwrap();
    let renamed = keys::encode_value(&PeerRecord::from_info(&peer("y", &[]))).unwrap();
    let mut paused = producer("x");
    paused.paused = true;
    let producer_values = [
        keys::encode_value(&ProducerRecord::from_info(&producer("x"))).unwrap(),
        keys::encode_value(&ProducerRecord::from_info(&paused)).unwrap(),
        keys::encode_value(&ProducerRecord {
            kind: MediaKind::Audio,
            ..ProducerRecord::from_info(&producer("x"))
        })
        .unwrap(),
    ];
    for seed in 1..40u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut d = ClusterDirectory::new(record(&node_b()), DirectoryConfig::default());
        let mut kv: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut shown: BTreeMap<(RoomId, NodeId, PeerId), PeerInfo> = BTreeMap::new();
        let mut links = BTreeSet::new();
        for step in 0..300 {
            let n = NodeId::from(nodes[next(nodes.len())]);
            let r = RoomId::from(rooms[next(rooms.len())]);
            let p = ["p", "q"][next(2)];
            let q = ["x", "y"][next(2)];
            let node_value = keys::encode_value(&record(&n)).unwrap();
            let change = match next(8) {
                0 => Some(put(&keys::node_key(&n), &node_value)),
                1 => Some(del(&keys::node_key(&n))),
                2 => Some(put(
                    &keys::peer_key(&r, &n, &PeerId::from(p)),
                    [&peer_value, &renamed, "bad"][next(3)],
                )),
                3 => Some(del(&keys::peer_key(&r, &n, &PeerId::from(p)))),
                4 => Some(put(
                    &keys::producer_key(&r, &n, &PeerId::from(p), &ProducerId::from(q)),
                    &producer_values[next(3)],
                )),
                5 => Some(del(&keys::producer_key(
                    &r,
                    &n,
                    &PeerId::from(p),
                    &ProducerId::from(q),
                ))),
                _ => None,
            };
            match change {
                Some(c) => {
                    match &c.value {
                        Some(v) => kv.insert(c.key.clone(), v.clone()),
                        None => kv.remove(&c.key),
                    };
                    d.apply_registry(RegistryUpdate::Changes {
                        revision: step,
                        changes: vec![c],
                    })
                }
                None => match next(6) {
                    0 => d.link_up(&n),
                    1 => d.link_down(&n),
                    2 => d.node_gone(&n),
                    3 => {
                        let _ = d.watch_room(&r);
                    }
                    4 => d.unwatch_room(&r),
                    _ => {
                        // A re-listing that misses a few changes.
                        kv.retain(|_, _| next(4) != 0);
                        let kvs = kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        d.apply_registry(RegistryUpdate::Snapshot {
                            revision: step,
                            kvs,
                        });
                    }
                },
            }
            for ev in events(&mut d) {
                replay(&mut shown, &mut links, ev);
            }
            assert!(ops(&mut d)
                .iter()
                .all(|op| matches!(op, RegistryOp::Put { key, .. } if key == "nodes/b")));
            for room in rooms.map(RoomId::from) {
                let mut expected: Vec<(NodeId, PeerInfo)> = shown
                    .iter()
                    .filter(|((r, _, _), _)| r == &room)
                    .map(|((_, n, _), p)| (n.clone(), p.clone()))
                    .collect();
                let mut actual = d.remote_peers(&room);
                for (_, p) in expected.iter_mut().chain(actual.iter_mut()) {
                    p.producers
                        .sort_by(|a, b| a.producer_id.cmp(&b.producer_id));
                    for q in &mut p.producers {
                        // Pause changes are not events.
                        q.paused = false;
                    }
                }
                assert_eq!(actual, expected, "seed {seed} step {step}");
            }
        }
    }
}

/// Apply one event to a replayed view, checking the grammar.
fn replay(
    shown: &mut BTreeMap<(RoomId, NodeId, PeerId), PeerInfo>,
    links: &mut BTreeSet<NodeId>,
    ev: DirectoryEvent,
) {
    match ev {
        DirectoryEvent::RemotePeerJoined { room, node, peer } => {
            assert!(peer.producers.is_empty());
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
            links.insert(node);
        }
        DirectoryEvent::LinkUnwanted { node } => assert!(links.remove(&node), "unwanted twice"),
    }
}

#[test]
fn only_this_nodes_drain_request_is_an_event_and_every_one_is_in_the_view() {
    let mut d = ClusterDirectory::new(record(&NodeId::from("a")), DirectoryConfig::default());
    while d.poll_event().is_some() {}
    let drain = |node: &str, value: Option<&str>| KvChange {
        key: format!("drain/{node}").into_bytes(),
        value: value.map(|v| v.as_bytes().to_vec()),
        mod_revision: 1,
    };
    let changes = |c: Vec<KvChange>| RegistryUpdate::Changes {
        revision: 2,
        changes: c,
    };
    // Another node's request: no event. Ours: an event with its deadline.
    d.apply_registry(changes(vec![
        drain("b", Some(r#"{"requestedAtMs":1}"#)),
        drain(
            "a",
            Some(r#"{"requestedAtMs":1,"deadlineMs":5000,"reason":"x"}"#),
        ),
    ]));
    let evs: Vec<DirectoryEvent> = std::iter::from_fn(|| d.poll_event()).collect();
    assert_eq!(
        evs,
        [DirectoryEvent::LocalDrain {
            draining: true,
            deadline_ms: Some(5000)
        }]
    );
    assert_eq!(d.drains().len(), 2);
    // Unchanged: nothing; unreadable: still a drain, without deadline (and counted).
    d.apply_registry(changes(vec![drain("a", Some("not json"))]));
    assert_eq!(
        d.poll_event(),
        Some(DirectoryEvent::LocalDrain {
            draining: true,
            deadline_ms: None
        })
    );
    assert_eq!(d.stats().malformed, 1);
    // Withdrawn: serving again. Our own drain key is never "stale own" (no op deletes it).
    d.apply_registry(changes(vec![drain("a", None)]));
    assert_eq!(
        d.poll_event(),
        Some(DirectoryEvent::LocalDrain {
            draining: false,
            deadline_ms: None
        })
    );
    assert!(std::iter::from_fn(|| d.poll_registry_op())
        .all(|op| !matches!(&op, RegistryOp::Delete { key } if key.starts_with("drain/"))));
    // A malformed drain key is skipped and counted.
    d.apply_registry(changes(vec![drain("not%zzvalid", Some("{}"))]));
    assert_eq!(d.stats().malformed, 2);
    assert_eq!(d.poll_event(), None);
}
