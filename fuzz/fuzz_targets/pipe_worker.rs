//! A worker with pipes enabled, fed arbitrary pipe traffic from a linked node "f": control
//! messages (decoded from the input, so whatever a peer node could send, including remote
//! producers with arbitrary RTP parameters and Subscribed answers for them), datagrams, link
//! flaps and time. A joined local peer with a connected consuming transport consumes whatever
//! the fuzzer announces, so its media reaches the forwarding path. Nothing may panic, and
//! draining outputs and timers must terminate.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pipemesh::discovery::directory::{DirectoryConfig, GossipDirectory};
use pipemesh::edge::dtls::{DtlsEvent, Fingerprint, SrtpKeys};
use pipemesh::edge::ice::{Protocol, Tuple};
use pipemesh::edge::stun::{self, BindingRequest, IntegrityKey};
use pipemesh::ids::{NodeId, TransportId};
use pipemesh::pipe::wire::decode_control_body;
use pipemesh::signaling::protoo::ClientRequest;
use pipemesh::worker::{Worker, WorkerConfig};
use serde_json::{json, Value};

const CAPS: &str = include_str!("../../tests/fixtures/chrome_rtp_capabilities.json");

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn request(w: &mut Worker, now: Instant, method: &str, data: Value) -> Value {
    let req = ClientRequest::parse(method, data).expect("valid request");
    w.handle_request(now, 1, req).expect("request succeeds")
}

fn setup(now: Instant, node: &NodeId) -> Worker {
    let mut w = Worker::new(
        WorkerConfig {
            announced_address: "127.0.0.1".into(),
            rtc_port: 40000,
            consent_timeout: Duration::from_secs(3600),
            max_peers_per_room: 16,
        },
        vec![Fingerprint {
            algorithm: "sha-256".into(),
            value: vec!["AB"; 32].join(":"),
        }],
        1,
    );
    w.enable_pipes(
        Box::new(GossipDirectory::new(DirectoryConfig::default())),
        Duration::from_secs(2),
    );
    w.handle_pipe_link_up(now, node);
    w.handle_session_open(now, 1, "r".into(), "bob".into());
    let t = request(
        &mut w,
        now,
        "createWebRtcTransport",
        json!({"forceTcp": false, "producing": false, "consuming": true}),
    );
    let caps: Value = serde_json::from_str(CAPS).expect("fixture");
    request(
        &mut w,
        now,
        "join",
        json!({"displayName": "B", "device": {}, "rtpCapabilities": caps}),
    );
    // ICE and DTLS done: the consumer transport can send.
    let ufrag = t["iceParameters"]["usernameFragment"]
        .as_str()
        .expect("ufrag");
    let pwd = t["iceParameters"]["password"].as_str().expect("pwd");
    let mut check = Vec::new();
    stun::write_binding_request(
        &mut check,
        &BindingRequest {
            transaction_id: [7; 12],
            username: &format!("{ufrag}:client"),
            priority: 1,
            tie_breaker: 1,
            use_candidate: true,
        },
        &IntegrityKey::new(pwd.as_bytes()),
    )
    .expect("binding request");
    let tuple = Tuple {
        protocol: Protocol::Udp,
        remote: "127.0.0.1:5000".parse().expect("addr"),
    };
    w.handle_packet(now, tuple, &check);
    let id = t["id"].as_str().expect("id").to_owned();
    request(
        &mut w,
        now,
        "connectWebRtcTransport",
        json!({"transportId": id, "dtlsParameters": {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": vec!["01"; 32].join(":")}]}}),
    );
    w.handle_dtls(
        now,
        &TransportId::from(id.as_str()),
        DtlsEvent::Connected(SrtpKeys {
            profile: webrtc_srtp::protection_profile::ProtectionProfile::AeadAes128Gcm,
            local_key: vec![1; 16],
            local_salt: vec![2; 12],
            remote_key: vec![3; 16],
            remote_salt: vec![4; 12],
        }),
    );
    while w.poll_output().is_some() {}
    w
}

fuzz_target!(|data: &[u8]| {
    let node = NodeId::from("f");
    let mut now = base();
    let mut w = setup(now, &node);
    let mut rest = data;
    let mut up = true;
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(tail.first().copied().unwrap_or(0)) * 4;
        let body = tail.get(1..).unwrap_or(&[]);
        let (chunk, next) = body.split_at(len.min(body.len()));
        rest = next;
        match op % 5 {
            0 => w.handle_pipe_datagram(now, &node, chunk),
            1 => {
                if let Ok(msg) = decode_control_body(chunk) {
                    w.handle_pipe_control(now, &node, msg);
                }
            }
            2 => {
                up = !up;
                if up {
                    w.handle_pipe_link_up(now, &node);
                } else {
                    w.handle_pipe_link_down(now, &node);
                }
            }
            3 => {
                now += Duration::from_millis(u64::from(op) * 40);
                let mut steps = 0;
                while let Some(t) = w.poll_timeout() {
                    if t > now || steps > 10_000 {
                        break;
                    }
                    steps += 1;
                    w.handle_timeout(t.max(base()));
                }
                w.handle_timeout(now);
            }
            _ => w.handle_pipe_control(now, &NodeId::from("stranger"), {
                match decode_control_body(chunk) {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            }),
        }
        let mut n = 0;
        while w.poll_output().is_some() {
            n += 1;
            assert!(n < 1_000_000, "outputs do not drain");
        }
    }
});
