//! Pipes between two workers in memory: node "a" and node "b", each a [`Harness`] with pipes
//! enabled (gossip directory), one virtual clock, and a shuttle that carries
//! [`Output::PipeControl`] / [`Output::PipeDatagram`] from one worker into the other (control
//! messages through the real wire encoding). No sockets, no QUIC: link events are injected
//! with `handle_pipe_link_up` / `handle_pipe_link_down`, and a "cut" switch drops traffic.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::discovery::directory::{DirectoryConfig, GossipDirectory};
use crate::edge::demux::{classify, PacketClass};
use crate::ids::{NodeId, ProducerId, RoomId};
use crate::metrics::{Direction, Kind, PipeFeedback};
use crate::pipe::link::DEFAULT_SUBSCRIPTION_LINGER;
use crate::pipe::wire::{
    decode_control_body, encode_control, parse_datagram, write_datagram, ControlMessage,
    DatagramKind, PeerInfo,
};
use crate::router::rtcp_core::{self, parse_compound, RtcpItem};
use crate::timing::KEYFRAME_REQUEST_THROTTLE;
use crate::worker::WorkerCounters;

const A: usize = 0;
const B: usize = 1;
const NODE_IDS: [&str; 2] = ["node-a", "node-b"];
/// A node that is not linked to anyone.
const STRANGER: &str = "node-c";
const GRACE: Duration = Duration::from_secs(5);

/// A single-encoding VP8 producer with an explicit SSRC, NACK and PLI feedback.
const VP8_SSRC: u32 = 3_333_333;
const VP8_PT: u8 = 96;
/// SSRCs the simulcast client sends its three rids with.
const SIM_SSRCS: [u32; 3] = [4_000_001, 4_000_002, 4_000_003];

fn vp8_params() -> String {
    json!({
        "mid": "1",
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": VP8_PT, "clockRate": 90000, "parameters": {},
             "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
                              {"type": "ccm", "parameter": "fir"}]}
        ],
        "headerExtensions": [],
        "encodings": [{"ssrc": VP8_SSRC}],
        "rtcp": {"cname": "alice-cname", "reducedSize": true}
    })
    .to_string()
}

/// A VP8 payload: descriptor with a 15-bit PictureID, then the payload header (keyframe or
/// not), then `data`.
fn vp8_payload(picture_id: u16, keyframe: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x90,
        0x80,
        0x80 | ((picture_id >> 8) & 0x7F) as u8,
        picture_id as u8,
        if keyframe { 0x10 } else { 0x11 },
    ];
    p.extend_from_slice(data);
    p
}

/// A single-encoding VP8 packet of [`vp8_params`].
fn vp8(seq: u16, keyframe: bool, data: &[u8]) -> Vec<u8> {
    rtp(
        VP8_PT,
        seq,
        3000 * u32::from(seq),
        VP8_SSRC,
        &vp8_payload(seq, keyframe, data),
    )
}

/// A packet of the VP8 simulcast fixture: encoding `rid` (0..3), with the MID and RID header
/// extensions the server learns its SSRC from.
fn simulcast(rid: usize, seq: u16, keyframe: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x90, VP8_PT];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(3000 * u32::from(seq)).to_be_bytes());
    p.extend_from_slice(&SIM_SSRCS[rid].to_be_bytes());
    // One-byte header extensions: MID (id 4) = "1", RID (id 10) = "r<rid>", padded to 8.
    p.extend_from_slice(&[0xBE, 0xDE, 0, 2]);
    p.extend_from_slice(&[4 << 4, b'1', (10 << 4) | 1, b'r', b'0' + rid as u8, 0, 0, 0]);
    p.extend_from_slice(&vp8_payload(seq, keyframe, data));
    p
}

fn u32_of(v: &Value) -> u32 {
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .unwrap_or_else(|| panic!("not a u32: {v}"))
}

/// Encodes a control message as the link would and decodes it again.
fn wire_round_trip(msg: &ControlMessage) -> ControlMessage {
    let mut frame = Vec::new();
    encode_control(msg, &mut frame).expect("control message encodes");
    decode_control_body(&frame[4..]).expect("control message decodes")
}

/// RTP datagrams among `dgrams`: (stream id, packet).
fn rtp_datagrams(dgrams: &[Bytes]) -> Vec<(u64, Vec<u8>)> {
    dgrams
        .iter()
        .filter_map(|d| {
            let dg = parse_datagram(d).expect("workers send valid datagrams");
            (dg.kind == DatagramKind::Rtp).then(|| (dg.stream_id, dg.packet.to_vec()))
        })
        .collect()
}

/// Sequence numbers NACKed in the far-to-origin RTCP datagrams among `dgrams`: (stream id,
/// media ssrc, seq).
fn nacked(dgrams: &[Bytes]) -> Vec<(u64, u32, u16)> {
    let mut v = Vec::new();
    for d in dgrams {
        let dg = parse_datagram(d).expect("valid datagram");
        if dg.kind != DatagramKind::RtcpFromFar {
            continue;
        }
        for item in parse_compound(dg.packet).expect("valid RTCP") {
            if let RtcpItem::Nack {
                media_ssrc, items, ..
            } = item
            {
                v.extend(items.seqs().map(|s| (dg.stream_id, media_ssrc, s)));
            }
        }
    }
    v
}

fn keyframe_requests(ctrl: &[ControlMessage]) -> Vec<(ProducerId, Option<u8>)> {
    ctrl.iter()
        .filter_map(|m| match m {
            ControlMessage::KeyFrameRequest {
                producer_id,
                encoding,
            } => Some((producer_id.clone(), *encoding)),
            _ => None,
        })
        .collect()
}

fn subscribes(ctrl: &[ControlMessage]) -> Vec<(RoomId, ProducerId)> {
    ctrl.iter()
        .filter_map(|m| match m {
            ControlMessage::Subscribe {
                room_id,
                producer_id,
                ..
            } => Some((room_id.clone(), producer_id.clone())),
            _ => None,
        })
        .collect()
}

fn unsubscribes(ctrl: &[ControlMessage]) -> Vec<ProducerId> {
    ctrl.iter()
        .filter_map(|m| match m {
            ControlMessage::Unsubscribe { producer_id } => Some(producer_id.clone()),
            _ => None,
        })
        .collect()
}

/// The `Subscribed` answers among `ctrl`: (producer, stream ids, paused, encoding SSRCs).
fn subscribed(ctrl: &[ControlMessage]) -> Vec<(ProducerId, Vec<u64>, bool, Vec<u32>)> {
    ctrl.iter()
        .filter_map(|m| match m {
            ControlMessage::Subscribed {
                producer_id,
                stream_ids,
                paused,
                rtp_parameters,
                ..
            } => Some((
                producer_id.clone(),
                stream_ids.clone(),
                *paused,
                rtp_parameters
                    .encodings
                    .iter()
                    .map(|e| e.ssrc.expect("piped encodings have an ssrc"))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// A client of one node: its signaling session and one connected transport (sending or
/// receiving).
struct Client {
    node: usize,
    session: SessionId,
    transport: Value,
    tuple: Tuple,
    /// Encrypts what the client sends.
    out: Context,
    /// Decrypts what the client receives.
    inn: Context,
}

impl Client {
    /// Plain RTP packets among `outputs` sent to this client.
    fn rtp(&mut self, outputs: &[Output]) -> Vec<Vec<u8>> {
        transmits_to(outputs, self.tuple)
            .iter()
            .filter(|p| classify(p) == PacketClass::Rtp)
            .map(|p| {
                self.inn
                    .decrypt_rtp(p)
                    .expect("client decrypts RTP")
                    .to_vec()
            })
            .collect()
    }

    /// Media SSRCs of the PLIs among `outputs` sent to this client.
    fn plis(&mut self, outputs: &[Output]) -> Vec<u32> {
        let mut v = Vec::new();
        for p in transmits_to(outputs, self.tuple) {
            if classify(&p) != PacketClass::Rtcp {
                continue;
            }
            let plain = self.inn.decrypt_rtcp(&p).expect("client decrypts RTCP");
            for item in parse_compound(&plain).expect("valid RTCP") {
                if let RtcpItem::Pli { media_ssrc, .. } = item {
                    v.push(media_ssrc);
                }
            }
        }
        v
    }
}

/// A consumer offer as received by a client.
struct Offer {
    id: ConsumerId,
    data: Value,
}

impl Offer {
    fn ssrc(&self) -> u32 {
        u32_of(&self.data["rtpParameters"]["encodings"][0]["ssrc"])
    }
    fn pt(&self) -> u8 {
        u8::try_from(u32_of(
            &self.data["rtpParameters"]["codecs"][0]["payloadType"],
        ))
        .expect("payload type fits")
    }
}

type DatagramFilter = Box<dyn FnMut(usize, &[u8]) -> bool>;
type Tamper = Box<dyn FnMut(usize, ControlMessage) -> Option<ControlMessage>>;

/// Two workers, one clock, and the shuttle between them.
struct Cluster {
    n: [Harness; 2],
    ids: [NodeId; 2],
    /// Drops every pipe output (both ways) instead of delivering it.
    cut: bool,
    /// Outputs other than pipe traffic, per node, kept for assertions.
    out: [Vec<Output>; 2],
    /// Control messages each node sent (delivered or not), in order.
    ctrl: [Vec<ControlMessage>; 2],
    /// Datagrams each node sent (delivered or not), in order.
    dgrams: [Vec<Bytes>; 2],
    /// Pipe outputs addressed to a node other than the two.
    stray: Vec<(usize, Output)>,
    /// Decides whether a datagram sent by a node is delivered.
    deliver_dgram: Option<DatagramFilter>,
    /// Rewrites (or drops, with `None`) a control message sent by a node.
    tamper: Option<Tamper>,
    /// Client transports kept alive with ICE consent checks while time advances: (node,
    /// transport, tuple).
    consent: Vec<(usize, Value, Tuple)>,
}

impl Cluster {
    /// Two linked nodes.
    fn new() -> Self {
        let mut c = Self::unlinked(GRACE);
        c.link_up();
        c
    }

    /// Two nodes with pipes enabled and no link yet.
    fn unlinked(grace: Duration) -> Self {
        let mut n = [Harness::new(), Harness::new()];
        n[B].now = n[A].now;
        for h in &mut n {
            h.w.enable_pipes(
                Box::new(GossipDirectory::new(DirectoryConfig::default())),
                grace,
            );
        }
        Self {
            n,
            ids: NODE_IDS.map(NodeId::from),
            cut: false,
            out: [Vec::new(), Vec::new()],
            ctrl: [Vec::new(), Vec::new()],
            dgrams: [Vec::new(), Vec::new()],
            stray: Vec::new(),
            deliver_dgram: None,
            tamper: None,
            consent: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.n[A].now
    }

    fn counters(&self, node: usize) -> Arc<WorkerCounters> {
        self.n[node].w.counters()
    }

    fn link_up(&mut self) {
        let now = self.now();
        self.cut = false;
        self.n[A].w.handle_pipe_link_up(now, &self.ids[B]);
        self.n[B].w.handle_pipe_link_up(now, &self.ids[A]);
        self.pump();
    }

    fn link_down(&mut self) {
        let now = self.now();
        self.cut = true;
        self.n[A].w.handle_pipe_link_down(now, &self.ids[B]);
        self.n[B].w.handle_pipe_link_down(now, &self.ids[A]);
        self.pump();
    }

    /// Moves pipe traffic between the workers until none is left.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for from in [A, B] {
                let to = 1 - from;
                let from_id = self.ids[from].clone();
                while let Some(o) = self.n[from].w.poll_output() {
                    match o {
                        Output::PipeControl { node, msg } if node == self.ids[to] => {
                            moved = true;
                            self.ctrl[from].push(msg.clone());
                            if self.cut {
                                continue;
                            }
                            let mut msg = wire_round_trip(&msg);
                            if let Some(t) = self.tamper.as_mut() {
                                match t(from, msg) {
                                    Some(m) => msg = m,
                                    None => continue,
                                }
                            }
                            let now = self.n[to].now;
                            self.n[to].w.handle_pipe_control(now, &from_id, msg);
                        }
                        Output::PipeDatagram { node, data } if node == self.ids[to] => {
                            moved = true;
                            self.dgrams[from].push(data.clone());
                            if self.cut {
                                continue;
                            }
                            if let Some(f) = self.deliver_dgram.as_mut() {
                                if !f(from, &data) {
                                    continue;
                                }
                            }
                            let now = self.n[to].now;
                            self.n[to].w.handle_pipe_datagram(now, &from_id, &data);
                        }
                        o @ (Output::PipeControl { .. } | Output::PipeDatagram { .. }) => {
                            self.stray.push((from, o))
                        }
                        o => self.out[from].push(o),
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("pipe traffic does not settle");
    }

    /// Pumps, then hands over the non-pipe outputs of `node` collected so far.
    fn take(&mut self, node: usize) -> Vec<Output> {
        self.pump();
        std::mem::take(&mut self.out[node])
    }

    /// Forgets what was collected (outputs and pipe logs).
    fn reset(&mut self) {
        self.pump();
        for i in [A, B] {
            self.out[i].clear();
            self.ctrl[i].clear();
            self.dgrams[i].clear();
        }
        self.stray.clear();
    }

    /// Runs both workers' timers up to `now + d`, carrying pipe traffic after each run; the
    /// clients send an ICE consent check every second, as browsers do.
    fn advance(&mut self, d: Duration) {
        let until = self.now() + d;
        while self.now() < until {
            let step = (self.now() + Duration::from_secs(1)).min(until);
            self.run_timers(step);
            self.consent_checks();
        }
        self.pump();
    }

    fn consent_checks(&mut self) {
        let now = self.now();
        for (node, t, tuple) in &self.consent {
            let req = binding_request(&ice_ufrag(t), &ice_password(t), true, 2);
            self.n[*node].w.handle_packet(now, *tuple, &req);
        }
        self.pump();
    }

    fn run_timers(&mut self, until: Instant) {
        self.pump();
        let mut steps = 0;
        loop {
            let next = [A, B]
                .into_iter()
                .filter_map(|i| self.n[i].w.poll_timeout())
                .min();
            let Some(t) = next.filter(|t| *t <= until) else {
                break;
            };
            steps += 1;
            assert!(steps < 100_000, "timers do not advance (stuck at {t:?})");
            let now = t.max(self.now());
            for i in [A, B] {
                self.n[i].now = now;
            }
            for i in [A, B] {
                if self.n[i].w.poll_timeout().is_some_and(|d| d <= now) {
                    self.n[i].w.handle_timeout(now);
                }
            }
            self.pump();
        }
        for i in [A, B] {
            self.n[i].now = until;
        }
    }

    /// A peer that joins (with Chrome's capabilities) and connects one transport: sending
    /// when `producing`, receiving otherwise.
    fn client(&mut self, node: usize, peer: &str, producing: bool, port: u16, seed: u8) -> Client {
        let session = self.n[node].open(peer);
        // The room's peers on the other node are known before the join.
        self.pump();
        let h = &mut self.n[node];
        let transport = h.transport(session, producing, !producing);
        h.join(session, peer, true);
        self.pump();
        let keys = srtp_keys(seed);
        let tuple = udp(port);
        self.n[node].connect_media(session, &transport, tuple, &keys);
        self.pump();
        self.consent.push((node, transport.clone(), tuple));
        Client {
            node,
            session,
            transport,
            tuple,
            out: client_out(&keys),
            inn: client_in(&keys),
        }
    }

    fn produce(&mut self, c: &Client, kind: &str, params: &str, app_data: Value) -> ProducerId {
        let v = self.n[c.node].ok(
            c.session,
            "produce",
            json!({"transportId": tid(&c.transport), "kind": kind, "rtpParameters": fixture(params), "appData": app_data}),
        );
        self.pump();
        ProducerId::from(v["id"].as_str().expect("producer id"))
    }

    fn accept(&mut self, c: &Client, offer: &Offer) {
        let now = self.now();
        self.n[c.node]
            .w
            .handle_consumer_answer(now, c.session, &offer.id, true);
        self.pump();
    }

    /// The client sends an RTP packet (encrypted here).
    fn send_rtp(&mut self, c: &mut Client, plain: &[u8]) {
        let enc = c.out.encrypt_rtp(plain).expect("encrypt RTP");
        let now = self.now();
        self.n[c.node].w.handle_packet(now, c.tuple, &enc);
        self.pump();
    }

    /// The client sends an RTCP compound packet (encrypted here).
    fn send_rtcp(&mut self, c: &mut Client, plain: &[u8]) {
        let enc = c.out.encrypt_rtcp(plain).expect("encrypt RTCP");
        let now = self.now();
        self.n[c.node].w.handle_packet(now, c.tuple, &enc);
        self.pump();
    }

    /// Injects a control message into `to` as if `from` had sent it.
    fn inject_control(&mut self, to: usize, from: &str, msg: ControlMessage) {
        let now = self.now();
        self.n[to]
            .w
            .handle_pipe_control(now, &NodeId::from(from), msg);
        self.pump();
    }

    /// Injects a datagram into `to` as if `from` had sent it.
    fn inject_datagram(&mut self, to: usize, from: &str, data: &[u8]) {
        let now = self.now();
        self.n[to]
            .w
            .handle_pipe_datagram(now, &NodeId::from(from), data);
        self.pump();
    }
}

/// Notifications to `session` without the periodic score reports.
fn signals_for(outputs: &[Output], session: SessionId) -> Vec<(&'static str, Value)> {
    notifications_for(outputs, session)
        .into_iter()
        .filter(|(m, _)| !matches!(*m, "consumerScore" | "producerScore"))
        .collect()
}

fn signal_methods(outputs: &[Output], session: SessionId) -> Vec<&'static str> {
    signals_for(outputs, session)
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

/// The single offer a client got among `outputs`.
fn one_offer(outputs: &[Output], c: &Client) -> Offer {
    let offers = new_consumers_for(outputs, c.session);
    assert_eq!(offers.len(), 1, "one newConsumer expected: {offers:?}");
    let (id, data) = offers.into_iter().next().expect("one offer");
    Offer { id, data }
}

/// Alice publishes on a; every name in `far` is a receiving client on b with an accepted
/// consumer of her producer.
struct Piped {
    cl: Cluster,
    alice: Client,
    far: Vec<(Client, Offer)>,
    producer: ProducerId,
    /// Pipe stream ids and piped SSRCs from the origin's `Subscribed`.
    stream_ids: Vec<u64>,
    pipe_ssrcs: Vec<u32>,
}

impl Piped {
    fn new(kind: &str, params: &str, far: &[&str]) -> Self {
        let mut cl = Cluster::new();
        let alice = cl.client(A, "alice", true, 5000, 10);
        let mut clients: Vec<Client> = far
            .iter()
            .enumerate()
            .map(|(i, name)| cl.client(B, name, false, 6000 + i as u16, 50 + 4 * i as u8))
            .collect();
        cl.reset();
        let producer = cl.produce(&alice, kind, params, json!({}));
        let out = cl.take(B);
        let offers: Vec<Offer> = clients.iter().map(|c| one_offer(&out, c)).collect();
        let answers = subscribed(&cl.ctrl[A]);
        assert_eq!(answers.len(), 1, "one Subscribed: {:?}", cl.ctrl[A]);
        let (_, stream_ids, _, pipe_ssrcs) = answers[0].clone();
        let mut far = Vec::new();
        for (c, o) in clients.drain(..).zip(offers) {
            cl.accept(&c, &o);
            far.push((c, o));
        }
        cl.reset();
        Self {
            cl,
            alice,
            far,
            producer,
            stream_ids,
            pipe_ssrcs,
        }
    }

    /// Opus from Alice to Bob on b.
    fn opus() -> Self {
        Self::new("audio", OPUS, &["bob"])
    }

    /// Single-encoding VP8 from Alice to the named peers on b.
    fn video(far: &[&str]) -> Self {
        Self::new("video", &vp8_params(), far)
    }

    /// Alice sends one Opus packet; returns b's outputs.
    fn send_opus(&mut self, seq: u16, payload: &[u8]) -> Vec<Output> {
        let pkt = rtp(OPUS_PT, seq, 960 * u32::from(seq), OPUS_SSRC, payload);
        self.cl.send_rtp(&mut self.alice, &pkt);
        self.cl.take(B)
    }

    /// Alice sends one VP8 packet; returns b's outputs.
    fn send_vp8(&mut self, seq: u16, keyframe: bool, payload: &[u8]) -> Vec<Output> {
        self.cl
            .send_rtp(&mut self.alice, &vp8(seq, keyframe, payload));
        self.cl.take(B)
    }

    /// RTP the first far client received among `out`.
    fn bob_rtp(&mut self, out: &[Output]) -> Vec<Vec<u8>> {
        self.far[0].0.rtp(out)
    }

    /// Alice sends one Opus packet; returns what the first far client received.
    fn opus_to_bob(&mut self, seq: u16, payload: &[u8]) -> Vec<Vec<u8>> {
        let out = self.send_opus(seq, payload);
        self.bob_rtp(&out)
    }

    /// Alice sends one VP8 packet; returns what the first far client received.
    fn vp8_to_bob(&mut self, seq: u16, keyframe: bool, payload: &[u8]) -> Vec<Vec<u8>> {
        let out = self.send_vp8(seq, keyframe, payload);
        self.bob_rtp(&out)
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms are global

#[test]
fn rooms_are_global_across_nodes() {
    let mut cl = Cluster::new();
    let alice = cl.n[A].open("alice");
    cl.pump();
    let r = cl.n[A].join(alice, "Alice", false);
    assert_eq!(r, json!({"peers": []}));
    let bob = cl.n[B].open("bob");
    cl.pump();
    let r = cl.n[B].join(bob, "Bob", false);
    let peers = r["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "the peer on the other node is listed: {r}");
    assert_eq!(peers[0]["id"], "alice");
    assert_eq!(peers[0]["displayName"], "Alice");
    assert_eq!(peers[0]["device"]["flag"], "chrome");
    let to_alice = notifications_for(&cl.take(A), alice);
    assert_eq!(
        to_alice,
        vec![(
            "newPeer",
            json!({"id": "bob", "displayName": "Bob", "device": {"flag": "chrome", "name": "Chrome"}})
        )]
    );
    assert!(
        notifications_for(&cl.take(B), bob).is_empty(),
        "Bob learnt Alice from his join answer"
    );

    // Bob leaves (b's room closes with him): Alice hears it.
    cl.n[B].close(bob);
    assert_eq!(
        notifications_for(&cl.take(A), alice),
        vec![("peerClosed", json!({"peerId": "bob"}))]
    );
    assert_eq!(cl.n[B].w.room_count(), 0);

    // He comes back: listed again, announced once.
    let bob = cl.n[B].open("bob");
    cl.pump();
    let r = cl.n[B].join(bob, "Bob again", false);
    assert_eq!(r["peers"][0]["id"], "alice");
    let to_alice = notifications_for(&cl.take(A), alice);
    assert_eq!(to_alice.len(), 1, "{to_alice:?}");
    assert_eq!(to_alice[0].0, "newPeer");
    assert_eq!(to_alice[0].1["displayName"], "Bob again");

    // A second peer on b: both others are in her join answer, and both hear of her.
    let carol = cl.n[B].open("carol");
    cl.pump();
    let r = cl.n[B].join(carol, "Carol", false);
    let mut ids: Vec<&str> = r["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["alice", "bob"]);
    assert_eq!(methods_for(&cl.take(A), alice), vec!["newPeer"]);
    assert_eq!(methods_for(&cl.take(B), bob), vec!["newPeer"]);

    // Alice leaves: both peers on b hear it.
    cl.n[A].close(alice);
    let out = cl.take(B);
    for s in [bob, carol] {
        assert_eq!(
            notifications_for(&out, s),
            vec![("peerClosed", json!({"peerId": "alice"}))]
        );
    }
    assert_eq!(cl.n[A].w.room_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Remote producers

/// Fields of a far `newConsumer` that must be those of a local one.
const SAME_FIELDS: [&str; 6] = [
    "producerId",
    "peerId",
    "kind",
    "producerPaused",
    "appData",
    "type",
];

#[test]
fn remote_producer_is_offered_as_locally_and_its_media_reaches_the_far_client() {
    let mut cl = Cluster::new();
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let dave = cl.client(A, "dave", false, 5001, 14);
    let mut bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    let app_data = json!({"source": "mic", "share": false, "n": 1});
    let pid = cl.produce(&alice, "audio", OPUS, app_data.clone());

    let local = one_offer(&cl.take(A), &dave);
    let far = one_offer(&cl.take(B), &bob);
    assert_eq!(far.data["producerId"], pid.as_str());
    assert_eq!(far.data["peerId"], "alice");
    assert_eq!(far.data["kind"], "audio");
    assert_eq!(far.data["producerPaused"], false);
    assert_eq!(far.data["appData"], app_data);
    assert_eq!(far.data["type"], "simple");
    for f in SAME_FIELDS {
        assert_eq!(far.data[f], local.data[f], "{f}");
    }
    assert_eq!(
        far.data["rtpParameters"]["codecs"],
        local.data["rtpParameters"]["codecs"]
    );

    // b subscribed once to a, a answered with one stream.
    assert_eq!(
        subscribes(&cl.ctrl[B]),
        vec![(RoomId::from(ROOM), pid.clone())]
    );
    let answers = subscribed(&cl.ctrl[A]);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].0, pid);
    assert_eq!(answers[0].1.len(), 1);
    assert!(!answers[0].2, "not paused");
    let sid = answers[0].1[0];

    // Not accepted yet: piped (the subscription is up) but not delivered.
    cl.send_rtp(
        &mut alice,
        &rtp(OPUS_PT, 1, 960, OPUS_SSRC, b"before accept"),
    );
    assert!(bob.rtp(&cl.take(B)).is_empty());

    cl.accept(&bob, &far);
    cl.reset();
    let mut last = None;
    for seq in 2..5u16 {
        let payload = format!("opus frame {seq}");
        cl.send_rtp(
            &mut alice,
            &rtp(
                OPUS_PT,
                seq,
                960 * u32::from(seq),
                OPUS_SSRC,
                payload.as_bytes(),
            ),
        );
        let got = bob.rtp(&cl.take(B));
        assert_eq!(got.len(), 1, "packet {seq} reaches Bob once");
        let v = RtpView::parse(&got[0][..]).expect("RTP");
        assert_eq!(v.ssrc(), far.ssrc());
        assert_eq!(v.payload_type(), far.pt());
        assert_eq!(v.payload(), payload.as_bytes());
        if let Some(prev) = last {
            assert_eq!(v.sequence_number(), u16::wrapping_add(prev, 1));
        }
        last = Some(v.sequence_number());
    }
    let piped = rtp_datagrams(&cl.dgrams[A]);
    assert_eq!(piped.len(), 3);
    assert!(piped.iter().all(|(s, _)| *s == sid));
    assert_eq!(cl.counters(A).pipe_rtp_sent.load(Relaxed), 4);
    assert_eq!(cl.counters(B).pipe_rtp_received.load(Relaxed), 4);
    assert_eq!(cl.counters(B).rtp_sent.load(Relaxed), 3);
}

#[test]
fn remote_simulcast_producer_is_offered_as_locally_and_every_encoding_is_piped() {
    let mut cl = Cluster::new();
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let dave = cl.client(A, "dave", false, 5001, 14);
    let mut bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    let app_data = json!({"source": "webcam"});
    let pid = cl.produce(&alice, "video", VP8_SIMULCAST, app_data.clone());
    let local = one_offer(&cl.take(A), &dave);
    let far = one_offer(&cl.take(B), &bob);
    assert_eq!(far.data["producerId"], pid.as_str());
    assert_eq!(far.data["kind"], "video");
    assert_eq!(far.data["type"], "simulcast");
    assert_eq!(far.data["appData"], app_data);
    for f in SAME_FIELDS {
        assert_eq!(far.data[f], local.data[f], "{f}");
    }
    assert_eq!(
        far.data["rtpParameters"]["encodings"][0]["scalabilityMode"],
        local.data["rtpParameters"]["encodings"][0]["scalabilityMode"]
    );
    let answers = subscribed(&cl.ctrl[A]);
    assert_eq!(answers.len(), 1);
    let stream_ids = answers[0].1.clone();
    let pipe_ssrcs = answers[0].3.clone();
    assert_eq!(stream_ids.len(), 3, "one stream per encoding");
    let mut distinct = stream_ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);

    cl.accept(&bob, &far);
    cl.reset();
    // A keyframe on each rid: each is piped once, on its own stream, with its piped SSRC.
    for rid in 0..3 {
        let seq = 100 + rid as u16;
        cl.send_rtp(
            &mut alice,
            &simulcast(rid, seq, true, format!("rid {rid}").as_bytes()),
        );
        let piped = rtp_datagrams(&std::mem::take(&mut cl.dgrams[A]));
        assert_eq!(piped.len(), 1, "rid {rid} piped once");
        assert_eq!(piped[0].0, stream_ids[rid]);
        let v = RtpView::parse(&piped[0].1[..]).expect("piped RTP");
        assert_eq!(v.ssrc(), pipe_ssrcs[rid]);
        assert_eq!(v.sequence_number(), seq);
        // Bob's simulcast consumer switches up at each keyframe: he gets it on his SSRC.
        let got = bob.rtp(&cl.take(B));
        assert_eq!(got.len(), 1, "rid {rid} keyframe reaches Bob");
        let v = RtpView::parse(&got[0][..]).expect("RTP");
        assert_eq!(v.ssrc(), far.ssrc());
        assert_eq!(v.payload_type(), far.pt());
    }
}

#[test]
fn one_copy_crosses_the_pipe_whatever_the_number_of_far_consumers() {
    let mut p = Piped::new("audio", OPUS, &["bob", "carol", "erin"]);
    assert_eq!(p.stream_ids.len(), 1);
    for seq in 1..=5u16 {
        let out = p.send_opus(seq, b"x");
        assert_eq!(
            rtp_datagrams(&std::mem::take(&mut p.cl.dgrams[A])).len(),
            1,
            "packet {seq}: one datagram to b"
        );
        for (c, o) in &mut p.far {
            let got = c.rtp(&out);
            assert_eq!(got.len(), 1, "packet {seq} reaches each far client once");
            assert_eq!(RtpView::parse(&got[0][..]).expect("RTP").ssrc(), o.ssrc());
        }
    }
    assert_eq!(p.cl.counters(A).pipe_rtp_sent.load(Relaxed), 5);
    assert_eq!(p.cl.counters(B).pipe_rtp_received.load(Relaxed), 5);
    assert_eq!(p.cl.counters(B).rtp_sent.load(Relaxed), 15);
}

#[test]
fn one_subscription_per_producer_for_many_far_consumers() {
    let mut cl = Cluster::new();
    let alice = cl.client(A, "alice", true, 5000, 10);
    let far: Vec<Client> = ["bob", "carol", "erin"]
        .iter()
        .enumerate()
        .map(|(i, n)| cl.client(B, n, false, 6000 + i as u16, 50 + i as u8 * 4))
        .collect();
    cl.reset();
    let audio = cl.produce(&alice, "audio", OPUS, json!({}));
    let video = cl.produce(&alice, "video", VP8_SIMULCAST, json!({}));
    let out = cl.take(B);
    for c in &far {
        assert_eq!(new_consumers_for(&out, c.session).len(), 2);
    }
    let mut subs = subscribes(&cl.ctrl[B]);
    subs.sort();
    let mut want = vec![(RoomId::from(ROOM), audio), (RoomId::from(ROOM), video)];
    want.sort();
    assert_eq!(subs, want, "one Subscribe per producer");
    assert_eq!(subscribed(&cl.ctrl[A]).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Producer state and subscription lifetime

#[test]
fn producer_pause_resume_and_close_reach_far_consumers() {
    let mut p = Piped::opus();
    let alice_session = p.alice.session;
    let cid = p.far[0].1.id.clone();
    let bob_session = p.far[0].0.session;
    assert_eq!(p.opus_to_bob(1, b"x").len(), 1);

    p.cl.n[A].ok(
        alice_session,
        "pauseProducer",
        json!({"producerId": p.producer.as_str()}),
    );
    let out = p.cl.take(B);
    assert_eq!(
        signals_for(&out, bob_session),
        vec![("consumerPaused", json!({"consumerId": cid.as_str()}))]
    );
    p.cl.reset();
    assert!(p.opus_to_bob(2, b"x").is_empty());
    assert!(
        rtp_datagrams(&p.cl.dgrams[A]).is_empty(),
        "nothing piped while paused"
    );

    p.cl.n[A].ok(
        alice_session,
        "resumeProducer",
        json!({"producerId": p.producer.as_str()}),
    );
    let out = p.cl.take(B);
    assert_eq!(
        signals_for(&out, bob_session),
        vec![("consumerResumed", json!({"consumerId": cid.as_str()}))]
    );
    assert_eq!(p.opus_to_bob(3, b"x").len(), 1);

    p.cl.n[A].ok(
        alice_session,
        "closeProducer",
        json!({"producerId": p.producer.as_str()}),
    );
    let out = p.cl.take(B);
    assert_eq!(
        signals_for(&out, bob_session),
        vec![("consumerClosed", json!({"consumerId": cid.as_str()}))],
        "closed once, though both the pipe and the directory said so"
    );
    assert_eq!(
        p.cl.n[B]
            .err(
                bob_session,
                "getConsumerStats",
                json!({"consumerId": cid.as_str()})
            )
            .0,
        404
    );
    p.cl.reset();
    assert!(p.opus_to_bob(4, b"x").is_empty());
    assert!(rtp_datagrams(&p.cl.dgrams[A]).is_empty());
    // Nothing left to unsubscribe from later.
    p.cl.advance(DEFAULT_SUBSCRIPTION_LINGER * 2);
    assert!(unsubscribes(&p.cl.ctrl[B]).is_empty());
}

/// Alice publishes and pauses before anyone on b consumes her producer; Bob then joins on b.
/// Returns the cluster, Bob, his offer and b's outputs since he joined.
fn paused_before_far_join() -> (Cluster, Client, Offer, Vec<Output>) {
    let mut cl = Cluster::new();
    let alice = cl.client(A, "alice", true, 5000, 10);
    let pid = cl.produce(&alice, "audio", OPUS, json!({}));
    cl.n[A].ok(
        alice.session,
        "pauseProducer",
        json!({"producerId": pid.as_str()}),
    );
    let dave = cl.client(A, "dave", false, 5001, 14);
    let local = one_offer(&cl.take(A), &dave);
    assert_eq!(local.data["producerPaused"], true);
    let bob = cl.client(B, "bob", false, 6000, 50);
    let out = cl.take(B);
    let far = one_offer(&out, &bob);
    assert_eq!(far.data["producerId"], pid.as_str());
    (cl, bob, far, out)
}

#[test]
fn producer_paused_before_the_far_peer_joins_ends_up_paused_far_away() {
    let (mut cl, bob, far, out) = paused_before_far_join();
    // Whatever the offer said, the subscription's answer carries the pause.
    let answers = subscribed(&cl.ctrl[A]);
    assert_eq!(answers.len(), 1);
    assert!(answers[0].2, "Subscribed says paused");
    let paused_now = far.data["producerPaused"] == true
        || signals_for(&out, bob.session)
            == vec![("consumerPaused", json!({"consumerId": far.id.as_str()}))];
    assert!(paused_now, "Bob knows the producer is paused");
    cl.accept(&bob, &far);
    assert!(signals_for(&cl.take(B), bob.session).is_empty());
}

#[test]
fn producer_paused_before_the_far_peer_joins_is_offered_paused() {
    let (_cl, bob, far, out) = paused_before_far_join();
    assert_eq!(
        far.data["producerPaused"], true,
        "the far offer says the producer is paused, as the local one does"
    );
    assert!(signal_methods(&out, bob.session).is_empty());
}

#[test]
fn last_far_consumer_gone_unsubscribes_after_the_linger() {
    let mut p = Piped::opus();
    // Carol stays on b (joined, receiving nothing), so the room does not close with Bob.
    let carol = p.cl.n[B].open("carol");
    p.cl.pump();
    p.cl.n[B].join(carol, "Carol", false);
    p.cl.reset();
    assert_eq!(p.opus_to_bob(1, b"x").len(), 1);

    let bob_session = p.far[0].0.session;
    p.cl.n[B].close(bob_session);
    assert_eq!(
        signals_for(&p.cl.take(A), p.alice.session),
        vec![("peerClosed", json!({"peerId": "bob"}))]
    );
    p.cl.reset();
    // Within the linger the subscription stays: still piped.
    p.cl.advance(DEFAULT_SUBSCRIPTION_LINGER - Duration::from_millis(100));
    assert!(unsubscribes(&p.cl.ctrl[B]).is_empty());
    p.send_opus(2, b"x");
    assert_eq!(rtp_datagrams(&p.cl.dgrams[A]).len(), 1);

    p.cl.advance(Duration::from_millis(200));
    assert_eq!(unsubscribes(&p.cl.ctrl[B]), vec![p.producer.clone()]);
    p.cl.reset();
    p.send_opus(3, b"x");
    p.send_opus(4, b"x");
    assert!(
        rtp_datagrams(&p.cl.dgrams[A]).is_empty(),
        "nothing piped after Unsubscribe"
    );

    // A new far consumer subscribes again, and media flows to it.
    let mut frank = p.cl.client(B, "frank", false, 6100, 90);
    let offer = one_offer(&p.cl.take(B), &frank);
    assert_eq!(offer.data["producerId"], p.producer.as_str());
    assert_eq!(
        subscribes(&p.cl.ctrl[B]),
        vec![(RoomId::from(ROOM), p.producer.clone())]
    );
    p.cl.accept(&frank, &offer);
    let out = p.send_opus(5, b"again");
    let got = frank.rtp(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(
        RtpView::parse(&got[0][..]).expect("RTP").payload(),
        b"again"
    );
}

#[test]
fn far_room_reopened_within_the_linger_reuses_the_subscription() {
    let mut p = Piped::opus();
    assert_eq!(p.opus_to_bob(1, b"x").len(), 1);
    // Bob reloads his page: b's room closes with him and opens again.
    let bob_session = p.far[0].0.session;
    p.cl.n[B].close(bob_session);
    assert_eq!(p.cl.n[B].w.room_count(), 0);
    p.cl.reset();
    p.cl.advance(DEFAULT_SUBSCRIPTION_LINGER / 2);
    let mut bob = p.cl.client(B, "bob", false, 6200, 94);
    let offer = one_offer(&p.cl.take(B), &bob);
    assert_eq!(offer.data["producerId"], p.producer.as_str());
    assert!(
        subscribes(&p.cl.ctrl[B]).is_empty(),
        "the lingering subscription is taken up again"
    );
    p.cl.accept(&bob, &offer);
    let out = p.send_opus(2, b"after reload");
    let got = bob.rtp(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(
        RtpView::parse(&got[0][..]).expect("RTP").payload(),
        b"after reload"
    );
    p.cl.advance(DEFAULT_SUBSCRIPTION_LINGER * 2);
    assert!(unsubscribes(&p.cl.ctrl[B]).is_empty(), "still in use");
}

#[test]
fn far_room_closed_for_good_unsubscribes_after_the_linger() {
    let mut p = Piped::opus();
    let bob_session = p.far[0].0.session;
    p.cl.n[B].close(bob_session);
    p.cl.reset();
    p.cl.advance(DEFAULT_SUBSCRIPTION_LINGER + Duration::from_millis(100));
    assert_eq!(unsubscribes(&p.cl.ctrl[B]), vec![p.producer.clone()]);
    p.cl.reset();
    p.send_opus(1, b"x");
    assert!(rtp_datagrams(&p.cl.dgrams[A]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Link failures

#[test]
fn link_down_pauses_far_consumers_and_link_up_within_grace_resumes_them_with_a_keyframe() {
    let mut p = Piped::video(&["bob"]);
    let bob_session = p.far[0].0.session;
    let cid = p.far[0].1.id.clone();
    assert_eq!(p.vp8_to_bob(1, true, b"key").len(), 1);
    p.cl.advance(Duration::from_secs(1));
    p.cl.reset();

    p.cl.link_down();
    let out = p.cl.take(B);
    assert_eq!(
        signals_for(&out, bob_session),
        vec![("consumerPaused", json!({"consumerId": cid.as_str()}))]
    );
    p.cl.reset();
    let out = p.send_vp8(2, false, b"lost");
    assert!(p.bob_rtp(&out).is_empty());
    assert!(
        p.cl.dgrams[A].is_empty(),
        "nothing piped to a node whose link is down"
    );
    // Most of the grace period passes: nothing is closed.
    p.cl.advance(GRACE - Duration::from_secs(1));
    assert!(signals_for(&p.cl.take(B), bob_session).is_empty());
    assert!(signals_for(&p.cl.take(A), p.alice.session).is_empty());
    p.cl.reset();

    p.cl.link_up();
    assert_eq!(
        subscribes(&p.cl.ctrl[B]),
        vec![(RoomId::from(ROOM), p.producer.clone())],
        "re-Subscribe"
    );
    let answers = subscribed(&p.cl.ctrl[A]);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].1, p.stream_ids, "same streams as before");
    assert_eq!(
        signals_for(&p.cl.take(B), bob_session),
        vec![("consumerResumed", json!({"consumerId": cid.as_str()}))]
    );
    let kfr = keyframe_requests(&p.cl.ctrl[B]);
    assert!(!kfr.is_empty(), "b asks a for a keyframe");
    assert!(kfr.iter().all(|(pid, _)| *pid == p.producer));
    let out = p.cl.take(A);
    assert_eq!(
        p.alice.plis(&out),
        vec![VP8_SSRC],
        "a asks its publisher for a keyframe, once"
    );
    let got = p.vp8_to_bob(3, true, b"key again");
    assert_eq!(got.len(), 1, "media flows again");
    assert_eq!(
        RtpView::parse(&got[0][..]).expect("RTP").ssrc(),
        p.far[0].1.ssrc()
    );
}

#[test]
fn relink_asks_the_origin_for_one_keyframe() {
    let mut p = Piped::video(&["bob"]);
    assert_eq!(p.vp8_to_bob(1, true, b"key").len(), 1);
    p.cl.advance(Duration::from_secs(1));
    p.cl.link_down();
    p.cl.advance(Duration::from_secs(1));
    p.cl.reset();
    p.cl.link_up();
    let kfr = keyframe_requests(&p.cl.ctrl[B]);
    assert_eq!(
        kfr.len(),
        1,
        "one KeyFrameRequest for the re-established subscription: {kfr:?}"
    );
    assert_eq!(
        kfr[0].0,
        p.producer.clone(),
        "one KeyFrameRequest for the re-established subscription"
    );
}

#[test]
fn link_down_past_grace_closes_far_consumers_and_peers_which_return_with_the_link() {
    let mut p = Piped::video(&["bob"]);
    let bob_session = p.far[0].0.session;
    let cid = p.far[0].1.id.clone();
    assert_eq!(p.vp8_to_bob(1, true, b"key").len(), 1);
    p.cl.reset();

    p.cl.link_down();
    assert_eq!(
        signal_methods(&p.cl.take(B), bob_session),
        vec!["consumerPaused"]
    );
    p.cl.advance(GRACE + Duration::from_millis(100));
    let out = p.cl.take(B);
    assert_eq!(
        signals_for(&out, bob_session),
        vec![
            ("consumerClosed", json!({"consumerId": cid.as_str()})),
            ("peerClosed", json!({"peerId": "alice"}))
        ]
    );
    assert_eq!(
        signals_for(&p.cl.take(A), p.alice.session),
        vec![("peerClosed", json!({"peerId": "bob"}))]
    );
    // Nothing more while the link stays down.
    p.cl.advance(GRACE);
    assert!(signals_for(&p.cl.take(B), bob_session).is_empty());
    p.cl.reset();

    p.cl.link_up();
    let out = p.cl.take(B);
    let to_bob = signals_for(&out, bob_session);
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert_eq!(to_bob[0].0, "newPeer");
    assert_eq!(to_bob[0].1["id"], "alice");
    let offer = one_offer(&out, &p.far[0].0);
    assert_ne!(offer.id, cid, "a new consumer");
    assert_eq!(offer.data["producerId"], p.producer.as_str());
    assert_eq!(
        signal_methods(&p.cl.take(A), p.alice.session),
        vec!["newPeer"]
    );
    let (bob, _) = p.far.remove(0);
    p.cl.accept(&bob, &offer);
    p.far.insert(0, (bob, offer));
    p.cl.advance(KEYFRAME_REQUEST_THROTTLE);
    let got = p.vp8_to_bob(2, true, b"back");
    assert_eq!(got.len(), 1, "media flows to the new consumer");
    assert_eq!(
        RtpView::parse(&got[0][..]).expect("RTP").ssrc(),
        p.far[0].1.ssrc()
    );
}

// ---------------------------------------------------------------------------------------------
// Feedback across the pipe

#[test]
fn lost_piped_packet_is_nacked_over_the_pipe_and_resent_hop_by_hop() {
    let mut p = Piped::video(&["bob"]);
    for seq in 1..=3u16 {
        assert_eq!(p.vp8_to_bob(seq, seq == 1, b"frame").len(), 1);
    }
    // The pipe loses packet 4.
    p.cl.deliver_dgram = Some(Box::new(|from, data| {
        let dg = parse_datagram(data).expect("valid");
        let lost = from == A
            && dg.kind == DatagramKind::Rtp
            && RtpView::parse(dg.packet).is_ok_and(|v| v.sequence_number() == 4);
        !lost
    }));
    assert!(p.vp8_to_bob(4, false, b"frame 4").is_empty());
    assert_eq!(p.vp8_to_bob(5, false, b"frame 5").len(), 1);
    // From now on the resend gets through.
    p.cl.deliver_dgram = None;
    p.cl.reset();
    p.cl.advance(Duration::from_millis(30));
    let nacks = nacked(&p.cl.dgrams[B]);
    assert_eq!(
        nacks,
        vec![(p.stream_ids[0], p.pipe_ssrcs[0], 4)],
        "b NACKs packet 4 on its pipe stream"
    );
    assert_eq!(p.cl.counters(A).pipe_rtp_retransmitted.load(Relaxed), 1);
    // Counted on /metrics: the NACK out of b and into a, and pipe traffic both ways.
    let (a, b) = (p.cl.counters(A), p.cl.counters(B));
    assert_eq!(
        b.media
            .pipe_feedback_total(PipeFeedback::Nack, Direction::Out),
        1
    );
    assert_eq!(
        a.media
            .pipe_feedback_total(PipeFeedback::Nack, Direction::In),
        1
    );
    for (c, d) in [(&a, Direction::Out), (&b, Direction::In)] {
        assert!(c.media.traffic.sizes(Kind::Pipe, d).count() >= 5);
    }
    let resent = rtp_datagrams(&p.cl.dgrams[A]);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].0, p.stream_ids[0]);
    let out = p.cl.take(B);
    let got = p.bob_rtp(&out);
    assert_eq!(got.len(), 1, "b delivers the recovered packet to Bob");
    let v = RtpView::parse(&got[0][..]).expect("RTP");
    assert_eq!(v.ssrc(), p.far[0].1.ssrc());
    assert!(v.payload().ends_with(b"frame 4"));
    // Recovered: no further NACK.
    p.cl.reset();
    p.cl.advance(Duration::from_millis(500));
    assert!(nacked(&p.cl.dgrams[B]).is_empty());
    assert_eq!(p.cl.counters(A).pipe_rtp_retransmitted.load(Relaxed), 1);
}

#[test]
fn far_keyframe_requests_are_coalesced_and_the_origin_throttles_its_pli() {
    let mut p = Piped::video(&["bob", "carol", "erin"]);
    assert_eq!(p.vp8_to_bob(1, true, b"key").len(), 1);
    // Let the keyframe requests of the accepts age out of their throttle windows.
    p.cl.advance(KEYFRAME_REQUEST_THROTTLE * 2);
    p.cl.reset();
    let (ca, cb) = (p.cl.counters(A), p.cl.counters(B));
    let kfr = |c: &WorkerCounters, d| {
        c.media
            .pipe_feedback_total(PipeFeedback::KeyFrameRequest, d)
    };
    let b_out = kfr(&cb, Direction::Out);

    let start = p.cl.now();
    for round in 0..2 {
        for (c, o) in &mut p.far {
            let mut pli = Vec::new();
            rtcp_core::write_pli(&mut pli, 0xB0B, o.ssrc());
            p.cl.send_rtcp(c, &pli);
            p.cl.send_rtcp(c, &pli);
        }
        if round == 0 {
            p.cl.advance(Duration::from_millis(100));
        }
    }
    assert_eq!(
        keyframe_requests(&p.cl.ctrl[B]).len(),
        1,
        "six PLIs in the window: one KeyFrameRequest to a"
    );
    let out = p.cl.take(A);
    assert_eq!(p.alice.plis(&out), vec![VP8_SSRC]);

    // When the window ends, the requests held meanwhile go out as one.
    p.cl.advance(KEYFRAME_REQUEST_THROTTLE);
    assert!(p.cl.now() < start + KEYFRAME_REQUEST_THROTTLE * 2);
    assert_eq!(keyframe_requests(&p.cl.ctrl[B]).len(), 2);
    let out = p.cl.take(A);
    assert_eq!(p.alice.plis(&out), vec![VP8_SSRC]);
    p.cl.advance(KEYFRAME_REQUEST_THROTTLE * 2);
    assert_eq!(keyframe_requests(&p.cl.ctrl[B]).len(), 2, "nothing more");
    assert!(p.alice.plis(&p.cl.take(A)).is_empty());
    assert_eq!(kfr(&cb, Direction::Out), b_out + 2);

    // The origin throttles too: a burst of KeyFrameRequests from b gives one PLI.
    p.cl.reset();
    let a_in = kfr(&ca, Direction::In);
    for _ in 0..5 {
        p.cl.inject_control(
            A,
            NODE_IDS[B],
            ControlMessage::KeyFrameRequest {
                producer_id: p.producer.clone(),
                encoding: None,
            },
        );
        p.cl.n[A].now += Duration::from_millis(20);
        p.cl.n[B].now += Duration::from_millis(20);
    }
    let out = p.cl.take(A);
    assert_eq!(p.alice.plis(&out), vec![VP8_SSRC]);
    assert_eq!(
        kfr(&ca, Direction::In),
        a_in + 5,
        "every request is counted in"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn bad_datagrams_are_counted_and_change_nothing() {
    let mut p = Piped::opus();
    assert_eq!(p.opus_to_bob(1, b"x").len(), 1);
    let sid = p.stream_ids[0];
    let a = NODE_IDS[A];
    let b = NODE_IDS[B];
    let dg = |kind, sid, packet: &[u8]| {
        let mut v = Vec::new();
        write_datagram(kind, sid, packet, &mut v).expect("datagram");
        v
    };
    let real = rtp(OPUS_PT, 2, 1920, p.pipe_ssrcs[0], b"forged");
    let malformed: Vec<Vec<u8>> = vec![
        vec![],                                 // empty
        vec![0x00, sid as u8, 0x80, 0],         // version 0
        vec![0x1F, sid as u8, 0x80, 0],         // unknown kind
        vec![0x10, 0x40],                       // truncated stream id
        vec![0x10, sid as u8],                  // no packet
        dg(DatagramKind::Rtp, sid, &[1, 2, 3]), // not RTP
        {
            let mut v = vec![0x10, sid as u8];
            v.extend(std::iter::repeat_n(0x80, 1401)); // too long
            v
        },
    ];
    for d in &malformed {
        p.cl.inject_datagram(B, a, d);
    }
    // A stream nobody subscribed, and a real stream id from the wrong node.
    p.cl.inject_datagram(B, a, &dg(DatagramKind::Rtp, 999, &real));
    p.cl.inject_datagram(B, STRANGER, &dg(DatagramKind::Rtp, sid, &real));
    // Kinds the far side ignores.
    p.cl.inject_datagram(
        B,
        a,
        &dg(DatagramKind::RtcpFromOrigin, sid, &[0x80, 200, 0, 0]),
    );
    p.cl.inject_datagram(B, a, &dg(DatagramKind::Probe, sid, &[0; 32]));
    // Origin side: far RTCP about an unknown stream, unparseable RTCP, a stranger's NACK.
    let mut nack = Vec::new();
    rtcp_core::write_nack(&mut nack, 1, p.pipe_ssrcs[0], &[1]);
    p.cl.inject_datagram(A, b, &dg(DatagramKind::RtcpFromFar, 999, &nack));
    p.cl.inject_datagram(A, b, &dg(DatagramKind::RtcpFromFar, sid, &[0xFF; 7]));
    p.cl.inject_datagram(A, STRANGER, &dg(DatagramKind::RtcpFromFar, sid, &nack));

    let (ca, cb) = (p.cl.counters(A), p.cl.counters(B));
    assert_eq!(cb.pipe_malformed.load(Relaxed), malformed.len() as u64);
    assert_eq!(cb.pipe_unknown_stream.load(Relaxed), 2);
    assert_eq!(
        cb.pipe_rtp_received.load(Relaxed),
        1,
        "only the real packet"
    );
    assert_eq!(ca.pipe_unknown_stream.load(Relaxed), 1);
    assert_eq!(ca.pipe_malformed.load(Relaxed), 1);
    assert_eq!(ca.pipe_rtp_retransmitted.load(Relaxed), 0, "nothing resent");
    assert!(p.cl.stray.is_empty(), "nothing sent to the stranger");
    let out = p.cl.take(B);
    assert!(p.bob_rtp(&out).is_empty(), "nothing forged reached Bob");
    assert!(signal_methods(&out, p.far[0].0.session).is_empty());

    // Media keeps flowing.
    let got = p.opus_to_bob(3, b"still here");
    assert_eq!(got.len(), 1);
    assert_eq!(
        RtpView::parse(&got[0][..]).expect("RTP").payload(),
        b"still here"
    );
}

#[test]
fn bad_control_messages_are_refused_and_change_nothing() {
    let mut p = Piped::opus();
    assert_eq!(p.opus_to_bob(1, b"x").len(), 1);
    let a = NODE_IDS[A];
    let b = NODE_IDS[B];
    let bob_session = p.far[0].0.session;
    p.cl.reset();

    // Origin side: Subscribe to an unknown room, to an unknown producer.
    p.cl.inject_control(
        A,
        b,
        ControlMessage::Subscribe {
            request_id: 1000,
            room_id: RoomId::from("nowhere"),
            producer_id: p.producer.clone(),
        },
    );
    p.cl.inject_control(
        A,
        b,
        ControlMessage::Subscribe {
            request_id: 1001,
            room_id: RoomId::from(ROOM),
            producer_id: ProducerId::from("no-such-producer"),
        },
    );
    let failed: Vec<u64> = p.cl.ctrl[A]
        .iter()
        .filter_map(|m| match m {
            ControlMessage::SubscribeFailed { request_id, .. } => Some(*request_id),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![1000, 1001]);
    // Far side: b refuses to pipe its image of a's producer onward.
    p.cl.inject_control(
        B,
        a,
        ControlMessage::Subscribe {
            request_id: 7,
            room_id: RoomId::from(ROOM),
            producer_id: p.producer.clone(),
        },
    );
    assert!(matches!(
        p.cl.ctrl[B].last(),
        Some(ControlMessage::SubscribeFailed { request_id: 7, .. })
    ));
    // A Subscribed with the wrong number of stream ids (and no matching request).
    p.cl.inject_control(
        B,
        a,
        ControlMessage::Subscribed {
            request_id: 4242,
            producer_id: p.producer.clone(),
            stream_ids: vec![1, 2],
            kind: crate::router::rtp_parameters::MediaKind::Audio,
            rtp_parameters: Default::default(),
            paused: true,
            scores: vec![10, 10],
            path: Vec::new(),
        },
    );
    // Answers to nothing, and messages about producers that do not exist.
    p.cl.inject_control(
        B,
        a,
        ControlMessage::SubscribeFailed {
            request_id: 4243,
            producer_id: p.producer.clone(),
            reason: "stale".into(),
        },
    );
    for msg in [
        ControlMessage::ProducerPaused {
            producer_id: "nope".into(),
        },
        ControlMessage::ProducerClosed {
            producer_id: "nope".into(),
        },
        ControlMessage::ProducerScore {
            producer_id: p.producer.clone(),
            scores: vec![200; 1000],
        },
        ControlMessage::PeerLeft {
            room_id: ROOM.into(),
            peer_id: "nobody".into(),
        },
    ] {
        p.cl.inject_control(B, a, msg);
    }
    p.cl.inject_control(
        A,
        b,
        ControlMessage::Unsubscribe {
            producer_id: "nope".into(),
        },
    );

    let (ca, cb) = (p.cl.counters(A), p.cl.counters(B));
    assert_eq!(ca.pipe_control_refused.load(Relaxed), 2);
    assert_eq!(cb.pipe_control_refused.load(Relaxed), 2);
    let out = p.cl.take(B);
    assert!(
        signal_methods(&out, bob_session).is_empty(),
        "Bob hears nothing: {:?}",
        signals_for(&out, bob_session)
    );
    assert!(p.cl.stray.is_empty());
    assert!(unsubscribes(&p.cl.ctrl[B]).is_empty());

    // Media keeps flowing, and the subscription is intact.
    assert_eq!(p.opus_to_bob(2, b"x").len(), 1);
    p.cl.advance(Duration::from_secs(3));
    assert!(unsubscribes(&p.cl.ctrl[B]).is_empty());
    assert_eq!(p.opus_to_bob(3, b"x").len(), 1);
}

#[test]
fn directory_messages_from_an_unlinked_node_change_nothing() {
    let mut p = Piped::opus();
    let bob_session = p.far[0].0.session;
    p.cl.reset();
    let producer = crate::pipe::wire::ProducerInfo {
        producer_id: "ghost-producer".into(),
        kind: crate::router::rtp_parameters::MediaKind::Audio,
        paused: false,
        rtp_parameters: Default::default(),
        app_data: "{}".into(),
    };
    let peer = PeerInfo {
        peer_id: "ghost".into(),
        display_name: "Ghost".into(),
        device: "{}".into(),
        producers: vec![producer.clone()],
    };
    for msg in [
        ControlMessage::RoomPeers {
            room_id: ROOM.into(),
            peers: vec![peer.clone()],
        },
        ControlMessage::PeerJoined {
            room_id: ROOM.into(),
            peer,
        },
        ControlMessage::ProducerAdded {
            room_id: ROOM.into(),
            peer_id: "alice".into(),
            producer,
        },
        ControlMessage::PeerLeft {
            room_id: ROOM.into(),
            peer_id: "alice".into(),
        },
        ControlMessage::ProducerRemoved {
            room_id: ROOM.into(),
            peer_id: "alice".into(),
            producer_id: p.producer.clone(),
        },
        ControlMessage::ProducerClosed {
            producer_id: p.producer.clone(),
        },
        ControlMessage::ProducerPaused {
            producer_id: p.producer.clone(),
        },
    ] {
        p.cl.inject_control(B, STRANGER, msg);
    }
    let out = p.cl.take(B);
    assert!(
        signals_for(&out, bob_session).is_empty(),
        "{:?}",
        signals_for(&out, bob_session)
    );
    assert!(new_consumers_for(&out, bob_session).is_empty());
    assert!(p.cl.stray.is_empty());
    assert_eq!(p.opus_to_bob(1, b"x").len(), 1);
}

#[test]
fn subscribe_from_an_unlinked_node_is_refused() {
    let mut p = Piped::opus();
    p.cl.reset();
    let before = p.cl.counters(A).pipe_control_refused.load(Relaxed);
    p.cl.inject_control(
        A,
        STRANGER,
        ControlMessage::Subscribe {
            request_id: 1,
            room_id: ROOM.into(),
            producer_id: p.producer.clone(),
        },
    );
    p.send_opus(1, b"x");
    let to_stranger: Vec<&str> =
        p.cl.stray
            .iter()
            .map(|(_, o)| match o {
                Output::PipeControl { msg, .. } => msg.type_name(),
                _ => "datagram",
            })
            .collect();
    assert!(
        to_stranger.is_empty(),
        "sent to an unlinked node: {to_stranger:?}"
    );
    assert_eq!(
        p.cl.counters(A).pipe_control_refused.load(Relaxed),
        before + 1
    );
}

#[test]
fn refused_subscribed_answer_stops_the_origin_piping() {
    let mut cl = Cluster::new();
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    // The origin's answer is corrupted on the way: one stream id too many.
    cl.tamper = Some(Box::new(|from, msg| match msg {
        ControlMessage::Subscribed {
            request_id,
            producer_id,
            mut stream_ids,
            kind,
            rtp_parameters,
            paused,
            scores,
            path,
        } if from == A => {
            stream_ids.push(77);
            Some(ControlMessage::Subscribed {
                request_id,
                producer_id,
                stream_ids,
                kind,
                rtp_parameters,
                paused,
                scores,
                path,
            })
        }
        m => Some(m),
    }));
    cl.produce(&alice, "audio", OPUS, json!({}));
    let out = cl.take(B);
    let offer = one_offer(&out, &bob);
    assert_eq!(cl.counters(B).pipe_control_refused.load(Relaxed), 1);
    assert_eq!(
        signals_for(&out, bob.session),
        vec![("consumerClosed", json!({"consumerId": offer.id.as_str()}))],
        "the far consumer cannot be fed: closed"
    );
    cl.reset();
    cl.send_rtp(&mut alice, &rtp(OPUS_PT, 1, 960, OPUS_SSRC, b"x"));
    assert!(
        rtp_datagrams(&cl.dgrams[A]).is_empty(),
        "the origin still pipes to b ({} unknown-stream datagrams there)",
        cl.counters(B).pipe_unknown_stream.load(Relaxed)
    );
}

#[test]
fn subscribed_whose_path_already_holds_the_sender_is_refused_as_a_loop() {
    let mut cl = Cluster::new();
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    let a = cl.ids[A].clone();
    // The answer claims the stream already passed through its sender.
    cl.tamper = Some(Box::new(move |from, msg| match msg {
        ControlMessage::Subscribed {
            request_id,
            producer_id,
            stream_ids,
            kind,
            rtp_parameters,
            paused,
            scores,
            ..
        } if from == A => Some(ControlMessage::Subscribed {
            request_id,
            producer_id,
            stream_ids,
            kind,
            rtp_parameters,
            paused,
            scores,
            path: vec![a.clone()],
        }),
        m => Some(m),
    }));
    cl.produce(&alice, "audio", OPUS, json!({}));
    let out = cl.take(B);
    let offer = one_offer(&out, &bob);
    assert_eq!(cl.counters(B).pipe_control_refused.load(Relaxed), 1);
    assert_eq!(
        signals_for(&out, bob.session),
        vec![("consumerClosed", json!({"consumerId": offer.id.as_str()}))],
        "a looped stream is not consumed"
    );
    cl.reset();
    cl.send_rtp(&mut alice, &rtp(OPUS_PT, 1, 960, OPUS_SSRC, b"x"));
    assert!(
        rtp_datagrams(&cl.dgrams[A]).is_empty(),
        "the origin was told to stop piping"
    );
}

#[test]
fn subscribed_with_stream_ids_beyond_u32_is_refused() {
    let mut cl = Cluster::new();
    let mut alice = cl.client(A, "alice", true, 5000, 10);
    let mut bob = cl.client(B, "bob", false, 6000, 50);
    cl.reset();
    cl.tamper = Some(Box::new(|from, msg| match msg {
        ControlMessage::Subscribed {
            request_id,
            producer_id,
            kind,
            rtp_parameters,
            paused,
            scores,
            ..
        } if from == A => Some(ControlMessage::Subscribed {
            request_id,
            producer_id,
            stream_ids: vec![1 << 40],
            kind,
            rtp_parameters,
            paused,
            scores,
            path: Vec::new(),
        }),
        m => Some(m),
    }));
    cl.produce(&alice, "audio", OPUS, json!({}));
    let first = cl.take(B);
    let offer = one_offer(&first, &bob);
    cl.accept(&bob, &offer);
    cl.send_rtp(&mut alice, &rtp(OPUS_PT, 1, 960, OPUS_SSRC, b"x"));
    // Well past the grace period.
    cl.advance(GRACE * 2);
    let out = cl.take(B);
    let fed = !bob.rtp(&out).is_empty();
    let refused = cl.counters(B).pipe_control_refused.load(Relaxed) == 1;
    // The answer comes back while the producer is offered: the close may be in either batch.
    let closed = signal_methods(&first, bob.session).contains(&"consumerClosed")
        || signal_methods(&out, bob.session).contains(&"consumerClosed");
    assert!(
        fed || (refused && closed),
        "the far consumer is neither fed nor closed (refused counter: {})",
        cl.counters(B).pipe_control_refused.load(Relaxed)
    );
}

mod relay;
mod report;
mod routing;
mod shed;
