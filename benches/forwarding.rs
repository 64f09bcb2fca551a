//! Forwarding cost of the worker core: one SRTP packet in from a publisher, N SRTP packets out.
//!
//! `cargo bench --bench forwarding` builds a room entirely through the worker's public API (a
//! publisher with one VP8 producer, N subscribers whose consumers were accepted, every
//! transport ICE-selected and SRTP-connected), then measures `handle_packet` of one encrypted
//! 1,200-byte RTP packet plus draining `poll_output()`, for N = 1, 10, 50. Micro-benchmarks of
//! the pieces on that path show where the time goes. A counting global allocator reports
//! allocations per input and per output packet, and a closing table prints the figures.
//!
//! The setup checks (untimed) that each input really yields N `Transmit`s that the
//! subscribers can decrypt, and every timed batch re-checks the count, so the bench cannot
//! silently measure a no-op. Under `cargo test --benches` (criterion's test mode) the setup
//! and checks run once and nothing is timed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

use pipemesh::bot::client::{bot_rtp_capabilities, producer_rtp_parameters};
use pipemesh::edge::dtls::{DtlsEvent, SrtpKeys};
use pipemesh::edge::ice::{Protocol, Tuple};
use pipemesh::edge::stun::{write_binding_request, BindingRequest, IntegrityKey};
use pipemesh::ids::{ConsumerId, PeerId, RoomId, TransportId};
use pipemesh::router::rtp_parameters::{MediaKind, RtpCapabilities};
use pipemesh::router::rtx::{RetransmissionBuffer, RetransmissionConfig};
use pipemesh::router::seq::{RtpView, StreamRewriter};
use pipemesh::signaling::protoo::ClientRequest;
use pipemesh::signaling::server::ToPeer;
use pipemesh::worker::{Output, Worker, WorkerConfig};

// ---------------------------------------------------------------------------------------------
// Allocation counting

/// The system allocator, counting allocations (and reallocations) and bytes requested.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn alloc_snapshot() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    )
}

// ---------------------------------------------------------------------------------------------
// Packets

/// Size of every RTP packet before SRTP (header + extensions + payload).
const PACKET_LEN: usize = 1200;
/// Packets encrypted ahead of a timed batch; regenerated (untimed) with continuing sequence
/// numbers when used up, so SRTP and the rewriters always see a live, in-order stream.
const RING: usize = 1024;
/// Virtual time between two input packets (a ~10 Mbit/s stream of 1,200-byte packets).
const PACKET_INTERVAL: Duration = Duration::from_millis(1);
const PROFILE: ProtectionProfile = ProtectionProfile::AeadAes128Gcm;

/// Writes one plain VP8 RTP packet of [`PACKET_LEN`] bytes as Chrome would send it: MID,
/// abs-send-time and transport-wide-cc one-byte header extensions, a VP8 payload descriptor
/// with a 15-bit picture id, then an inter-frame payload.
#[derive(Clone)]
struct PacketSource {
    ssrc: u32,
    payload_type: u8,
    mid: Option<(u8, Vec<u8>)>,
    abs_send_time: Option<u8>,
    twcc: Option<u8>,
    seq: u16,
    twcc_seq: u16,
    timestamp: u32,
    picture_id: u16,
}

impl PacketSource {
    fn next(&mut self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0x90, self.payload_type & 0x7F]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        let mut ext = Vec::new();
        if let Some((id, mid)) = &self.mid {
            ext.push((id << 4) | (mid.len() as u8 - 1));
            ext.extend_from_slice(mid);
        }
        if let Some(id) = self.abs_send_time {
            ext.push((id << 4) | 2);
            ext.extend_from_slice(&[0x12, 0x34, 0x56]);
        }
        if let Some(id) = self.twcc {
            ext.push((id << 4) | 1);
            ext.extend_from_slice(&self.twcc_seq.to_be_bytes());
        }
        while ext.len() % 4 != 0 {
            ext.push(0);
        }
        out.extend_from_slice(&[0xBE, 0xDE]);
        out.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
        out.extend_from_slice(&ext);
        // VP8 descriptor: X=1 S=1 PID=0; I=1; 15-bit picture id. Then an inter frame (P=1).
        let pid = self.picture_id & 0x7FFF;
        out.extend_from_slice(&[0x90, 0x80, 0x80 | (pid >> 8) as u8, pid as u8, 0x01]);
        let mut i = 0u8;
        while out.len() < PACKET_LEN {
            out.push(i);
            i = i.wrapping_add(1);
        }
        self.seq = self.seq.wrapping_add(1);
        self.twcc_seq = self.twcc_seq.wrapping_add(1);
        // ~4 packets per frame at 90 kHz / 30 fps.
        if self.seq.is_multiple_of(4) {
            self.timestamp = self.timestamp.wrapping_add(3000);
            self.picture_id = self.picture_id.wrapping_add(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Room setup through the worker's public API

fn request(w: &mut Worker, now: Instant, session: u64, method: &str, data: Value) -> Value {
    let req = ClientRequest::parse(method, data)
        .unwrap_or_else(|e| panic!("bench setup: {method} does not parse: {e}"));
    w.handle_request(now, session, req)
        .unwrap_or_else(|e| panic!("bench setup: {method} refused: {e:?}"))
}

fn keys(i: usize) -> SrtpKeys {
    let b = i as u8;
    SrtpKeys {
        profile: PROFILE,
        local_key: vec![b; 16],
        local_salt: vec![b ^ 0x55; 12],
        remote_key: vec![b ^ 0xAA; 16],
        remote_salt: vec![b ^ 0x33; 12],
    }
}

/// One client transport as the bench drives it.
struct ClientTransport {
    id: TransportId,
    tuple: Tuple,
    ufrag: String,
    password: String,
    keys: SrtpKeys,
}

/// Creates a transport for `session`, connects it, selects `tuple` by ICE and reports DTLS
/// connected with `keys`.
fn connected_transport(
    w: &mut Worker,
    now: Instant,
    session: u64,
    producing: bool,
    tuple: Tuple,
    keys: SrtpKeys,
) -> ClientTransport {
    let answer = request(
        w,
        now,
        session,
        "createWebRtcTransport",
        json!({"producing": producing, "consuming": !producing, "forceTcp": false}),
    );
    let id = answer["id"].as_str().expect("transport id").to_owned();
    let ufrag = answer["iceParameters"]["usernameFragment"]
        .as_str()
        .expect("ufrag")
        .to_owned();
    let password = answer["iceParameters"]["password"]
        .as_str()
        .expect("password")
        .to_owned();
    request(
        w,
        now,
        session,
        "connectWebRtcTransport",
        json!({"transportId": id, "dtlsParameters": {"role": "client", "fingerprints": [
            {"algorithm": "sha-256", "value": vec!["AB"; 32].join(":")}
        ]}}),
    );
    let t = ClientTransport {
        id: TransportId::from(id),
        tuple,
        ufrag,
        password,
        keys,
    };
    stun_check(w, now, &t, 0);
    w.handle_dtls(now, &t.id, DtlsEvent::Connected(t.keys.clone()));
    t
}

/// A nominating Binding request from the transport's tuple (selects it, refreshes consent).
fn stun_check(w: &mut Worker, now: Instant, t: &ClientTransport, n: u64) {
    let username = format!("{}:client", t.ufrag);
    let mut transaction_id = [0u8; 12];
    transaction_id[..8].copy_from_slice(&n.to_be_bytes());
    transaction_id[8..].copy_from_slice(&t.tuple.remote.port().to_be_bytes().repeat(2));
    let mut buf = Vec::new();
    write_binding_request(
        &mut buf,
        &BindingRequest {
            transaction_id,
            username: &username,
            priority: 1_845_501_695,
            tie_breaker: 0x1234_5678,
            use_candidate: true,
        },
        &IntegrityKey::new(t.password.as_bytes()),
    )
    .expect("bench setup: STUN request");
    w.handle_packet(now, t.tuple, &buf);
}

fn tuple(i: usize) -> Tuple {
    Tuple {
        protocol: Protocol::Udp,
        remote: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40_000 + i as u16)),
    }
}

fn drain(w: &mut Worker) -> Vec<Output> {
    std::iter::from_fn(|| w.poll_output()).collect()
}

/// A room with one VP8 publisher and `n` accepted subscribers, and the publisher's side of
/// the stream.
struct Fanout {
    worker: Worker,
    now: Instant,
    n: usize,
    publisher: ClientTransport,
    subscribers: Vec<ClientTransport>,
    /// The publisher's SRTP context (encrypts with what the worker decrypts with).
    client_srtp: Context,
    source: PacketSource,
    ring: Vec<Bytes>,
    next: usize,
    stun_counter: u64,
    plain: Vec<u8>,
}

impl Fanout {
    fn new(n: usize) -> Self {
        let start = Instant::now();
        let now = start;
        let mut w = Worker::new(
            WorkerConfig {
                announced_address: "127.0.0.1".into(),
                rtc_port: 40_000,
                consent_timeout: Duration::from_secs(30),
                max_peers_per_room: n + 8,
            },
            Vec::new(),
            7,
        );
        let room = RoomId::from("bench");
        let caps_json = {
            w.handle_session_open(now, 1, room.clone(), PeerId::from("publisher"));
            request(&mut w, now, 1, "getRouterRtpCapabilities", Value::Null)
        };
        let router: RtpCapabilities =
            serde_json::from_value(caps_json).expect("bench setup: router capabilities");
        let client_caps =
            serde_json::to_value(bot_rtp_capabilities(&router)).expect("capabilities to JSON");

        // Publisher: join, transport, produce VP8 with one encoding.
        request(&mut w, now, 1, "join", json!({"displayName": "publisher"}));
        let publisher = connected_transport(&mut w, now, 1, true, tuple(0), keys(0));
        let ssrc = 0x1122_3344;
        let params = producer_rtp_parameters(&router, MediaKind::Video, "0", ssrc, "benchcname")
            .expect("bench setup: VP8 producer parameters");
        let payload_type = params.rtp_parameters.codecs[0].payload_type;
        request(
            &mut w,
            now,
            1,
            "produce",
            json!({"transportId": publisher.id.as_str(), "kind": "video",
                   "rtpParameters": params.rtp_parameters, "appData": {}}),
        );
        drain(&mut w);

        // Subscribers: transport first, then join (mediasoup-demo's order), accept consumer.
        let mut subscribers = Vec::with_capacity(n);
        for i in 1..=n {
            let session = 1 + i as u64;
            w.handle_session_open(now, session, room.clone(), PeerId::from(format!("sub{i}")));
            let t = connected_transport(&mut w, now, session, false, tuple(i), keys(i));
            request(
                &mut w,
                now,
                session,
                "join",
                json!({"displayName": format!("sub{i}"), "rtpCapabilities": client_caps}),
            );
            let offered: Vec<ConsumerId> = drain(&mut w)
                .into_iter()
                .filter_map(|o| match o {
                    Output::ToPeer {
                        session: s,
                        msg: ToPeer::NewConsumer { consumer, .. },
                    } if s == session => Some(consumer),
                    _ => None,
                })
                .collect();
            assert_eq!(
                offered.len(),
                1,
                "bench setup: subscriber {i} was offered {} consumers, expected 1",
                offered.len()
            );
            w.handle_consumer_answer(now, session, &offered[0], true);
            drain(&mut w);
            subscribers.push(t);
        }

        let pk = &publisher.keys;
        let client_srtp = Context::new(&pk.remote_key, &pk.remote_salt, PROFILE, None, None)
            .expect("bench setup: publisher SRTP context");
        let source = PacketSource {
            ssrc,
            payload_type,
            mid: params
                .extensions
                .mid
                .as_ref()
                .map(|(id, mid)| (*id, mid.as_bytes().to_vec())),
            abs_send_time: params.extensions.abs_send_time,
            twcc: params.extensions.transport_cc,
            seq: 1000,
            twcc_seq: 1,
            timestamp: 90_000,
            picture_id: 1,
        };
        let mut f = Fanout {
            worker: w,
            now,
            n,
            publisher,
            subscribers,
            client_srtp,
            source,
            ring: Vec::with_capacity(RING),
            next: 0,
            stun_counter: 1,
            plain: Vec::with_capacity(PACKET_LEN),
        };
        f.refill();
        f.verify();
        f
    }

    /// Encrypts the next [`RING`] packets of the stream, and does the periodic work a node
    /// would do meanwhile (consent refresh, timers), none of it timed.
    fn refill(&mut self) {
        self.ring.clear();
        for _ in 0..RING {
            self.source.next(&mut self.plain);
            let enc = self
                .client_srtp
                .encrypt_rtp(&self.plain)
                .expect("bench setup: publisher encrypt");
            self.ring.push(enc);
        }
        self.next = 0;
        self.stun_counter += 1;
        stun_check(
            &mut self.worker,
            self.now,
            &self.publisher,
            self.stun_counter,
        );
        for t in &self.subscribers {
            stun_check(&mut self.worker, self.now, t, self.stun_counter);
        }
        self.worker.handle_timeout(self.now);
        drain(&mut self.worker);
    }

    /// The timed unit: one input packet handled and every output drained. Returns the number
    /// of `Transmit`s.
    #[inline]
    fn step(&mut self) -> usize {
        self.now += PACKET_INTERVAL;
        let tuple = self.publisher.tuple;
        self.worker
            .handle_packet(self.now, tuple, &self.ring[self.next]);
        self.next += 1;
        let mut sent = 0;
        while let Some(o) = self.worker.poll_output() {
            if let Output::Transmit { data, .. } = &o {
                black_box(data);
                sent += 1;
            }
        }
        sent
    }

    /// Untimed: one packet must fan out to exactly one Transmit per subscriber, on each
    /// subscriber's tuple, decryptable with its keys and carrying the publisher's payload.
    fn verify(&mut self) {
        self.now += PACKET_INTERVAL;
        let tuple = self.publisher.tuple;
        let data = self.ring[self.next].clone();
        self.next += 1;
        // What the publisher sent, as the worker sees it after SRTP (a fresh context: the
        // worker's has no replay window and the stream has not rolled over).
        let pk = &self.publisher.keys;
        let input = Context::new(&pk.remote_key, &pk.remote_salt, PROFILE, None, None)
            .and_then(|mut c| c.decrypt_rtp(&data))
            .expect("bench: own input packet decrypts");
        let input_payload = RtpView::parse(&input[..])
            .expect("bench: own packet parses")
            .payload()
            .to_vec();
        self.worker.handle_packet(self.now, tuple, &data);
        let outputs = drain(&mut self.worker);
        let mut seen = HashSet::new();
        for o in &outputs {
            let Output::Transmit { tuple, data } = o else {
                continue;
            };
            let Some(sub) = self.subscribers.iter().find(|s| s.tuple == *tuple) else {
                panic!("bench: Transmit to {tuple:?}, which is no subscriber");
            };
            assert!(
                seen.insert(*tuple),
                "bench: two Transmits to subscriber {tuple:?} for one input"
            );
            // The subscriber decrypts with the key the worker encrypts with (its local key).
            let mut ctx = Context::new(
                &sub.keys.local_key,
                &sub.keys.local_salt,
                PROFILE,
                None,
                None,
            )
            .expect("bench: subscriber SRTP context");
            let dec = ctx
                .decrypt_rtp(data)
                .unwrap_or_else(|e| panic!("bench: subscriber {tuple:?} cannot decrypt: {e}"));
            let view = RtpView::parse(&dec[..]).expect("bench: forwarded packet parses");
            assert_eq!(
                view.payload(),
                &input_payload[..],
                "bench: forwarded payload differs from the input"
            );
        }
        assert_eq!(
            seen.len(),
            self.n,
            "bench: one input packet yielded {} Transmit outputs to subscribers, expected {} \
             (consumers not active, transports not connected, or packet dropped); the \
             benchmark would measure a no-op",
            seen.len(),
            self.n
        );
        let counters = self.worker.counters().snapshot();
        for (name, v) in counters {
            if name.starts_with("srtp_failures") || name.starts_with("rtp_unknown_ssrc") {
                assert_eq!(v, 0, "bench: worker counter {name} = {v}");
            }
        }
    }

    /// Runs `iters` steps, timing only `step`; refills the ring untimed when used up.
    fn run_timed(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        let mut sent = 0u64;
        while left > 0 {
            if self.next == self.ring.len() {
                self.refill();
            }
            let batch = left.min((self.ring.len() - self.next) as u64);
            let t0 = Instant::now();
            for _ in 0..batch {
                sent += self.step() as u64;
            }
            total += t0.elapsed();
            left -= batch;
        }
        assert_eq!(
            sent,
            iters * self.n as u64,
            "bench: {iters} input packets yielded {sent} Transmits, expected {} each",
            self.n
        );
        total
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

const FANOUTS: [usize; 3] = [1, 10, 50];

fn bench_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for n in FANOUTS {
        let mut f = Fanout::new(n);
        // Output packets per second is what Throughput reports.
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("handle_packet+drain", n), |b| {
            b.iter_custom(|iters| f.run_timed(iters))
        });
    }
    g.finish();
}

/// Allocations per call of a piece, in its steady state.
fn count_allocs(f: &mut impl FnMut(), calls: u32) -> f64 {
    let (a0, _) = alloc_snapshot();
    for _ in 0..calls {
        f();
    }
    let (a1, _) = alloc_snapshot();
    (a1 - a0) as f64 / calls as f64
}

/// Benchmarks one piece of the path and counts its allocations per call afterwards.
fn piece(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    allocs: &mut Vec<(&'static str, f64)>,
    name: &'static str,
    mut f: impl FnMut(),
) {
    g.bench_function(name, |b| b.iter(&mut f));
    allocs.push((name, count_allocs(&mut f, 1000)));
}

/// The pieces of the per-packet path, one by one; returns allocations per call of each.
fn bench_pieces(c: &mut Criterion) -> Vec<(&'static str, f64)> {
    let mut g = c.benchmark_group("pieces");
    let mut allocs = Vec::new();
    let mut src = PacketSource {
        ssrc: 0x1122_3344,
        payload_type: 96,
        mid: Some((1, b"0".to_vec())),
        abs_send_time: Some(4),
        twcc: Some(5),
        seq: 1,
        twcc_seq: 1,
        timestamp: 90_000,
        picture_id: 1,
    };
    let mut plain = Vec::new();
    src.next(&mut plain);
    let plain = plain;
    let k = keys(200);
    let t0 = Instant::now();

    // A ring of consecutive encrypted packets; the receiving context is built as the
    // worker's (no replay window), and cycling a short ring stays within one rollover epoch.
    let ring: Vec<Bytes> = {
        let mut enc =
            Context::new(&k.local_key, &k.local_salt, PROFILE, None, None).expect("SRTP context");
        let mut s = src.clone();
        let mut p = Vec::new();
        (0..256)
            .map(|_| {
                s.next(&mut p);
                enc.encrypt_rtp(&p).expect("encrypt")
            })
            .collect()
    };
    let mut dec =
        Context::new(&k.local_key, &k.local_salt, PROFILE, None, None).expect("SRTP context");
    let mut i = 0usize;
    piece(&mut g, &mut allocs, "srtp_decrypt_1200B", || {
        let p = &ring[i & 255];
        i += 1;
        black_box(
            dec.decrypt_rtp(black_box(p))
                .expect("bench: SRTP decrypt failed"),
        );
    });

    let mut enc =
        Context::new(&k.local_key, &k.local_salt, PROFILE, None, None).expect("SRTP context");
    piece(&mut g, &mut allocs, "srtp_encrypt_1200B", || {
        black_box(enc.encrypt_rtp(black_box(&plain)).expect("encrypt"));
    });

    // Reference only (not on the path): AES-128-GCM of the same payload with `ring`, in
    // place, to show how much of SRTP's cost is the cipher implementation and its buffers.
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &k.local_key).expect("AES key"),
    );
    let header_len = RtpView::parse(&plain[..]).expect("parse").payload_offset();
    let mut sealed = Vec::with_capacity(1500);
    let mut n = 0u64;
    piece(
        &mut g,
        &mut allocs,
        "reference_ring_aes128gcm_seal_1200B",
        || {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_be_bytes());
            sealed.clear();
            sealed.extend_from_slice(&plain[header_len..]);
            key.seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&plain[..header_len]),
                &mut sealed,
            )
            .expect("seal");
            black_box(&sealed);
        },
    );

    let mut scratch = Vec::with_capacity(1500);
    piece(&mut g, &mut allocs, "copy_1200B_to_scratch", || {
        scratch.clear();
        scratch.extend_from_slice(black_box(&plain));
        black_box(&scratch);
    });

    let mut pkt = plain.clone();
    let mut rw = StreamRewriter::new(0xCAFE_BABE, 90_000, 4242);
    let mut seq: u16 = 1;
    let mut now = t0;
    piece(&mut g, &mut allocs, "rtpview_parse+rewrite", || {
        seq = seq.wrapping_add(1);
        now += Duration::from_millis(1);
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        let mut view = RtpView::parse(&mut pkt[..]).expect("parse");
        black_box(rw.rewrite(now, &mut view, 96));
    });

    // Sized as a video consumer's (NACK negotiated); every slot warmed first so the
    // measurement is the steady state, not the slots' one-time allocations.
    let mut buf = RetransmissionBuffer::new(RetransmissionConfig {
        capacity: 512,
        ..RetransmissionConfig::default()
    });
    for s in 0..1024u16 {
        buf.insert(t0, s, &plain).expect("insert");
    }
    let mut seq: u16 = 1024;
    let mut now = t0;
    piece(&mut g, &mut allocs, "rtx_buffer_insert_1200B", || {
        seq = seq.wrapping_add(1);
        now += Duration::from_millis(1);
        buf.insert(now, seq, black_box(&plain)).expect("insert");
    });
    g.finish();
    allocs
}

// ---------------------------------------------------------------------------------------------
// Summary table and allocation counts

/// Median of `rounds` timed runs of `per_round` packets: ns per input packet.
fn ns_per_input(f: &mut Fanout, rounds: usize, per_round: u64) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| f.run_timed(per_round).as_nanos() as f64 / per_round as f64)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Allocations and bytes allocated per input packet, in the steady state (one ring, no
/// refill inside the counted window).
fn allocs_per_input(f: &mut Fanout, packets: usize) -> (f64, f64) {
    assert!(packets < RING);
    f.refill();
    let (a0, b0) = alloc_snapshot();
    let mut sent = 0;
    for _ in 0..packets {
        sent += f.step();
    }
    let (a1, b1) = alloc_snapshot();
    assert_eq!(sent, packets * f.n, "bench: fan-out lost packets");
    (
        (a1 - a0) as f64 / packets as f64,
        (b1 - b0) as f64 / packets as f64,
    )
}

fn summary(piece_allocs: &[(&'static str, f64)]) {
    println!();
    println!("forwarding summary (median of 7 x 2000 input packets, after warm-up; 1,200-byte VP8, AES-128-GCM)");
    println!(
        "{:>9} {:>15} {:>15} {:>15} {:>14} {:>14}",
        "consumers",
        "ns/input pkt",
        "ns/output pkt",
        "output pkts/s",
        "allocs/input",
        "bytes/input"
    );
    let mut allocs = Vec::new();
    for n in FANOUTS {
        let mut f = Fanout::new(n);
        // Warm-up: fills every consumer's retransmission slots (their one-time allocations).
        f.run_timed(2 * RING as u64);
        let ns_in = ns_per_input(&mut f, 7, 2000);
        let ns_out = ns_in / n as f64;
        let (a, b) = allocs_per_input(&mut f, 1000);
        allocs.push((n, a, b));
        println!(
            "{:>9} {:>15.0} {:>15.0} {:>15.0} {:>14.1} {:>14.0}",
            n,
            ns_in,
            ns_out,
            1e9 / ns_out,
            a,
            b
        );
    }
    let (n0, a0, b0) = allocs[0];
    let (n1, a1, b1) = allocs[allocs.len() - 1];
    let per_out = (a1 - a0) / (n1 - n0) as f64;
    let bytes_out = (b1 - b0) / (n1 - n0) as f64;
    println!(
        "allocations: {:.1} per output packet ({:.0} bytes), {:.1} per input packet independent of fan-out",
        per_out,
        bytes_out,
        a0 - per_out * n0 as f64
    );
    for (name, a) in piece_allocs {
        println!("  {name}: {a:.1} allocations per call");
    }
}

fn main() {
    // Short runs by default (shared machine); command-line flags still override.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_fanout(&mut c);
    let piece_allocs = bench_pieces(&mut c);
    c.final_summary();
    // Figures only when benchmarking: `cargo test --benches` runs criterion in test mode,
    // where the setup checks run but nothing is timed (tests never time things).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        summary(&piece_allocs);
    }
}
