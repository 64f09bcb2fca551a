//! The far side pipes a remote producer from its parent in the routing plan, as the
//! directory's view of the cluster gives it, and re-routes when that parent goes away.
//! b's view: a (eu) is the origin; b and c are in us, b draining, so c is the relay and b
//! subscribes to c. c's link goes down: b pipes from a, and bob gets the media.

use std::sync::Mutex;

use super::*;
use crate::discovery::cluster::{ClusterView, LinkView, NodeView, RoomView};
use crate::discovery::directory::{DirectoryError, DirectoryEvent, RoomDirectory};
use crate::discovery::routing::RoutingMode;
use crate::pipe::wire::{PeerInfo, ProducerInfo};

const C: &str = "node-c";

/// A gossip directory whose cluster view the test sets.
struct Viewed {
    inner: GossipDirectory,
    view: Arc<Mutex<Option<ClusterView>>>,
}

impl RoomDirectory for Viewed {
    fn local_peer_joined(&mut self, room: &RoomId, peer: PeerInfo) -> Result<(), DirectoryError> {
        self.inner.local_peer_joined(room, peer)
    }
    fn local_peer_left(&mut self, room: &RoomId, peer_id: &crate::ids::PeerId) {
        self.inner.local_peer_left(room, peer_id)
    }
    fn local_producer_added(
        &mut self,
        room: &RoomId,
        peer_id: &crate::ids::PeerId,
        producer: ProducerInfo,
    ) -> Result<(), DirectoryError> {
        self.inner.local_producer_added(room, peer_id, producer)
    }
    fn local_producer_removed(
        &mut self,
        room: &RoomId,
        peer_id: &crate::ids::PeerId,
        producer_id: &ProducerId,
    ) {
        self.inner
            .local_producer_removed(room, peer_id, producer_id)
    }
    fn watch_room(&mut self, room: &RoomId) -> Result<(), DirectoryError> {
        self.inner.watch_room(room)
    }
    fn unwatch_room(&mut self, room: &RoomId) {
        self.inner.unwatch_room(room)
    }
    fn remote_peers(&self, room: &RoomId) -> Vec<(NodeId, PeerInfo)> {
        self.inner.remote_peers(room)
    }
    fn poll_event(&mut self) -> Option<DirectoryEvent> {
        self.inner.poll_event()
    }
    fn link_up(&mut self, node: &NodeId) {
        self.inner.link_up(node)
    }
    fn link_down(&mut self, node: &NodeId) {
        self.inner.link_down(node)
    }
    fn node_gone(&mut self, node: &NodeId) {
        self.inner.node_gone(node)
    }
    fn apply_remote(&mut self, node: &NodeId, msg: &ControlMessage) {
        self.inner.apply_remote(node, msg)
    }
    fn poll_send(&mut self) -> Option<(NodeId, ControlMessage)> {
        self.inner.poll_send()
    }
    fn cluster_view(&self) -> Option<ClusterView> {
        self.view.lock().unwrap().clone()
    }
}

/// b's view: a in eu; b (draining) and c in us; all host the room.
fn view(c_link: LinkView) -> ClusterView {
    let node = |id: &str, region: &str, state: &str, link| NodeView {
        record: serde_json::from_value(json!({"nodeId": id, "region": region, "state": state}))
            .unwrap(),
        listed: true,
        frozen: false,
        link,
        wanted: true,
        drain: None,
    };
    ClusterView {
        local_node: NodeId::from("node-b"),
        revision: 1,
        nodes: vec![
            node("node-a", "eu", "serving", LinkView::Up),
            node("node-b", "us", "draining", LinkView::Local),
            node(C, "us", "serving", c_link),
        ],
        rooms: vec![RoomView {
            room: RoomId::from(ROOM),
            watched: true,
            hosts: ["node-a", "node-b", C].map(NodeId::from).to_vec(),
            peers: Vec::new(),
        }],
        stats: Default::default(),
    }
}

#[test]
fn far_node_pipes_from_its_relay_and_reroutes_to_the_origin_when_the_relay_goes() {
    let shared = Arc::new(Mutex::new(Some(view(LinkView::Up))));
    let mut cl = Cluster::unlinked(GRACE);
    let now = cl.now();
    cl.n[B].w.enable_pipes(
        Box::new(Viewed {
            inner: GossipDirectory::new(DirectoryConfig::default()),
            view: shared.clone(),
        }),
        GRACE,
    );
    cl.n[B].w.set_routing(now, RoutingMode::Tree);
    cl.link_up();
    cl.n[B].w.handle_pipe_link_up(now, &NodeId::from(C));
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let mut bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    let producer = cl.produce(&alice, "audio", OPUS, json!({}));
    let out = cl.take(B);
    let offer = one_offer(&out, &bob);
    cl.accept(&bob, &offer);
    // b subscribed to c, the relay, not to a.
    let to_c: Vec<&ControlMessage> = cl
        .stray
        .iter()
        .filter_map(|(from, o)| match o {
            Output::PipeControl { node, msg } if *from == B && node.as_str() == C => Some(msg),
            _ => None,
        })
        .collect();
    assert!(
        matches!(to_c[..], [ControlMessage::Subscribe { producer_id: ref p, .. }] if *p == producer),
        "{to_c:?}"
    );
    assert!(subscribed(&cl.ctrl[A]).is_empty(), "a is not asked");

    // c's link goes down (c died): b pipes from a.
    *shared.lock().unwrap() = Some(view(LinkView::Down));
    cl.reset();
    let now = cl.now();
    cl.n[B].w.handle_pipe_link_down(now, &NodeId::from(C));
    cl.pump();
    assert_eq!(subscribed(&cl.ctrl[A]).len(), 1, "{:?}", cl.ctrl[B]);
    cl.reset();
    cl.send_rtp(&mut alice, &rtp(OPUS_PT, 1, 960, OPUS_SSRC, b"via a"));
    let out = cl.take(B);
    assert_eq!(bob.rtp(&out).len(), 1, "bob gets the media from a");
}
