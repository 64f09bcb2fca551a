//! A node relays a producer piped to it: a third node subscribes to b for Alice's producer
//! (whose origin is a). b answers with the path the stream took (a), pipes each packet on once,
//! forwards pause changes and the end of the producer, and refuses a node already on the path.

use super::*;

const C: &str = "node-c";

/// Pipe control messages b sent to c.
fn to_c(cl: &Cluster) -> Vec<ControlMessage> {
    cl.stray
        .iter()
        .filter_map(|(from, o)| match o {
            Output::PipeControl { node, msg } if *from == B && node.as_str() == C => {
                Some(msg.clone())
            }
            _ => None,
        })
        .collect()
}

/// RTP datagrams b sent to c.
fn rtp_to_c(cl: &Cluster) -> Vec<(u64, Vec<u8>)> {
    let dgrams: Vec<Bytes> = cl
        .stray
        .iter()
        .filter_map(|(from, o)| match o {
            Output::PipeDatagram { node, data } if *from == B && node.as_str() == C => {
                Some(data.clone())
            }
            _ => None,
        })
        .collect();
    rtp_datagrams(&dgrams)
}

fn subscribe(p: &mut Piped, from: &str, request_id: u64) {
    p.cl.inject_control(
        B,
        from,
        ControlMessage::Subscribe {
            request_id,
            room_id: RoomId::from(ROOM),
            producer_id: p.producer.clone(),
        },
    );
}

#[test]
fn far_node_relays_a_piped_producer_once_with_its_path() {
    let mut p = Piped::opus();
    let now = p.cl.now();
    p.cl.n[B].w.handle_pipe_link_up(now, &NodeId::from(C));
    p.cl.reset();
    subscribe(&mut p, C, 7);
    let answers = to_c(&p.cl);
    let [ControlMessage::Subscribed {
        request_id,
        producer_id,
        stream_ids,
        path,
        ..
    }] = &answers[..]
    else {
        panic!("one Subscribed to c: {answers:?}");
    };
    assert_eq!((*request_id, producer_id), (7, &p.producer));
    assert_eq!(stream_ids.len(), 1);
    assert_eq!(
        path,
        &vec![NodeId::from("node-a")],
        "the stream came from a"
    );
    let sid = stream_ids[0];
    // No second subscription from b to a: the one bob's consumer made carries both.
    assert!(!p.cl.ctrl[B]
        .iter()
        .any(|m| matches!(m, ControlMessage::Subscribe { .. })));

    // Each packet goes on to c once, on b's stream, with the pipe's SSRC; bob gets it too.
    p.cl.stray.clear();
    assert_eq!(p.opus_to_bob(1, b"hello").len(), 1, "bob still gets it");
    let relayed = rtp_to_c(&p.cl);
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    assert_eq!(relayed[0].0, sid);
    assert_eq!(
        u32::from_be_bytes(relayed[0].1[8..12].try_into().unwrap()),
        p.pipe_ssrcs[0]
    );
    assert_eq!(
        p.cl.n[B].w.pipe_stream_counts(),
        vec![(NodeId::from("node-a"), 0, 1), (NodeId::from(C), 1, 0)]
    );
    // c's NACK is answered from b's copy.
    p.cl.stray.clear();
    let seq = u16::from_be_bytes([relayed[0].1[2], relayed[0].1[3]]);
    let mut nack = Vec::new();
    rtcp_core::write_nack(&mut nack, 1, p.pipe_ssrcs[0], &[seq]);
    let mut dg = Vec::new();
    write_datagram(DatagramKind::RtcpFromFar, sid, &nack, &mut dg).unwrap();
    p.cl.inject_datagram(B, C, &dg);
    assert_eq!(rtp_to_c(&p.cl).len(), 1, "retransmitted to c");

    // a is on the path: its Subscribe would close a loop.
    p.cl.reset();
    subscribe(&mut p, "node-a", 8);
    assert!(
        p.cl.ctrl[B]
            .iter()
            .any(|m| matches!(m, ControlMessage::SubscribeFailed { request_id: 8, .. })),
        "{:?}",
        p.cl.ctrl[B]
    );

    // The origin's pause goes on to c.
    p.cl.stray.clear();
    p.cl.inject_control(
        B,
        "node-a",
        ControlMessage::ProducerPaused {
            producer_id: p.producer.clone(),
        },
    );
    assert!(to_c(&p.cl)
        .iter()
        .any(|m| matches!(m, ControlMessage::ProducerPaused { .. })));

    // c leaves: nothing more goes there.
    p.cl.inject_control(
        B,
        C,
        ControlMessage::Unsubscribe {
            producer_id: p.producer.clone(),
        },
    );
    p.cl.stray.clear();
    p.send_opus(2, b"again");
    assert!(rtp_to_c(&p.cl).is_empty());
}

#[test]
fn relayed_producer_end_reaches_the_downstream_node() {
    let mut p = Piped::opus();
    let now = p.cl.now();
    p.cl.n[B].w.handle_pipe_link_up(now, &NodeId::from(C));
    subscribe(&mut p, C, 1);
    // Alice's producer closes at a: c hears of it through b, and b's stream ends.
    p.cl.stray.clear();
    p.cl.inject_control(
        B,
        "node-a",
        ControlMessage::ProducerClosed {
            producer_id: p.producer.clone(),
        },
    );
    assert!(
        to_c(&p.cl)
            .iter()
            .any(|m| matches!(m, ControlMessage::ProducerClosed { .. })),
        "{:?}",
        to_c(&p.cl)
    );
    assert!(p.cl.n[B].w.pipe_stream_counts().is_empty());
}

#[test]
fn a_relay_passes_its_new_path_on_and_refuses_a_looping_one() {
    let mut p = Piped::opus();
    let now = p.cl.now();
    p.cl.n[B].w.handle_pipe_link_up(now, &NodeId::from(C));
    p.cl.reset();
    subscribe(&mut p, C, 7);
    assert_eq!(to_c(&p.cl).len(), 1, "c is subscribed");
    let changed = |path: &[&str]| ControlMessage::PathChanged {
        producer_id: p.producer.clone(),
        path: path.iter().map(|n| NodeId::from(*n)).collect(),
    };

    // a, b's upstream, now gets the stream through x: b's way is x, a; c hears it.
    p.cl.stray.clear();
    p.cl.inject_control(B, "node-a", changed(&["node-x"]));
    assert_eq!(to_c(&p.cl), [changed(&["node-x", "node-a"])]);
    // The same again changes nothing and tells nobody.
    p.cl.stray.clear();
    p.cl.inject_control(B, "node-a", changed(&["node-x"]));
    assert!(to_c(&p.cl).is_empty());

    // A path through c, which b pipes to, would be a loop: refused, c hears nothing.
    let refused = p.cl.counters(B).pipe_control_refused.load(Relaxed);
    p.cl.stray.clear();
    p.cl.inject_control(B, "node-a", changed(&[C]));
    assert!(to_c(&p.cl).is_empty());
    assert_eq!(
        p.cl.counters(B).pipe_control_refused.load(Relaxed),
        refused + 1
    );
    // A node that is not b's upstream for the producer is not listened to.
    p.cl.inject_control(B, "node-z", changed(&["node-y"]));
    assert!(to_c(&p.cl).is_empty());
    // c asking again gets the recorded way.
    p.cl.reset();
    subscribe(&mut p, C, 8);
    let answers = to_c(&p.cl);
    assert!(
        matches!(&answers[..], [ControlMessage::Subscribed { path, .. }]
            if path == &vec![NodeId::from("node-x"), NodeId::from("node-a")]),
        "{answers:?}"
    );
}
