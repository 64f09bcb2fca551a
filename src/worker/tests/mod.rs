//! Behaviour tests of the worker core, driven sans-IO with virtual time: signaling requests in,
//! [`Output`]s drained, packets built by hand (STUN checks, SRTP-protected RTP) and fed to
//! [`Worker::handle_packet`]. No sockets, no DTLS handshake: its outcome is injected with
//! [`Worker::handle_dtls`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

use super::{Output, RequestFailure, Worker, WorkerConfig};
use crate::edge::dtls::{DtlsEvent, DtlsRole, Fingerprint, SrtpKeys};
use crate::edge::ice::{Protocol, Tuple};
use crate::edge::stun::{self, BindingRequest, Class, IntegrityKey, StunMessage};
use crate::ids::{ConsumerId, TransportId};
use crate::router::seq::RtpView;
use crate::signaling::protoo::ClientRequest;
use crate::signaling::server::{SessionId, ToPeer};

const CHROME_CAPS: &str = include_str!("../../../tests/fixtures/chrome_rtp_capabilities.json");
const OPUS: &str = include_str!("../../../tests/fixtures/chrome_producer_opus.json");
const VP8_SIMULCAST: &str =
    include_str!("../../../tests/fixtures/chrome_producer_vp8_simulcast.json");
/// SSRC of the Opus fixture's single encoding.
const OPUS_SSRC: u32 = 2_731_590_123;
/// Payload type of the Opus fixture.
const OPUS_PT: u8 = 111;

mod answers;
mod feedback;
mod grants;
mod pipes;

const CONSENT: Duration = Duration::from_secs(5);
const ROOM: &str = "room";

fn fixture(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture is JSON")
}

fn udp(port: u16) -> Tuple {
    Tuple {
        protocol: Protocol::Udp,
        remote: SocketAddr::from(([192, 0, 2, 1], port)),
    }
}

fn tcp(port: u16) -> Tuple {
    Tuple {
        protocol: Protocol::Tcp,
        remote: SocketAddr::from(([192, 0, 2, 1], port)),
    }
}

/// The server's (fake) certificate fingerprint.
fn server_fingerprints() -> Vec<Fingerprint> {
    vec![Fingerprint {
        algorithm: "sha-256".into(),
        value: vec!["AB"; 32].join(":"),
    }]
}

/// A client's `dtlsParameters` with the given role.
fn client_dtls(role: &str) -> Value {
    json!({"role": role, "fingerprints": [{"algorithm": "sha-256", "value": vec!["01"; 32].join(":")}]})
}

/// Distinct SRTP keys per transport: `local` is what the worker encrypts with.
fn srtp_keys(seed: u8) -> SrtpKeys {
    SrtpKeys {
        profile: ProtectionProfile::AeadAes128Gcm,
        local_key: vec![seed; 16],
        local_salt: vec![seed.wrapping_add(1); 12],
        remote_key: vec![seed.wrapping_add(2); 16],
        remote_salt: vec![seed.wrapping_add(3); 12],
    }
}

/// The client's encrypting context: the worker's *remote* key.
fn client_out(k: &SrtpKeys) -> Context {
    Context::new(&k.remote_key, &k.remote_salt, k.profile, None, None).expect("srtp context")
}

/// The client's decrypting context: the worker's *local* key.
fn client_in(k: &SrtpKeys) -> Context {
    Context::new(&k.local_key, &k.local_salt, k.profile, None, None).expect("srtp context")
}

/// A plain RTP packet without header extensions.
fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7F];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Something that demux classifies as DTLS (a handshake record header plus padding).
fn dtls_record() -> Vec<u8> {
    let mut r = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    r.resize(40, 0);
    r
}

/// A Binding request as a controlling browser sends it.
fn binding_request(server_ufrag: &str, key: &str, use_candidate: bool, txid: u8) -> Vec<u8> {
    let username = format!("{server_ufrag}:clientUfrag");
    let mut out = Vec::new();
    stun::write_binding_request(
        &mut out,
        &BindingRequest {
            transaction_id: [txid; 12],
            username: &username,
            priority: 1_845_501_695,
            tie_breaker: 0x1234_5678_9ABC_DEF0,
            use_candidate,
        },
        &IntegrityKey::new(key.as_bytes()),
    )
    .expect("binding request");
    out
}

fn ice_ufrag(t: &Value) -> String {
    t["iceParameters"]["usernameFragment"]
        .as_str()
        .expect("ufrag")
        .to_owned()
}

fn ice_password(t: &Value) -> String {
    t["iceParameters"]["password"]
        .as_str()
        .expect("password")
        .to_owned()
}

fn tid(t: &Value) -> String {
    t["id"].as_str().expect("transport id").to_owned()
}

/// Notifications (method, data) sent to `session`.
fn notifications_for(outputs: &[Output], session: SessionId) -> Vec<(&'static str, Value)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToPeer {
                session: s,
                msg: ToPeer::Notify { method, data },
            } if *s == session => Some((*method, data.clone())),
            _ => None,
        })
        .collect()
}

/// Methods only, in order.
fn methods_for(outputs: &[Output], session: SessionId) -> Vec<&'static str> {
    notifications_for(outputs, session)
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

/// `newConsumer` requests sent to `session`.
fn new_consumers_for(outputs: &[Output], session: SessionId) -> Vec<(ConsumerId, Value)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToPeer {
                session: s,
                msg: ToPeer::NewConsumer { consumer, data },
            } if *s == session => Some((consumer.clone(), data.clone())),
            _ => None,
        })
        .collect()
}

fn closes_for(outputs: &[Output], session: SessionId) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::ToPeer { session: s, msg: ToPeer::Close } if *s == session))
        .count()
}

fn transmits_to(outputs: &[Output], tuple: Tuple) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit { tuple: t, data } if *t == tuple => Some(data.to_vec()),
            _ => None,
        })
        .collect()
}

fn stun_dropped(h: &Harness) -> u64 {
    h.w.counters()
        .stun_dropped
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn dtls_feeds(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::DtlsFeed { .. }))
        .count()
}

fn dtls_stops(outputs: &[Output], id: &str) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, Output::DtlsStop { transport } if transport.as_str() == id))
        .count()
}

/// A worker, a virtual clock, and session numbering.
struct Harness {
    w: Worker,
    now: Instant,
    next_session: SessionId,
}

impl Harness {
    fn new() -> Self {
        Self::with_max_peers(16)
    }

    fn with_max_peers(max_peers_per_room: usize) -> Self {
        let cfg = WorkerConfig {
            announced_address: "203.0.113.7".into(),
            rtc_port: 40000,
            consent_timeout: CONSENT,
            max_peers_per_room,
        };
        Self {
            w: Worker::new(cfg, server_fingerprints(), 7),
            now: Instant::now(),
            next_session: 1,
        }
    }

    /// Opens a signaling session for `peer` in the test room.
    fn open(&mut self, peer: &str) -> SessionId {
        self.open_in(ROOM, peer)
    }

    fn open_in(&mut self, room: &str, peer: &str) -> SessionId {
        let s = self.next_session;
        self.next_session += 1;
        self.w
            .handle_session_open(self.now, s, room.into(), crate::ids::PeerId::from(peer));
        s
    }

    fn close(&mut self, session: SessionId) {
        self.w.handle_session_closed(self.now, session);
    }

    fn request(
        &mut self,
        session: SessionId,
        method: &str,
        data: Value,
    ) -> Result<Value, RequestFailure> {
        let req = ClientRequest::parse(method, data).expect("request types");
        self.w.handle_request(self.now, session, req)
    }

    fn ok(&mut self, session: SessionId, method: &str, data: Value) -> Value {
        self.request(session, method, data)
            .unwrap_or_else(|e| panic!("{method} failed: {e:?}"))
    }

    fn err(&mut self, session: SessionId, method: &str, data: Value) -> RequestFailure {
        match self.request(session, method, data) {
            Ok(v) => panic!("{method} succeeded unexpectedly: {v}"),
            Err(e) => e,
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.w.poll_output()).collect()
    }

    /// `join` with (or without) Chrome's RTP capabilities.
    fn join(&mut self, session: SessionId, name: &str, caps: bool) -> Value {
        let mut data = json!({"displayName": name, "device": {"flag": "chrome", "name": "Chrome"}});
        if caps {
            data["rtpCapabilities"] = fixture(CHROME_CAPS);
        }
        self.ok(session, "join", data)
    }

    fn transport(&mut self, session: SessionId, producing: bool, consuming: bool) -> Value {
        self.ok(
            session,
            "createWebRtcTransport",
            json!({"forceTcp": false, "producing": producing, "consuming": consuming}),
        )
    }

    fn produce(&mut self, session: SessionId, transport: &str, kind: &str, params: &str) -> String {
        let v = self.ok(
            session,
            "produce",
            json!({"transportId": transport, "kind": kind, "rtpParameters": fixture(params), "appData": {"share": false}}),
        );
        v["id"].as_str().expect("producer id").to_owned()
    }

    /// Sends a nominating check for `t` from `tuple`; returns the outputs it caused.
    fn ice(&mut self, t: &Value, tuple: Tuple) -> Vec<Output> {
        let req = binding_request(&ice_ufrag(t), &ice_password(t), true, 1);
        self.w.handle_packet(self.now, tuple, &req);
        self.drain()
    }

    /// ICE from `tuple`, connect, and a completed DTLS handshake with `keys`.
    fn connect_media(&mut self, session: SessionId, t: &Value, tuple: Tuple, keys: &SrtpKeys) {
        self.ice(t, tuple);
        self.ok(
            session,
            "connectWebRtcTransport",
            json!({"transportId": tid(t), "dtlsParameters": client_dtls("client")}),
        );
        self.w.handle_dtls(
            self.now,
            &TransportId::from(tid(t)),
            DtlsEvent::Connected(keys.clone()),
        );
    }

    /// Runs every timer due up to `until`, as the glue would, then sets the clock there.
    fn advance_to(&mut self, until: Instant) {
        let mut steps = 0;
        while let Some(t) = self.w.poll_timeout() {
            if t > until {
                break;
            }
            steps += 1;
            assert!(steps < 100_000, "timers do not advance (stuck at {t:?})");
            self.now = t.max(self.now);
            self.w.handle_timeout(self.now);
            if t <= self.now && self.w.poll_timeout() == Some(t) {
                // A timer that stays due after running would busy-loop the glue.
                panic!("timer due at {t:?} did not move after handle_timeout");
            }
        }
        self.now = until;
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms and peers

#[test]
fn join_returns_other_joined_peers_and_announces_the_newcomer() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let lurker = h.open("lurker"); // connected, never joins
    let r = h.join(a, "Alice", false);
    assert_eq!(r, json!({"peers": []}));
    let b = h.open("bob");
    let r = h.join(b, "Bob", false);
    let peers = r["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "only joined peers are listed: {r}");
    assert_eq!(peers[0]["id"], "alice");
    assert_eq!(peers[0]["displayName"], "Alice");
    assert_eq!(peers[0]["device"]["flag"], "chrome");
    let out = h.drain();
    let to_a = notifications_for(&out, a);
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0].0, "newPeer");
    assert_eq!(to_a[0].1["id"], "bob");
    assert_eq!(to_a[0].1["displayName"], "Bob");
    assert!(
        notifications_for(&out, lurker).is_empty(),
        "unjoined peers hear nothing"
    );
    assert!(notifications_for(&out, b).is_empty());
    assert_eq!(h.err(b, "join", json!({})).0, 409, "joining twice");
}

#[test]
fn leaving_peer_is_announced_and_last_peer_closes_the_room() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    let c = h.open("carol"); // never joins
    h.join(a, "A", false);
    h.join(b, "B", false);
    h.drain();
    assert_eq!(h.w.room_count(), 1);

    h.close(b);
    let out = h.drain();
    assert_eq!(
        notifications_for(&out, a),
        vec![("peerClosed", json!({"peerId": "bob"}))]
    );
    assert!(notifications_for(&out, c).is_empty());

    // An unjoined peer leaves silently.
    h.close(c);
    assert!(notifications_for(&h.drain(), a).is_empty());
    assert_eq!(h.w.room_count(), 1);

    h.close(a);
    assert_eq!(h.w.room_count(), 0);
    assert!(h.w.poll_timeout().is_none(), "no state, no timer");
    // A closed session is no longer attached to anything.
    assert_eq!(h.err(a, "getRouterRtpCapabilities", Value::Null).0, 403);
}

#[test]
fn rooms_are_independent() {
    let mut h = Harness::new();
    let a = h.open_in("r1", "alice");
    let b = h.open_in("r2", "bob");
    h.join(a, "A", false);
    let r = h.join(b, "B", false);
    assert_eq!(r, json!({"peers": []}));
    assert!(h.drain().is_empty());
    assert_eq!(h.w.room_count(), 2);
}

#[test]
fn reconnecting_peer_replaces_its_old_session() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b1 = h.open("bob");
    h.transport(a, false, true);
    h.join(a, "A", true);
    h.join(b1, "B", true);
    let tb = h.transport(b1, true, false);
    h.produce(b1, &tid(&tb), "audio", OPUS);
    h.drain();

    let b2 = h.open("bob");
    let out = h.drain();
    assert_eq!(closes_for(&out, b1), 1, "old session is told to close");
    assert_eq!(closes_for(&out, b2), 0);
    // As mediasoup-demo: the old peer's producer closes (its consumers with it), then the
    // peer is gone; it reappears when the new session joins.
    assert_eq!(methods_for(&out, a), vec!["consumerClosed", "peerClosed"]);
    assert_eq!(dtls_stops(&out, &tid(&tb)), 1, "old transports close");
    // The old session's requests no longer reach the room.
    assert_eq!(h.err(b1, "join", json!({})).0, 403);
    // The glue later reports the old socket closed: the new session is unaffected.
    h.close(b1);
    assert!(h.drain().is_empty());
    let r = h.join(b2, "B again", false);
    assert_eq!(r["peers"][0]["id"], "alice");
    let out = h.drain();
    let to_a = notifications_for(&out, a);
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0].0, "newPeer");
    assert_eq!(to_a[0].1["displayName"], "B again");
    assert_eq!(h.w.room_count(), 1);
}

#[test]
fn max_peers_per_room_is_enforced() {
    let mut h = Harness::with_max_peers(2);
    let a = h.open("alice");
    let b = h.open("bob");
    h.drain();
    let c = h.open("carol");
    let out = h.drain();
    assert_eq!(closes_for(&out, c), 1, "the extra peer is refused");
    assert_eq!(h.err(c, "join", json!({})).0, 403);
    h.join(a, "A", false);
    assert!(methods_for(&h.drain(), a).is_empty());
    // A reconnect of a peer already in the room is not refused.
    let b2 = h.open("bob");
    let out = h.drain();
    assert_eq!(closes_for(&out, b), 1);
    assert_eq!(closes_for(&out, b2), 0);
    h.join(b2, "B", false);
    // Once someone leaves there is room again.
    h.close(a);
    let d = h.open("dave");
    assert_eq!(closes_for(&h.drain(), d), 0);
    h.join(d, "D", false);
}

#[test]
fn change_display_name_is_announced_to_the_others() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    h.join(a, "A", false);
    h.join(b, "B", false);
    h.drain();
    h.ok(a, "changeDisplayName", json!({"displayName": "Alicia"}));
    let out = h.drain();
    assert_eq!(
        notifications_for(&out, b),
        vec![(
            "peerDisplayNameChanged",
            json!({"peerId": "alice", "displayName": "Alicia", "oldDisplayName": "A"})
        )]
    );
    assert!(notifications_for(&out, a).is_empty());
}

#[test]
fn invalid_rtp_capabilities_are_refused_and_the_peer_stays_unjoined() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let e = h.err(a, "join", json!({"rtpCapabilities": {"codecs": "nope"}}));
    assert_eq!(e.0, 400);
    assert!(e.1.contains("rtpCapabilities"), "{e:?}");
    h.join(a, "A", true);
}

// ---------------------------------------------------------------------------------------------
// Transports and ICE

#[test]
fn create_transport_answers_ice_lite_parameters_candidates_and_fingerprints() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let ice = &t["iceParameters"];
    assert_eq!(ice["usernameFragment"].as_str().map(str::len), Some(16));
    assert_eq!(ice["password"].as_str().map(str::len), Some(32));
    assert_eq!(ice["iceLite"], true);
    let c = t["iceCandidates"].as_array().expect("candidates");
    assert_eq!(c.len(), 2);
    let protos: Vec<_> = c
        .iter()
        .map(|c| c["protocol"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(protos, ["udp", "tcp"]);
    for c in c {
        assert_eq!(c["ip"], "203.0.113.7");
        assert_eq!(c["address"], "203.0.113.7");
        assert_eq!(c["port"], 40000);
        assert_eq!(c["type"], "host");
    }
    assert_eq!(c[1]["tcpType"], "passive");
    assert!(
        c[0]["priority"].as_u64() > c[1]["priority"].as_u64(),
        "UDP preferred"
    );
    let d = &t["dtlsParameters"];
    assert_eq!(d["role"], "auto");
    assert_eq!(d["fingerprints"][0]["algorithm"], "sha-256");
    assert_eq!(
        d["fingerprints"][0]["value"],
        server_fingerprints()[0].value
    );
    // Every transport gets its own credentials.
    let t2 = h.transport(a, false, true);
    assert_ne!(ice_ufrag(&t), ice_ufrag(&t2));
    assert_ne!(tid(&t), tid(&t2));
}

#[test]
fn force_tcp_offers_only_the_tcp_candidate() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.ok(
        a,
        "createWebRtcTransport",
        json!({"forceTcp": true, "consuming": true}),
    );
    let c = t["iceCandidates"].as_array().expect("candidates");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["protocol"], "tcp");
    assert_eq!(c[0]["port"], 40000);
}

#[test]
fn transports_per_peer_are_bounded() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    for _ in 0..crate::signaling::limits::PeerLimits::default().max_transports {
        h.transport(a, true, true);
    }
    let e = h.err(a, "createWebRtcTransport", json!({}));
    assert_eq!(e.0, 400);
    assert!(e.1.contains("too many transports"), "{e:?}");
    // The limit is per peer.
    h.transport(b, true, true);
}

#[test]
fn connect_transport_checks_dtls_parameters_and_takes_the_opposite_role() {
    let mut h = Harness::new();
    let a = h.open("alice");
    for bad in [
        json!({}),
        json!({"role": "client", "fingerprints": []}),
        json!({"role": "client", "fingerprints": [{"algorithm": "md5", "value": "00"}]}),
        json!({"role": "boss", "fingerprints": [{"algorithm": "sha-256", "value": "00"}]}),
    ] {
        let t = h.transport(a, true, false);
        let e = h.err(
            a,
            "connectWebRtcTransport",
            json!({"transportId": tid(&t), "dtlsParameters": bad}),
        );
        assert_eq!(e.0, 400, "{bad}");
        assert!(h.drain().is_empty(), "no DtlsStart for {bad}");
        // The transport is still connectable.
        h.ok(
            a,
            "connectWebRtcTransport",
            json!({"transportId": tid(&t), "dtlsParameters": client_dtls("auto")}),
        );
        h.drain();
    }
    let b = h.open("bob");
    for (remote, ours) in [
        ("client", DtlsRole::Server),
        ("server", DtlsRole::Client),
        ("auto", DtlsRole::Client),
    ] {
        let t = h.transport(b, false, true);
        let id = tid(&t);
        h.ok(
            b,
            "connectWebRtcTransport",
            json!({"transportId": id, "dtlsParameters": client_dtls(remote)}),
        );
        let out = h.drain();
        assert_eq!(out.len(), 1);
        match &out[0] {
            Output::DtlsStart {
                transport,
                role,
                fingerprints,
            } => {
                assert_eq!(transport.as_str(), id);
                assert_eq!(*role, ours, "remote {remote}");
                assert_eq!(fingerprints.len(), 1);
                assert_eq!(fingerprints[0].algorithm, "sha-256");
            }
            o => panic!("expected DtlsStart, got {o:?}"),
        }
        let e = h.err(
            b,
            "connectWebRtcTransport",
            json!({"transportId": id, "dtlsParameters": client_dtls(remote)}),
        );
        assert_eq!(e.0, 400, "second connect");
        assert!(h.drain().is_empty());
    }
}

#[test]
fn ice_check_selects_the_tuple_and_dtls_is_fed_only_from_it() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let id = tid(&t);
    let sel = udp(5000);

    // Before ICE, DTLS from anywhere is dropped.
    h.w.handle_packet(h.now, sel, &dtls_record());
    assert!(h.drain().is_empty());

    let out = h.ice(&t, sel);
    let answers = transmits_to(&out, sel);
    assert_eq!(answers.len(), 1, "{out:?}");
    let msg = StunMessage::parse(&answers[0]).expect("STUN answer");
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.transaction_id(), &[1u8; 12]);
    assert_eq!(msg.xor_mapped_address(), Some(sel.remote));
    assert!(msg.verify_integrity(ice_password(&t).as_bytes()));
    assert!(msg.verify_fingerprint());

    h.w.handle_packet(h.now, sel, &dtls_record());
    let out = h.drain();
    assert_eq!(out.len(), 1);
    match &out[0] {
        Output::DtlsFeed { transport, data } => {
            assert_eq!(transport.as_str(), id);
            assert_eq!(data, &dtls_record());
        }
        o => panic!("expected DtlsFeed, got {o:?}"),
    }
    // Another address (or the same address over TCP) is not the selected tuple.
    h.w.handle_packet(h.now, udp(5001), &dtls_record());
    h.w.handle_packet(h.now, tcp(5000), &dtls_record());
    assert!(h.drain().is_empty());
    let stats = h.ok(a, "getTransportStats", json!({"transportId": id}));
    assert_eq!(stats[0]["iceState"], "completed");
    assert_eq!(stats[0]["iceSelectedTuple"]["remotePort"], 5000);
    assert_eq!(stats[0]["iceSelectedTuple"]["protocol"], "udp");
}

#[test]
fn ice_check_with_a_wrong_password_changes_nothing() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let from = udp(6000);
    let req = binding_request(&ice_ufrag(&t), "not-the-password-at-all-00000000", true, 2);
    h.w.handle_packet(h.now, from, &req);
    let out = h.drain();
    // An unauthenticated 401 answer (as mediasoup), nothing else.
    assert_eq!(out.len(), 1, "{out:?}");
    let answers = transmits_to(&out, from);
    let msg = StunMessage::parse(&answers[0]).expect("STUN answer");
    assert_eq!(msg.class(), Class::ErrorResponse);
    assert_eq!(msg.error_code().map(|e| e.code), Some(401));
    assert!(!msg.has_integrity());
    h.w.handle_packet(h.now, from, &dtls_record());
    assert_eq!(dtls_feeds(&h.drain()), 0);
    let stats = h.ok(a, "getTransportStats", json!({"transportId": tid(&t)}));
    assert_eq!(stats[0]["iceState"], "new");
    assert_eq!(stats[0]["iceSelectedTuple"], Value::Null);
    // An unknown ufrag is not answered at all.
    let req = binding_request("nobodyHasThisUfr", &ice_password(&t), true, 3);
    h.w.handle_packet(h.now, from, &req);
    assert!(h.drain().is_empty());
    assert!(stun_dropped(&h) >= 1, "the unknown ufrag is counted");
}

#[test]
fn consent_expiry_closes_the_transport() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let id = tid(&t);
    let sel = udp(5000);
    h.ice(&t, sel);
    let start = h.now;
    let deadline = h.w.poll_timeout().expect("a timer runs");
    assert!(deadline <= start + CONSENT);

    // Checks before the deadline keep consent alive.
    h.advance_to(start + CONSENT - Duration::from_millis(100));
    assert_eq!(dtls_stops(&h.drain(), &id), 0);
    let req = binding_request(&ice_ufrag(&t), &ice_password(&t), false, 9);
    h.w.handle_packet(h.now, sel, &req);
    h.drain();
    h.advance_to(start + CONSENT + Duration::from_secs(1));
    assert_eq!(dtls_stops(&h.drain(), &id), 0, "consent was refreshed");
    h.ok(a, "getTransportStats", json!({"transportId": id}));

    // No more checks: the transport closes once consent runs out.
    h.advance_to(h.now + CONSENT);
    let out = h.drain();
    assert_eq!(dtls_stops(&out, &id), 1);
    assert_eq!(
        h.err(a, "getTransportStats", json!({"transportId": id})).0,
        404
    );
    assert_eq!(h.err(a, "restartIce", json!({"transportId": id})).0, 404);
    h.w.handle_packet(h.now, sel, &dtls_record());
    assert!(h.drain().is_empty(), "nothing routes to a closed transport");
    // The peer may create a new one (the closed one no longer counts).
    h.transport(a, true, false);
}

#[test]
fn consent_expiry_on_tcp_closes_the_connection() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let sel = tcp(7000);
    h.ice(&t, sel);
    h.advance_to(h.now + CONSENT + Duration::from_millis(50));
    let out = h.drain();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::CloseTcp { remote } if *remote == sel.remote)),
        "{out:?}"
    );
    assert_eq!(dtls_stops(&out, &tid(&t)), 1);
}

#[test]
fn closed_tcp_connection_is_no_longer_the_selected_tuple() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let sel = tcp(7000);
    h.ice(&t, sel);
    h.w.handle_tcp_closed(h.now, sel.remote);
    h.w.handle_packet(h.now, sel, &dtls_record());
    assert_eq!(dtls_feeds(&h.drain()), 0);
    let stats = h.ok(a, "getTransportStats", json!({"transportId": tid(&t)}));
    assert_eq!(stats[0]["iceSelectedTuple"], Value::Null);
}

#[test]
fn restart_ice_renews_credentials_and_the_old_ufrag_stops_routing() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let id = tid(&t);
    let sel = udp(5000);
    h.ice(&t, sel);
    let p = h.ok(a, "restartIce", json!({"transportId": id}));
    assert_eq!(p["iceLite"], true);
    assert_eq!(p["usernameFragment"].as_str().map(str::len), Some(16));
    assert_eq!(p["password"].as_str().map(str::len), Some(32));
    assert_ne!(
        p["usernameFragment"],
        t["iceParameters"]["usernameFragment"]
    );
    assert_ne!(p["password"], t["iceParameters"]["password"]);

    // The selected tuple keeps working until the client checks again.
    h.w.handle_packet(h.now, sel, &dtls_record());
    assert_eq!(dtls_feeds(&h.drain()), 1);

    let old = binding_request(&ice_ufrag(&t), &ice_password(&t), true, 4);
    h.w.handle_packet(h.now, udp(5001), &old);
    assert!(h.drain().is_empty(), "old ufrag no longer routes");

    let new_t = json!({"iceParameters": p});
    let out = h.ice(&new_t, udp(5001));
    let answers = transmits_to(&out, udp(5001));
    assert_eq!(answers.len(), 1);
    let msg = StunMessage::parse(&answers[0]).expect("STUN answer");
    assert_eq!(msg.class(), Class::SuccessResponse);
    h.w.handle_packet(h.now, udp(5001), &dtls_record());
    assert_eq!(
        dtls_feeds(&h.drain()),
        1,
        "the nominated new tuple is selected"
    );
    h.w.handle_packet(h.now, sel, &dtls_record());
    assert_eq!(dtls_feeds(&h.drain()), 0);
}

#[test]
fn failed_stun_integrity_is_counted_as_dropped() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let req = binding_request(&ice_ufrag(&t), "not-the-password-at-all-00000000", true, 2);
    h.w.handle_packet(h.now, udp(6000), &req);
    assert_eq!(stun_dropped(&h), 1);
}

#[test]
fn tuple_routes_are_bounded_like_the_ice_tuples() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    for port in 0..40u16 {
        let req = binding_request(&ice_ufrag(&t), &ice_password(&t), port == 0, 5);
        h.w.handle_packet(h.now, udp(10_000 + port), &req);
    }
    h.drain();
    let routes = h.w.by_tuple.len();
    let tuples =
        h.w.transports
            .values()
            .map(|t| t.ice.tuples().count())
            .sum::<usize>();
    assert!(tuples <= crate::edge::ice::MAX_TUPLES);
    assert_eq!(routes, tuples, "routes for tuples ICE no longer knows");
}

// ---------------------------------------------------------------------------------------------
// Producers and consumers

#[test]
fn produce_requires_join_and_a_producing_transport() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let t = h.transport(a, true, false);
    let data = json!({"transportId": tid(&t), "kind": "audio", "rtpParameters": fixture(OPUS)});
    assert_eq!(h.err(a, "produce", data.clone()).0, 403);
    h.join(a, "A", false);
    let recv = h.transport(a, false, true);
    let e = h.err(
        a,
        "produce",
        json!({"transportId": tid(&recv), "kind": "audio", "rtpParameters": fixture(OPUS)}),
    );
    assert_eq!(e.0, 400);
    assert!(e.1.contains("producing"), "{e:?}");
    h.ok(a, "produce", data);
}

#[test]
fn invalid_rtp_parameters_are_refused_and_create_nothing() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    h.join(a, "A", false);
    h.transport(b, false, true);
    h.join(b, "B", true);
    let t = h.transport(a, true, false);
    h.drain();

    let mut dup_pt = fixture(VP8_SIMULCAST);
    dup_pt["codecs"][1]["payloadType"] = json!(96);
    let mut unknown = fixture(OPUS);
    unknown["codecs"][0]["mimeType"] = json!("audio/speex");
    let mut dup_ssrc = fixture(VP8_SIMULCAST);
    for (i, e) in dup_ssrc["encodings"]
        .as_array_mut()
        .expect("encodings")
        .iter_mut()
        .enumerate()
    {
        e.as_object_mut().expect("encoding").remove("rid");
        e["ssrc"] = json!(1000 + (i as u32 % 2));
    }
    let mut no_encodings = fixture(OPUS);
    no_encodings["encodings"] = json!([]);
    let cases = [
        ("duplicate payload type", "video", dup_pt, "payload"),
        ("unknown codec", "audio", unknown, ""),
        ("audio codec as video", "video", fixture(OPUS), ""),
        ("video codec as audio", "audio", fixture(VP8_SIMULCAST), ""),
        ("bad kind", "screen", fixture(OPUS), "kind"),
        (
            "not an object",
            "audio",
            json!("opus please"),
            "rtpparameters",
        ),
        ("duplicate ssrc", "video", dup_ssrc, "ssrc"),
        ("no encodings", "audio", no_encodings, ""),
    ];
    for (what, kind, params, needle) in cases {
        let e = h.err(
            a,
            "produce",
            json!({"transportId": tid(&t), "kind": kind, "rtpParameters": params}),
        );
        assert_eq!(e.0, 400, "{what}: {e:?}");
        assert!(!e.1.is_empty(), "{what}: empty reason");
        assert!(
            e.1.to_lowercase().contains(needle),
            "{what}: reason {:?} should mention {needle:?}",
            e.1
        );
        let out = h.drain();
        assert!(out.is_empty(), "{what}: {out:?}");
    }
    // Nothing was registered: the fixture's SSRC is still free on this transport.
    h.produce(a, &tid(&t), "audio", OPUS);
    assert_eq!(new_consumers_for(&h.drain(), b).len(), 1);
    let e = h.err(
        a,
        "produce",
        json!({"transportId": tid(&t), "kind": "audio", "rtpParameters": fixture(OPUS)}),
    );
    assert_eq!(e.0, 400, "same SSRC twice on a transport");
    assert!(e.1.contains("ssrc"), "{e:?}");
}

#[test]
fn new_producer_is_offered_to_joined_peers_with_mediasoup_demo_fields() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    h.transport(b, false, true);
    h.join(a, "A", true);
    h.join(b, "B", true);
    let t = h.transport(a, true, false);
    h.drain();

    let audio = h.produce(a, &tid(&t), "audio", OPUS);
    let out = h.drain();
    assert!(new_consumers_for(&out, a).is_empty(), "no self-consumption");
    let offers = new_consumers_for(&out, b);
    assert_eq!(offers.len(), 1);
    let (cid, d) = &offers[0];
    assert_eq!(d["id"], cid.as_str());
    assert_eq!(d["peerId"], "alice");
    assert_eq!(d["producerId"], audio);
    assert_eq!(d["kind"], "audio");
    assert_eq!(d["type"], "simple");
    assert_eq!(d["appData"], json!({"share": false}));
    assert_eq!(d["producerPaused"], false);
    let rp = &d["rtpParameters"];
    assert_eq!(rp["codecs"][0]["mimeType"], "audio/opus");
    assert_eq!(rp["mid"], "0", "first consumer of the transport");
    let enc = rp["encodings"].as_array().expect("encodings");
    assert_eq!(enc.len(), 1);
    assert!(enc[0]["ssrc"].as_u64().is_some());
    assert_ne!(enc[0]["ssrc"], OPUS_SSRC, "consumers get their own SSRC");
    assert!(rp["rtcp"]["cname"].as_str().is_some_and(|c| !c.is_empty()));

    let video = h.produce(a, &tid(&t), "video", VP8_SIMULCAST);
    let out = h.drain();
    let offers = new_consumers_for(&out, b);
    assert_eq!(offers.len(), 1);
    let d = &offers[0].1;
    assert_eq!(d["producerId"], video);
    assert_eq!(d["kind"], "video");
    assert_eq!(d["type"], "simulcast");
    let rp = &d["rtpParameters"];
    assert_eq!(rp["mid"], "1");
    let enc = rp["encodings"].as_array().expect("encodings");
    assert_eq!(enc.len(), 1, "one encoding towards the consumer: {rp}");
    assert!(enc[0]["ssrc"].as_u64().is_some());
    assert!(
        enc[0]["rtx"]["ssrc"].as_u64().is_some(),
        "RTX negotiated: {rp}"
    );
    let mimes: Vec<_> = rp["codecs"]
        .as_array()
        .expect("codecs")
        .iter()
        .map(|c| c["mimeType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(mimes, ["video/VP8", "video/rtx"]);
    assert_eq!(
        h.ok(
            b,
            "getConsumerStats",
            json!({"consumerId": offers[0].0.as_str()})
        )[0]["type"],
        "outbound-rtp"
    );
}

#[test]
fn late_joiner_is_offered_existing_producers() {
    let mut h = Harness::new();
    let a = h.open("alice");
    h.join(a, "A", true);
    let t = h.transport(a, true, false);
    let audio = h.produce(a, &tid(&t), "audio", OPUS);
    let video = h.produce(a, &tid(&t), "video", VP8_SIMULCAST);
    h.drain();

    let b = h.open("bob");
    h.transport(b, true, false);
    h.transport(b, false, true);
    h.join(b, "B", true);
    let out = h.drain();
    let mut offered: Vec<String> = new_consumers_for(&out, b)
        .iter()
        .map(|(_, d)| d["producerId"].as_str().unwrap_or("").to_owned())
        .collect();
    offered.sort();
    let mut want = vec![audio, video];
    want.sort();
    assert_eq!(offered, want);
}

#[test]
fn peers_without_a_consuming_transport_or_capabilities_get_no_consumer() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let no_transport = h.open("bob");
    let no_caps = h.open("carol");
    let unjoined = h.open("dave");
    h.join(a, "A", true);
    h.transport(no_transport, true, false); // producing only
    h.join(no_transport, "B", true);
    h.transport(no_caps, false, true);
    h.join(no_caps, "C", false);
    h.transport(unjoined, false, true);
    let t = h.transport(a, true, false);
    h.drain();
    h.produce(a, &tid(&t), "audio", OPUS);
    let out = h.drain();
    for s in [no_transport, no_caps, unjoined] {
        assert!(new_consumers_for(&out, s).is_empty(), "session {s}");
    }
    // A consuming transport created later does not retroactively consume (as mediasoup-demo).
    h.transport(no_transport, false, true);
    assert!(h.drain().is_empty());
}

#[test]
fn rejected_consumer_is_closed_and_accepted_one_stays() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    h.transport(b, false, true);
    h.join(a, "A", true);
    h.join(b, "B", true);
    let t = h.transport(a, true, false);
    h.produce(a, &tid(&t), "audio", OPUS);
    h.produce(a, &tid(&t), "video", VP8_SIMULCAST);
    let offers = new_consumers_for(&h.drain(), b);
    assert_eq!(offers.len(), 2);
    let (keep, drop) = (&offers[0].0, &offers[1].0);
    h.w.handle_consumer_answer(h.now, b, keep, true);
    h.w.handle_consumer_answer(h.now, b, drop, false);
    let out = h.drain();
    assert!(
        methods_for(&out, b).is_empty(),
        "the peer itself refused: no consumerClosed"
    );
    h.ok(b, "getConsumerStats", json!({"consumerId": keep.as_str()}));
    let e = h.err(b, "getConsumerStats", json!({"consumerId": drop.as_str()}));
    assert_eq!(e.0, 404);
    // A late answer for a consumer that is gone is harmless.
    h.w.handle_consumer_answer(h.now, b, drop, true);
    assert!(h.drain().is_empty());
}

#[test]
fn close_pause_and_resume_producer_are_reported_to_consumers() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    let c = h.open("carol");
    h.transport(b, false, true);
    h.transport(c, false, true);
    h.join(a, "A", true);
    h.join(b, "B", true);
    h.join(c, "C", true);
    let t = h.transport(a, true, false);
    h.drain();
    let p = h.produce(a, &tid(&t), "audio", OPUS);
    let out = h.drain();
    let cb = new_consumers_for(&out, b)[0].0.clone();
    let cc = new_consumers_for(&out, c)[0].0.clone();

    h.ok(a, "pauseProducer", json!({"producerId": p}));
    let out = h.drain();
    assert_eq!(
        notifications_for(&out, b),
        vec![("consumerPaused", json!({"consumerId": cb.as_str()}))]
    );
    assert_eq!(
        notifications_for(&out, c),
        vec![("consumerPaused", json!({"consumerId": cc.as_str()}))]
    );
    assert!(notifications_for(&out, a).is_empty());
    h.ok(a, "pauseProducer", json!({"producerId": p}));
    assert!(h.drain().is_empty(), "pausing twice notifies once");

    // A consumer created while the producer is paused says so.
    let d = h.open("dave");
    h.transport(d, false, true);
    h.join(d, "D", true);
    let offers = new_consumers_for(&h.drain(), d);
    assert_eq!(offers[0].1["producerPaused"], true);

    h.ok(a, "resumeProducer", json!({"producerId": p}));
    let out = h.drain();
    assert_eq!(methods_for(&out, b), vec!["consumerResumed"]);
    assert_eq!(methods_for(&out, d), vec!["consumerResumed"]);

    h.ok(a, "closeProducer", json!({"producerId": p}));
    let out = h.drain();
    assert_eq!(
        notifications_for(&out, b),
        vec![("consumerClosed", json!({"consumerId": cb.as_str()}))]
    );
    assert_eq!(methods_for(&out, c), vec!["consumerClosed"]);
    assert_eq!(methods_for(&out, d), vec!["consumerClosed"]);
    assert_eq!(
        h.err(b, "getConsumerStats", json!({"consumerId": cb.as_str()}))
            .0,
        404
    );
    assert_eq!(
        h.err(a, "getProducerStats", json!({"producerId": p})).0,
        404
    );
    assert_eq!(h.err(a, "closeProducer", json!({"producerId": p})).0, 404);
}

#[test]
fn producer_leaving_closes_the_consumers_of_others() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    h.transport(b, false, true);
    h.join(a, "A", true);
    h.join(b, "B", true);
    let t = h.transport(a, true, false);
    h.produce(a, &tid(&t), "audio", OPUS);
    let cb = new_consumers_for(&h.drain(), b)[0].0.clone();
    h.close(a);
    let out = h.drain();
    assert_eq!(
        notifications_for(&out, b),
        vec![
            ("consumerClosed", json!({"consumerId": cb.as_str()})),
            ("peerClosed", json!({"peerId": "alice"}))
        ]
    );
    assert_eq!(dtls_stops(&out, &tid(&t)), 1);
    assert_eq!(
        h.err(b, "getConsumerStats", json!({"consumerId": cb.as_str()}))
            .0,
        404
    );
}

#[test]
fn another_peers_objects_are_not_found() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    let tb = h.transport(b, false, true);
    h.join(a, "A", true);
    h.join(b, "B", true);
    let ta = h.transport(a, true, false);
    let p = h.produce(a, &tid(&ta), "audio", OPUS);
    let cb = new_consumers_for(&h.drain(), b)[0].0.clone();
    let c = cb.as_str();
    let checks = [
        ("closeProducer", json!({"producerId": p})),
        ("pauseProducer", json!({"producerId": p})),
        ("resumeProducer", json!({"producerId": p})),
        ("getProducerStats", json!({"producerId": p})),
        ("restartIce", json!({"transportId": tid(&ta)})),
        ("getTransportStats", json!({"transportId": tid(&ta)})),
        (
            "connectWebRtcTransport",
            json!({"transportId": tid(&ta), "dtlsParameters": client_dtls("client")}),
        ),
        (
            "produce",
            json!({"transportId": tid(&ta), "kind": "audio", "rtpParameters": fixture(OPUS)}),
        ),
    ];
    for (method, data) in checks {
        assert_eq!(h.err(b, method, data).0, 404, "bob: {method}");
    }
    for (method, data) in [
        ("pauseConsumer", json!({"consumerId": c})),
        ("resumeConsumer", json!({"consumerId": c})),
        ("getConsumerStats", json!({"consumerId": c})),
        ("requestConsumerKeyFrame", json!({"consumerId": c})),
        (
            "setConsumerPriority",
            json!({"consumerId": c, "priority": 2}),
        ),
        (
            "setConsumerPreferredLayers",
            json!({"consumerId": c, "spatialLayer": 0}),
        ),
        ("getTransportStats", json!({"transportId": tid(&tb)})),
    ] {
        assert_eq!(h.err(a, method, data).0, 404, "alice: {method}");
    }
    assert!(h.drain().is_empty());
    // Still there for their owners.
    h.ok(a, "getProducerStats", json!({"producerId": p}));
    h.ok(b, "getConsumerStats", json!({"consumerId": c}));
}

#[test]
fn unknown_ids_are_not_found_and_change_nothing() {
    let mut h = Harness::new();
    let a = h.open("alice");
    let b = h.open("bob");
    h.transport(b, false, true);
    h.join(a, "A", true);
    h.join(b, "B", true);
    let t = h.transport(a, true, false);
    let p = h.produce(a, &tid(&t), "audio", OPUS);
    h.drain();
    let x = "00000000-0000-4000-8000-000000000000";
    let requests = [
        (
            "connectWebRtcTransport",
            json!({"transportId": x, "dtlsParameters": client_dtls("client")}),
        ),
        ("restartIce", json!({"transportId": x})),
        (
            "produce",
            json!({"transportId": x, "kind": "audio", "rtpParameters": fixture(OPUS)}),
        ),
        ("closeProducer", json!({"producerId": x})),
        ("pauseProducer", json!({"producerId": x})),
        ("resumeProducer", json!({"producerId": x})),
        ("pauseConsumer", json!({"consumerId": x})),
        ("resumeConsumer", json!({"consumerId": x})),
        (
            "setConsumerPreferredLayers",
            json!({"consumerId": x, "spatialLayer": 1}),
        ),
        (
            "setConsumerPriority",
            json!({"consumerId": x, "priority": 1}),
        ),
        ("requestConsumerKeyFrame", json!({"consumerId": x})),
        ("getTransportStats", json!({"transportId": x})),
        ("getProducerStats", json!({"producerId": x})),
        ("getConsumerStats", json!({"consumerId": x})),
    ];
    for (method, data) in requests {
        let e = h.err(a, method, data);
        assert_eq!(e.0, 404, "{method}: {e:?}");
        assert!(e.1.contains(x), "{method}: reason names the id: {e:?}");
        assert!(h.drain().is_empty(), "{method} had effects");
    }
    // The real producer and transport are untouched.
    h.ok(a, "getProducerStats", json!({"producerId": p}));
    h.ok(
        a,
        "connectWebRtcTransport",
        json!({"transportId": tid(&t), "dtlsParameters": client_dtls("client")}),
    );
    let failed =
        h.w.counters()
            .requests_failed
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, 14);
}

#[test]
fn data_channels_are_not_implemented_and_priority_zero_is_refused() {
    let mut h = Harness::new();
    let a = h.open("alice");
    h.join(a, "A", true);
    for m in [
        "produceData",
        "getDataProducerStats",
        "getDataConsumerStats",
        "closeDataProducer",
    ] {
        let e = h.err(a, m, json!({}));
        assert_eq!(e.0, 501, "{m}");
        assert!(e.1.contains(m), "{e:?}");
    }
    let e = h.err(
        a,
        "setConsumerPriority",
        json!({"consumerId": "whatever", "priority": 0}),
    );
    assert_eq!(e.0, 400);
    let caps = h.ok(a, "getRouterRtpCapabilities", Value::Null);
    assert!(caps["codecs"].as_array().is_some_and(|c| !c.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// The media path, end to end without sockets

/// Alice publishes the Opus fixture on a connected transport; Bob consumes it on his.
struct MediaRoom {
    h: Harness,
    alice: SessionId,
    bob: SessionId,
    producer: String,
    consumer: ConsumerId,
    consumer_data: Value,
    send_tuple: Tuple,
    recv_tuple: Tuple,
    send_keys: SrtpKeys,
    recv_keys: SrtpKeys,
}

impl MediaRoom {
    fn new() -> Self {
        let mut h = Harness::new();
        let alice = h.open("alice");
        let bob = h.open("bob");
        let send = h.transport(alice, true, false);
        let recv = h.transport(bob, false, true);
        h.join(alice, "A", true);
        h.join(bob, "B", true);
        let (send_tuple, recv_tuple) = (udp(5000), udp(6000));
        let (send_keys, recv_keys) = (srtp_keys(10), srtp_keys(50));
        h.connect_media(alice, &send, send_tuple, &send_keys);
        h.connect_media(bob, &recv, recv_tuple, &recv_keys);
        let producer = h.produce(alice, &tid(&send), "audio", OPUS);
        let offers = new_consumers_for(&h.drain(), bob);
        assert_eq!(offers.len(), 1);
        let (consumer, consumer_data) = offers[0].clone();
        Self {
            h,
            alice,
            bob,
            producer,
            consumer,
            consumer_data,
            send_tuple,
            recv_tuple,
            send_keys,
            recv_keys,
        }
    }

    fn consumer_ssrc(&self) -> u32 {
        let s = self.consumer_data["rtpParameters"]["encodings"][0]["ssrc"].as_u64();
        s.and_then(|s| u32::try_from(s).ok())
            .expect("consumer ssrc")
    }

    fn consumer_pt(&self) -> u8 {
        let pt = self.consumer_data["rtpParameters"]["codecs"][0]["payloadType"].as_u64();
        pt.and_then(|p| u8::try_from(p).ok())
            .expect("consumer payload type")
    }

    /// Alice sends one packet (encrypted by `ctx`); returns what goes out to Bob.
    fn send(&mut self, ctx: &mut Context, seq: u16, payload: &[u8]) -> Vec<Vec<u8>> {
        let plain = rtp(OPUS_PT, seq, 960 * u32::from(seq), OPUS_SSRC, payload);
        let enc = ctx.encrypt_rtp(&plain).expect("encrypt");
        self.h.w.handle_packet(self.h.now, self.send_tuple, &enc);
        let out = self.h.drain();
        transmits_to(&out, self.recv_tuple)
    }
}

#[test]
fn srtp_media_is_forwarded_from_producer_to_accepted_consumer() {
    let mut m = MediaRoom::new();
    let mut alice_out = client_out(&m.send_keys);
    let mut bob_in = client_in(&m.recv_keys);

    // Offered but not yet accepted: the consumer is paused.
    assert!(m.send(&mut alice_out, 1, b"before accept").is_empty());

    m.h.w
        .handle_consumer_answer(m.h.now, m.bob, &m.consumer.clone(), true);
    m.h.drain();
    let mut last_seq = None;
    for (i, payload) in [&b"opus frame one"[..], b"opus frame two", b"three"]
        .into_iter()
        .enumerate()
    {
        let seq = 2 + i as u16;
        let sent = m.send(&mut alice_out, seq, payload);
        assert_eq!(sent.len(), 1, "packet {seq} forwarded once to Bob");
        let plain = bob_in
            .decrypt_rtp(&sent[0])
            .expect("Bob can decrypt what he receives");
        let v = RtpView::parse(&plain[..]).expect("RTP");
        assert_eq!(v.ssrc(), m.consumer_ssrc());
        assert_eq!(v.payload_type(), m.consumer_pt());
        assert_eq!(v.payload(), payload);
        if let Some(prev) = last_seq {
            assert_eq!(
                v.sequence_number(),
                u16::wrapping_add(prev, 1),
                "contiguous output"
            );
        }
        last_seq = Some(v.sequence_number());
    }
    let c = m.h.w.counters();
    assert_eq!(c.rtp_sent.load(std::sync::atomic::Ordering::Relaxed), 3);
    let stats = m.h.ok(
        m.bob,
        "getConsumerStats",
        json!({"consumerId": m.consumer.as_str()}),
    );
    assert_eq!(stats[0]["packetCount"], 3);
    let stats = m.h.ok(
        m.alice,
        "getProducerStats",
        json!({"producerId": m.producer}),
    );
    // RFC 3550 A.1 probation: the first packet of a source is not counted (mediasoup's
    // packetCount counts every packet; a stats nuance, not a forwarding one).
    let received = stats[0]["packetCount"].as_u64().expect("packetCount");
    assert!((3..=4).contains(&received), "{stats}");
}

#[test]
fn forwarding_stops_while_paused_and_for_bad_srtp() {
    let mut m = MediaRoom::new();
    let mut alice_out = client_out(&m.send_keys);
    m.h.w
        .handle_consumer_answer(m.h.now, m.bob, &m.consumer.clone(), true);
    m.h.drain();
    assert_eq!(m.send(&mut alice_out, 1, b"x").len(), 1);

    // Bob pauses his consumer.
    m.h.ok(
        m.bob,
        "pauseConsumer",
        json!({"consumerId": m.consumer.as_str()}),
    );
    assert!(m.send(&mut alice_out, 2, b"x").is_empty());
    m.h.ok(
        m.bob,
        "resumeConsumer",
        json!({"consumerId": m.consumer.as_str()}),
    );
    assert_eq!(m.send(&mut alice_out, 3, b"x").len(), 1);

    // Alice pauses her producer.
    m.h.ok(m.alice, "pauseProducer", json!({"producerId": m.producer}));
    m.h.drain();
    assert!(m.send(&mut alice_out, 4, b"x").is_empty());
    m.h.ok(m.alice, "resumeProducer", json!({"producerId": m.producer}));
    m.h.drain();
    assert_eq!(m.send(&mut alice_out, 5, b"x").len(), 1);

    // Encrypted with the wrong key: dropped and counted.
    let mut wrong = client_out(&srtp_keys(99));
    assert!(m.send(&mut wrong, 6, b"x").is_empty());
    let failures =
        m.h.w
            .counters()
            .srtp_failures
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failures, 1);

    // From an address that is not the selected tuple: dropped.
    let plain = rtp(OPUS_PT, 7, 7 * 960, OPUS_SSRC, b"x");
    let enc = alice_out.encrypt_rtp(&plain).expect("encrypt");
    m.h.w.handle_packet(m.h.now, udp(5999), &enc);
    assert!(transmits_to(&m.h.drain(), m.recv_tuple).is_empty());

    // After the producer closes nothing is forwarded.
    m.h.ok(m.alice, "closeProducer", json!({"producerId": m.producer}));
    m.h.drain();
    assert!(m.send(&mut alice_out, 8, b"x").is_empty());
}
