//! Layer shedding: samples of a congested link to b make a withhold the upper encodings of
//! a simulcast producer piped there (audio never) and tell b, whose consumers move down at
//! once; restoring resumes them with a keyframe.

use super::*;
use crate::pipe::shedding::LinkSample;

const C: &str = "node-c";

/// A 10 % loss sample: congested.
const LOSSY: f64 = 10.0;
/// A clean sample.
const CLEAN: f64 = 0.0;
const RTT_US: u64 = 20_000;

fn sample(loss: f64) -> LinkSample {
    LinkSample {
        loss_percent: loss,
        rtt_us: RTT_US,
        ..LinkSample::default()
    }
}

/// Alice's simulcast producer on a, consumed by Bob on b; `seqs` number Alice's packets per
/// rid (the last one sent).
struct Sim {
    p: Piped,
    seqs: [u16; 3],
}

impl Sim {
    fn new() -> Self {
        Self {
            p: Piped::new("video", VP8_SIMULCAST, &["bob"]),
            seqs: [100, 200, 300],
        }
    }

    /// a's link to `to` gives a sample; the shed level a answers.
    fn sample(&mut self, to: usize, loss: f64) -> u8 {
        let now = self.p.cl.now();
        let node = self.p.cl.ids[to].clone();
        let l = self.p.cl.n[A]
            .w
            .handle_pipe_link_sample(now, &node, sample(loss));
        self.p.cl.pump();
        l
    }

    /// Alice sends one packet on `rid`; b's outputs.
    fn send(&mut self, rid: usize, keyframe: bool) -> Vec<Output> {
        self.seqs[rid] += 1;
        let pkt = simulcast(
            rid,
            self.seqs[rid],
            keyframe,
            format!("rid {rid}").as_bytes(),
        );
        self.p.cl.send_rtp(&mut self.p.alice, &pkt);
        self.p.cl.take(B)
    }

    /// Alice sends one packet on `rid`; what Bob received.
    fn send_to_bob(&mut self, rid: usize, keyframe: bool) -> Vec<Vec<u8>> {
        let out = self.send(rid, keyframe);
        self.p.bob_rtp(&out)
    }

    /// Alice sends one packet on each rid; the encodings piped to b.
    fn piped(&mut self) -> Vec<usize> {
        self.p.cl.dgrams[A].clear();
        for rid in 0..3 {
            self.send(rid, false);
        }
        let sids: Vec<u64> = rtp_datagrams(&std::mem::take(&mut self.p.cl.dgrams[A]))
            .into_iter()
            .map(|(sid, _)| sid)
            .collect();
        sids.iter()
            .map(|sid| {
                self.p
                    .stream_ids
                    .iter()
                    .position(|s| s == sid)
                    .expect("a stream of the producer")
            })
            .collect()
    }

    /// Time passes with one sample a second until the level changes (or `max` seconds).
    fn until_change(&mut self, loss: f64, max: u64) -> (u64, u8) {
        let before = self.p.cl.n[A].w.pipe_shed_level(&self.p.cl.ids[B]);
        for s in 1..=max {
            self.p.cl.advance(Duration::from_secs(1));
            let l = self.sample(B, loss);
            if l != before {
                return (s, l);
            }
        }
        panic!("the level stayed {before} for {max} s");
    }

    fn shed_packets(&self) -> u64 {
        self.p.cl.counters(A).pipe_shed_packets.load(Relaxed)
    }
}

#[test]
fn congested_link_withholds_upper_encodings_step_by_step_and_restores_them() {
    let mut s = Sim::new();
    // Bob's consumer is at the top layer after a keyframe on each rid.
    for rid in 0..3 {
        assert_eq!(s.send_to_bob(rid, true).len(), 1);
    }
    // Level 0: every encoding is piped.
    assert_eq!(s.sample(B, 1.0), 0, "1 % loss is not congestion");
    assert_eq!(s.piped(), vec![0, 1, 2]);
    assert_eq!(s.shed_packets(), 0);

    // Level 1: encoding 2 is withheld, 0 and 1 flow.
    s.p.cl.advance(Duration::from_secs(1));
    s.p.cl.reset();
    assert_eq!(s.sample(B, LOSSY), 1);
    assert_eq!(s.p.cl.n[A].w.pipe_shed_level(&s.p.cl.ids[B]), 1);
    assert_eq!(
        s.p.cl.ctrl[A],
        vec![ControlMessage::ShedLayers { layers: 1 }],
        "b is told"
    );
    // Bob's consumer moves down at once: b asks for a keyframe of rid 1, which switches him.
    assert_eq!(
        keyframe_requests(&s.p.cl.ctrl[B]),
        vec![(s.p.producer.clone(), Some(1))]
    );
    assert!(s.p.alice.plis(&s.p.cl.take(A)).contains(&SIM_SSRCS[1]));
    let got = s.send_to_bob(1, true);
    assert_eq!(
        got.len(),
        1,
        "Bob is on rid 1 without waiting for rid 2 to go silent"
    );
    assert!(RtpView::parse(&got[0][..])
        .expect("RTP")
        .payload()
        .ends_with(b"rid 1"));
    assert_eq!(s.piped(), vec![0, 1]);
    assert_eq!(s.shed_packets(), 1);
    // At most one step per 2 s.
    s.p.cl.advance(Duration::from_secs(1));
    assert_eq!(s.sample(B, LOSSY), 1);

    // Level 2: only encoding 0; Bob moves to rid 0 at once.
    s.p.cl.reset();
    assert_eq!(s.until_change(LOSSY, 5), (1, 2));
    assert!(s.p.cl.ctrl[A].contains(&ControlMessage::ShedLayers { layers: 2 }));
    assert_eq!(s.send_to_bob(0, true).len(), 1, "Bob is on rid 0");
    assert_eq!(s.piped(), vec![0]);
    assert_eq!(s.shed_packets(), 3);
    assert_eq!(s.send_to_bob(2, true).len(), 0, "nothing of rid 2 crosses");
    // Never the lowest layer.
    s.p.cl.advance(Duration::from_secs(3));
    assert_eq!(s.sample(B, LOSSY), 2);
    assert_eq!(s.piped(), vec![0]);
    let link = s.p.cl.n[A]
        .w
        .pipe_link_reports()
        .into_iter()
        .find(|r| r.node == s.p.cl.ids[B])
        .expect("a reports its link to b");
    assert_eq!((link.piped_out, link.shed_layers), (1, 2));

    // Recovery: one layer at a time, each with a keyframe request to Alice for it.
    s.p.cl.reset();
    let (after, level) = s.until_change(CLEAN, 20);
    assert_eq!(level, 1);
    assert!(after >= 8, "restored after {after} s clean");
    let out = s.p.cl.take(A);
    assert!(
        s.p.alice.plis(&out).contains(&SIM_SSRCS[1]),
        "a asks Alice for a keyframe of the restored rid 1"
    );
    assert_eq!(s.piped(), vec![0, 1]);
    s.p.cl.reset();
    let (after, level) = s.until_change(CLEAN, 20);
    assert_eq!(level, 0);
    assert!(after >= 8, "restored after {after} s clean");
    let out = s.p.cl.take(A);
    assert!(s.p.alice.plis(&out).contains(&SIM_SSRCS[2]));
    let shed = s.shed_packets();
    assert_eq!(s.piped(), vec![0, 1, 2]);
    assert_eq!(s.shed_packets(), shed, "nothing withheld any more");
    // The keyframe on rid 2 switches Bob back up.
    let got = s.send_to_bob(2, true);
    assert_eq!(got.len(), 1, "Bob is back on rid 2");
    assert!(RtpView::parse(&got[0][..])
        .expect("RTP")
        .payload()
        .ends_with(b"rid 2"));
}

#[test]
fn audio_is_never_withheld_and_an_audio_only_link_never_sheds() {
    let mut p = Piped::opus();
    let b = p.cl.ids[B].clone();
    for _ in 0..10 {
        p.cl.advance(Duration::from_secs(2));
        let now = p.cl.now();
        assert_eq!(
            p.cl.n[A].w.handle_pipe_link_sample(now, &b, sample(LOSSY)),
            0
        );
    }
    assert_eq!(p.opus_to_bob(1, b"audio").len(), 1);

    // With a simulcast producer on the link too, the level rises; audio still flows.
    let mut s = Sim::new();
    let opus = s.p.cl.produce(&s.p.alice, "audio", OPUS, json!({}));
    let offer = one_offer(&s.p.cl.take(B), &s.p.far[0].0);
    s.p.cl.accept(&s.p.far[0].0, &offer);
    let audio_sid = subscribed(&s.p.cl.ctrl[A])
        .into_iter()
        .find(|(pid, ..)| *pid == opus)
        .expect("opus subscribed")
        .1[0];
    assert_eq!(s.sample(B, LOSSY), 1);
    s.p.cl.advance(Duration::from_secs(2));
    assert_eq!(s.sample(B, LOSSY), 2);
    s.p.cl.reset();
    for seq in 1..=3u16 {
        let pkt = rtp(OPUS_PT, seq, 960 * u32::from(seq), OPUS_SSRC, b"audio");
        s.p.cl.send_rtp(&mut s.p.alice, &pkt);
    }
    let piped = rtp_datagrams(&s.p.cl.dgrams[A]);
    assert_eq!(piped.len(), 3, "every audio packet piped at level 2");
    assert!(piped.iter().all(|(sid, _)| *sid == audio_sid));
    assert_eq!(s.piped(), vec![0]);
}

#[test]
fn nacks_for_a_withheld_encoding_are_not_answered() {
    let mut s = Sim::new();
    s.piped();
    assert_eq!(s.sample(B, LOSSY), 1);
    s.piped();
    let nack_for = |s: &mut Sim, encoding: usize| {
        let seq = s.seqs[encoding];
        let mut nack = Vec::new();
        rtcp_core::write_nack(&mut nack, 1, s.p.pipe_ssrcs[encoding], &[seq]);
        let mut dg = Vec::new();
        write_datagram(
            DatagramKind::RtcpFromFar,
            s.p.stream_ids[encoding],
            &nack,
            &mut dg,
        )
        .unwrap();
        s.p.cl.dgrams[A].clear();
        s.p.cl.inject_datagram(A, NODE_IDS[B], &dg);
        rtp_datagrams(&std::mem::take(&mut s.p.cl.dgrams[A]))
    };
    // Packets of encoding 2 never crossed: not resent. Encoding 1's are.
    assert!(nack_for(&mut s, 2).is_empty());
    assert_eq!(
        nack_for(&mut s, 1).len(),
        1,
        "encoding 1 was piped and is resent"
    );
    assert_eq!(s.p.cl.counters(A).pipe_rtp_retransmitted.load(Relaxed), 1);
    // Just after the restore, the buffer still holds packets withheld from b: not resent.
    let (_, level) = s.until_change(CLEAN, 20);
    assert_eq!(level, 0);
    assert!(nack_for(&mut s, 2).is_empty());
    s.piped();
    // Once the buffer has aged past the shed period, NACKs are answered again.
    s.p.cl.advance(crate::timing::RTX_BUFFER_MAX_AGE);
    s.piped();
    assert_eq!(nack_for(&mut s, 2).len(), 1);
}

#[test]
fn link_down_forgets_the_shed_level() {
    let mut s = Sim::new();
    assert_eq!(s.sample(B, LOSSY), 1);
    let a = s.p.cl.ids[A].clone();
    assert_eq!(s.p.cl.n[B].w.pipes.shed.limited_by(&a), 1);
    s.p.cl.link_down();
    assert_eq!(s.p.cl.n[A].w.pipe_shed_level(&s.p.cl.ids[B]), 0);
    assert_eq!(
        s.p.cl.n[B].w.pipes.shed.limited_by(&a),
        0,
        "b lifts the limit too"
    );
    // Samples of a link that is down are ignored.
    assert_eq!(s.sample(B, LOSSY), 0);
}

#[test]
fn relay_sheds_toward_its_own_congested_link() {
    let mut s = Sim::new();
    let c = NodeId::from(C);
    let now = s.p.cl.now();
    s.p.cl.n[B].w.handle_pipe_link_up(now, &c);
    s.p.cl.reset();
    s.p.cl.inject_control(
        B,
        C,
        ControlMessage::Subscribe {
            request_id: 7,
            room_id: RoomId::from(ROOM),
            producer_id: s.p.producer.clone(),
        },
    );
    let sids: Vec<u64> =
        s.p.cl
            .stray
            .iter()
            .find_map(|(from, o)| match o {
                Output::PipeControl {
                    node,
                    msg: ControlMessage::Subscribed { stream_ids, .. },
                } if *from == B && *node == c => Some(stream_ids.clone()),
                _ => None,
            })
            .expect("b answers c");
    let relayed = |s: &mut Sim| -> Vec<usize> {
        s.p.cl.stray.clear();
        s.piped();
        s.p.cl
            .stray
            .iter()
            .filter_map(|(from, o)| match o {
                Output::PipeDatagram { node, data } if *from == B && *node == c => {
                    let dg = parse_datagram(data).expect("datagram");
                    (dg.kind == DatagramKind::Rtp).then_some(dg.stream_id)
                }
                _ => None,
            })
            .map(|sid| sids.iter().position(|s| *s == sid).expect("c's stream"))
            .collect()
    };
    assert_eq!(relayed(&mut s), vec![0, 1, 2]);
    // b's link to c is congested; a's link to b is not.
    let now = s.p.cl.now();
    assert_eq!(
        s.p.cl.n[B]
            .w
            .handle_pipe_link_sample(now, &c, sample(LOSSY)),
        1
    );
    assert_eq!(relayed(&mut s), vec![0, 1]);
    assert_eq!(s.piped(), vec![0, 1, 2], "a still pipes everything to b");
    assert_eq!(s.p.cl.counters(B).pipe_shed_packets.load(Relaxed), 2);
    // Restoring asks upstream (a) for a keyframe of the restored encoding.
    s.p.cl.reset();
    for _ in 0..10 {
        s.p.cl.advance(Duration::from_secs(1));
        let now = s.p.cl.now();
        s.p.cl.n[B]
            .w
            .handle_pipe_link_sample(now, &c, sample(CLEAN));
    }
    s.p.cl.pump();
    assert_eq!(s.p.cl.n[B].w.pipe_shed_level(&c), 0);
    assert!(
        keyframe_requests(&s.p.cl.ctrl[B]).contains(&(s.p.producer.clone(), Some(2))),
        "{:?}",
        s.p.cl.ctrl[B]
    );
    assert_eq!(relayed(&mut s), vec![0, 1, 2]);
}
