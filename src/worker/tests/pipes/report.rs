//! Operator reports ([`Worker::node_counts`], [`Worker::room_report`]) built from the state of
//! two linked workers: local producers with the nodes they are piped to, remote producers
//! with the node their pipe comes through, encodings as received, consumers with their layers.

use super::*;
use crate::worker::report::{LayerReport, NodeCounts, ProducerReport, RoomReport};

fn report(cl: &mut Cluster, node: usize) -> Option<RoomReport> {
    let now = cl.now();
    let id = cl.ids[node].clone();
    cl.n[node].w.room_report(now, &RoomId::from(ROOM), &id)
}

fn producer<'a>(r: &'a RoomReport, id: &ProducerId) -> &'a ProducerReport {
    r.producers
        .iter()
        .find(|p| &p.producer_id == id)
        .unwrap_or_else(|| panic!("producer {id} not in {r:?}"))
}

#[test]
fn node_counts_hold_sessions_rooms_peers_transports_producers_consumers_and_links() {
    let mut p = Piped::new("audio", OPUS, &["bob", "carol"]);
    let dave = p.cl.client(A, "dave", false, 5001, 14);
    let _ = one_offer(&p.cl.take(A), &dave);
    let _lurker = p.cl.n[A].open("lurker"); // connected, never joins
    assert_eq!(
        p.cl.n[A].w.node_counts(),
        NodeCounts {
            sessions: 3,
            rooms: 1,
            peers: 3,
            transports: 2,
            producers: 1,
            consumers: 1,
            pipe_links: 1,
        }
    );
    // The pipe producer standing for Alice's on b is not one of b's producers.
    assert_eq!(
        p.cl.n[B].w.node_counts(),
        NodeCounts {
            sessions: 2,
            rooms: 1,
            peers: 2,
            transports: 2,
            producers: 0,
            consumers: 2,
            pipe_links: 1,
        }
    );
    p.cl.link_down();
    assert_eq!(p.cl.n[B].w.node_counts().pipe_links, 0);
}

#[test]
fn origin_lists_its_local_producer_with_the_nodes_it_is_piped_to() {
    let mut p = Piped::opus();
    let dave = p.cl.client(A, "dave", false, 5001, 14);
    let offer = one_offer(&p.cl.take(A), &dave);
    let r = report(&mut p.cl, A).expect("the room is on a");
    assert_eq!(r.node_id.as_str(), "node-a");
    assert_eq!(r.room.as_str(), ROOM);
    let peers: Vec<(&str, usize, usize, usize)> = r
        .peers
        .iter()
        .map(|x| (x.peer_id.as_str(), x.transports, x.producers, x.consumers))
        .collect();
    assert_eq!(peers, vec![("alice", 1, 1, 0), ("dave", 1, 0, 1)]);
    assert_eq!(r.peers[0].display_name, "alice");
    assert_eq!(r.producers.len(), 1);
    let pr = producer(&r, &p.producer);
    assert_eq!(pr.peer_id.as_str(), "alice");
    assert_eq!(pr.origin_node_id.as_str(), "node-a");
    assert_eq!(pr.kind, "audio");
    assert!(pr.local && !pr.paused);
    assert_eq!(pr.via, None);
    assert_eq!(pr.path, vec![NodeId::from("node-a")]);
    assert_eq!(pr.piped_to, vec![NodeId::from("node-b")]);
    // Dave has not accepted his consumer yet: paused, and not simulcast (no layers).
    assert_eq!(pr.consumers.len(), 1);
    let c = &pr.consumers[0];
    assert_eq!(
        (c.consumer_id.clone(), c.peer_id.as_str()),
        (offer.id.clone(), "dave")
    );
    assert!(c.paused);
    assert_eq!((c.spatial_layer, c.temporal_layer), (None, None));
    // Nothing received yet.
    assert_eq!(
        pr.layers,
        vec![LayerReport {
            rid: None,
            ssrc: Some(OPUS_SSRC),
            active: false,
            bitrate_bps: 0
        }]
    );

    p.cl.accept(&dave, &offer);
    p.send_opus(1, &[7; 100]);
    let r = report(&mut p.cl, A).expect("room");
    let pr = producer(&r, &p.producer);
    assert!(!pr.consumers[0].paused);
    let layer = &pr.layers[0];
    assert!(layer.active, "{layer:?}");
    assert!(
        layer.bitrate_bps > 800,
        "at least 100 bytes in a second: {layer:?}"
    );

    // Silent for longer than the active window: inactive, no bitrate.
    p.cl.advance(crate::worker::report::ACTIVE_WINDOW + Duration::from_millis(100));
    let r = report(&mut p.cl, A).expect("room");
    let layer = &producer(&r, &p.producer).layers[0];
    assert!(!layer.active, "{layer:?}");
    assert_eq!(layer.bitrate_bps, 0);
}

#[test]
fn far_node_lists_the_piped_producer_via_the_node_its_pipe_comes_from() {
    let mut p = Piped::video(&["bob", "carol"]);
    p.send_vp8(1, true, &[1; 200]);
    let r = report(&mut p.cl, B).expect("the room is on b");
    assert_eq!(r.node_id.as_str(), "node-b");
    let peers: Vec<&str> = r.peers.iter().map(|x| x.peer_id.as_str()).collect();
    assert_eq!(peers, vec!["bob", "carol"], "local peers only");
    assert_eq!(r.producers.len(), 1);
    let pr = producer(&r, &p.producer);
    assert_eq!(pr.peer_id.as_str(), "alice");
    assert_eq!(pr.origin_node_id.as_str(), "node-a");
    assert_eq!(pr.via, Some(NodeId::from("node-a")));
    // The stream's way here, as the origin's answer told it.
    assert_eq!(
        pr.path,
        vec![NodeId::from("node-a"), NodeId::from("node-b")]
    );
    assert!(!pr.local && !pr.paused);
    assert_eq!(pr.kind, "video");
    assert!(pr.piped_to.is_empty());
    // The encoding as it arrives here: with the SSRC the pipe carries.
    assert_eq!(pr.layers.len(), 1);
    assert_eq!(pr.layers[0].ssrc, Some(p.pipe_ssrcs[0]));
    assert_eq!(pr.layers[0].rid, None);
    assert!(pr.layers[0].active && pr.layers[0].bitrate_bps > 0);
    let consumers: Vec<(&str, bool)> = pr
        .consumers
        .iter()
        .map(|c| (c.peer_id.as_str(), c.paused))
        .collect();
    assert_eq!(consumers, vec![("bob", false), ("carol", false)]);
    let ids: Vec<&ConsumerId> = p.far.iter().map(|(_, o)| &o.id).collect();
    for c in &pr.consumers {
        assert!(ids.contains(&&c.consumer_id), "{c:?}");
    }

    // Paused at the origin: paused on b too.
    let alice = p.alice.session;
    p.cl.n[A].ok(alice, "pauseProducer", json!({"producerId": p.producer}));
    p.cl.pump();
    assert!(producer(&report(&mut p.cl, B).expect("room"), &p.producer).paused);

    // The origin lists b as where it is piped.
    let r = report(&mut p.cl, A).expect("room on a");
    let pr = producer(&r, &p.producer);
    assert!(pr.local && pr.paused);
    assert_eq!(pr.piped_to, vec![NodeId::from("node-b")]);
    assert!(pr.consumers.is_empty());
}

#[test]
fn simulcast_encodings_are_listed_lowest_first_with_rids_and_consumer_layers() {
    let mut cl = Cluster::new();
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let dave = cl.client(A, "dave", false, 5001, 14);
    let bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    let pid = cl.produce(&alice, "video", VP8_SIMULCAST, json!({}));
    let local = one_offer(&cl.take(A), &dave);
    let far = one_offer(&cl.take(B), &bob);
    cl.accept(&dave, &local);
    cl.accept(&bob, &far);
    cl.reset();

    // Before any packet, rid-only encodings have no SSRC yet; nothing forwarded.
    let r = report(&mut cl, A).expect("room");
    let pr = producer(&r, &pid);
    let rids: Vec<Option<&str>> = pr.layers.iter().map(|l| l.rid.as_deref()).collect();
    assert_eq!(rids, vec![Some("r0"), Some("r1"), Some("r2")]);
    assert!(pr.layers.iter().all(|l| l.ssrc.is_none() && !l.active));
    assert_eq!(pr.consumers[0].spatial_layer, None);

    for rid in 0..3 {
        let seq = 100 + rid as u16;
        cl.send_rtp(&mut alice, &simulcast(rid, seq, true, b"key"));
    }
    let r = report(&mut cl, A).expect("room");
    let pr = producer(&r, &pid);
    let seen: Vec<(Option<&str>, Option<u32>, bool)> = pr
        .layers
        .iter()
        .map(|l| (l.rid.as_deref(), l.ssrc, l.active))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Some("r0"), Some(SIM_SSRCS[0]), true),
            (Some("r1"), Some(SIM_SSRCS[1]), true),
            (Some("r2"), Some(SIM_SSRCS[2]), true),
        ]
    );
    let c = &pr.consumers[0];
    assert_eq!(c.peer_id.as_str(), "dave");
    assert_eq!(
        c.spatial_layer,
        Some(2),
        "switched up to the top layer: {c:?}"
    );
    assert!(c.temporal_layer.is_some(), "{c:?}");

    // Far away: the same three encodings in the same order, by the SSRCs piped (no rids).
    let r = report(&mut cl, B).expect("room");
    let pr = producer(&r, &pid);
    let seen: Vec<(Option<&str>, bool)> = pr
        .layers
        .iter()
        .map(|l| (l.rid.as_deref(), l.active))
        .collect();
    assert_eq!(seen, vec![(None, true); 3]);
    assert_eq!(pr.layers.len(), 3);
    assert!(pr.layers.iter().all(|l| l.ssrc.is_some()));
    assert_eq!(pr.consumers[0].peer_id.as_str(), "bob");
    assert_eq!(pr.consumers[0].spatial_layer, Some(2));
}

#[test]
fn a_remote_producer_neither_piped_nor_consumed_here_is_not_listed() {
    let mut p = Piped::opus();
    // Carol on b joined without RTP capabilities: she cannot consume Alice's producer.
    let carol = p.cl.n[B].open("carol");
    p.cl.pump();
    p.cl.n[B].join(carol, "Carol", false);
    p.cl.reset();
    let bob = p.far[0].0.session;
    p.cl.n[B].close(bob);
    p.cl.reset();
    // Within the linger, Alice's media is still piped to b: listed, without consumers.
    let r = report(&mut p.cl, B).expect("room");
    assert_eq!(r.producers.len(), 1);
    assert!(r.producers[0].consumers.is_empty());
    // After it, b knows the producer from the directory only: not listed.
    p.cl.advance(DEFAULT_SUBSCRIPTION_LINGER + Duration::from_millis(100));
    let r = report(&mut p.cl, B).expect("carol is still in the room");
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].display_name, "Carol");
    assert!(r.producers.is_empty(), "{r:?}");
}

#[test]
fn a_room_the_node_has_nothing_of_has_no_report() {
    let mut p = Piped::opus();
    let now = p.cl.now();
    let a = p.cl.ids[A].clone();
    assert_eq!(
        p.cl.n[A].w.room_report(now, &RoomId::from("elsewhere"), &a),
        None
    );
    // Everyone leaves b: nothing of the room is left there.
    let bob = p.far[0].0.session;
    p.cl.n[B].close(bob);
    p.cl.reset();
    assert_eq!(report(&mut p.cl, B), None);
    assert!(report(&mut p.cl, A).is_some());
}
