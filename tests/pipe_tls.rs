//! Pipe TLS over real QUIC on loopback: nodes of one cluster connect both ways and exchange
//! datagrams and stream messages with authenticated node ids; certificates from another CA, or
//! of another node than the one dialed, are refused; insecure mode connects (and never with a
//! secure node); garbage datagrams do not disturb an established pipe; the idle timeout closes
//! a pipe whose peer has vanished.
//!
//! Every test is bounded by `pipe_endpoint::TEST_LIMIT`; waits are on events (handshakes, reads,
//! `Connection::closed`), never on sleeps.

#[path = "common/pipe_endpoint.rs"]
mod pipe_endpoint;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pipe_endpoint::{bounded, identity, rogue_client_config};
use pipemesh::pipe::certs::{self, CertsArgs};
use pipemesh::pipe::tls::{self, PipeIdentity, TransportTuning};
use quinn::{Connection, ConnectionError, Endpoint};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::net::UdpSocket;

/// A node's pipe endpoint on 127.0.0.1: accepts pipes and dials them.
fn endpoint(identity: &PipeIdentity, tuning: &TransportTuning) -> Endpoint {
    let config = tls::server_config(identity, tuning).expect("server config");
    Endpoint::server(config, "127.0.0.1:0".parse().expect("literal address")).expect("endpoint")
}

fn addr(endpoint: &Endpoint) -> SocketAddr {
    endpoint.local_addr().expect("bound endpoint")
}

/// What each end of one dial ended with.
struct Dial {
    client: Result<Connection, ConnectionError>,
    server: Result<Connection, ConnectionError>,
}

/// `from` (with `identity`) dials the node expected to be `expected` at `to`'s address, while
/// `to` accepts; both sides are driven together.
async fn dial(
    from: &Endpoint,
    identity: &PipeIdentity,
    expected: &str,
    to: &Endpoint,
    tuning: &TransportTuning,
) -> Dial {
    dial_addr(from, identity, expected, to, addr(to), tuning).await
}

async fn dial_addr(
    from: &Endpoint,
    identity: &PipeIdentity,
    expected: &str,
    to: &Endpoint,
    target: SocketAddr,
    tuning: &TransportTuning,
) -> Dial {
    let connecting = tls::connect(from, identity, expected, tuning, target).expect("dial starts");
    let accept = async {
        let incoming = to.accept().await.expect("endpoint open");
        incoming.await
    };
    let (client, server) = tokio::join!(connecting, accept);
    Dial { client, server }
}

/// Asserts that a dial failed on both ends. The client side of a TLS 1.3 handshake completes
/// before the server has judged the client certificate, so a refused client may first see an
/// established connection that the server then closes: wait for that close.
async fn assert_refused(dial: Dial) {
    let server_err = dial.server.expect_err("server must refuse the connection");
    eprintln!("server side: {server_err}");
    match dial.client {
        Err(e) => eprintln!("client side: {e}"),
        Ok(conn) => {
            let reason = conn.closed().await;
            eprintln!("client side (closed after handshake): {reason}");
            assert!(
                !matches!(reason, ConnectionError::LocallyClosed),
                "client connection must be closed by the server"
            );
        }
    }
}

/// Sends a datagram each way and a stream message round trip over an established pipe.
async fn exchange(client: &Connection, server: &Connection) {
    client
        .send_datagram(Bytes::from_static(b"dgram to server"))
        .expect("datagrams enabled");
    assert_eq!(
        server.read_datagram().await.expect("datagram arrives"),
        Bytes::from_static(b"dgram to server")
    );
    server
        .send_datagram(Bytes::from_static(b"dgram to client"))
        .expect("datagrams enabled");
    assert_eq!(
        client.read_datagram().await.expect("datagram arrives"),
        Bytes::from_static(b"dgram to client")
    );

    let (mut send, mut recv) = client.open_bi().await.expect("open stream");
    send.write_all(b"hello over a stream").await.expect("write");
    send.finish().expect("finish");
    let (mut s_send, mut s_recv) = server.accept_bi().await.expect("accept stream");
    let got = s_recv.read_to_end(1 << 16).await.expect("read request");
    assert_eq!(got, b"hello over a stream");
    s_send.write_all(b"reply").await.expect("write reply");
    s_send.finish().expect("finish reply");
    assert_eq!(
        recv.read_to_end(1 << 16).await.expect("read reply"),
        b"reply"
    );
}

#[tokio::test]
async fn cluster_nodes_connect_both_ways_and_exchange_messages() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let (a_id, b_id) = (identity(&ca, "node-a"), identity(&ca, "node_b"));
        let (a, b) = (endpoint(&a_id, &tuning), endpoint(&b_id, &tuning));

        let ab = dial(&a, &a_id, "node_b", &b, &tuning).await;
        exchange(&ab.client.unwrap(), &ab.server.unwrap()).await;

        let ba = dial(&b, &b_id, "node-a", &a, &tuning).await;
        exchange(&ba.client.unwrap(), &ba.server.unwrap()).await;
    })
    .await
}

#[tokio::test]
async fn peer_node_id_names_the_authenticated_peer_on_both_ends() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let (a_id, b_id) = (identity(&ca, "node-a"), identity(&ca, "10.0.0.2"));
        let (a, b) = (endpoint(&a_id, &tuning), endpoint(&b_id, &tuning));

        let d = dial(&a, &a_id, "10.0.0.2", &b, &tuning).await;
        let (client, server) = (d.client.unwrap(), d.server.unwrap());
        assert_eq!(tls::peer_node_id(&client).unwrap(), "10.0.0.2");
        assert_eq!(tls::peer_node_id(&server).unwrap(), "node-a");
        assert_eq!(
            client.handshake_data().and_then(|h| {
                h.downcast::<quinn::crypto::rustls::HandshakeData>()
                    .ok()
                    .and_then(|h| h.protocol)
            }),
            Some(tls::ALPN.to_vec())
        );
    })
    .await
}

#[tokio::test]
async fn client_with_certificate_from_another_ca_is_refused() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let rogue_ca = certs::generate_ca("rogue").unwrap();
        let rogue_node = certs::generate_node_cert(&rogue_ca, "node-x", &[]).unwrap();
        let server = endpoint(&identity(&ca, "node-a"), &tuning);
        let rogue = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

        // Sanity: the hand-built client does accept the real server when it presents a
        // certificate of the real CA, so the refusal below is the server's doing.
        let member = certs::generate_node_cert(&ca, "node-y", &[]).unwrap();
        let connecting = rogue
            .connect_with(rogue_client_config(&ca, &member), addr(&server), "node-a")
            .unwrap();
        let (client, accepted) =
            tokio::join!(connecting, async { server.accept().await.unwrap().await });
        assert_eq!(tls::peer_node_id(&accepted.unwrap()).unwrap(), "node-y");
        drop(client);

        let connecting = rogue
            .connect_with(
                rogue_client_config(&ca, &rogue_node),
                addr(&server),
                "node-a",
            )
            .unwrap();
        let (client, server_side) =
            tokio::join!(connecting, async { server.accept().await.unwrap().await });
        assert_refused(Dial {
            client,
            server: server_side,
        })
        .await;
    })
    .await
}

#[tokio::test]
async fn server_with_certificate_from_another_ca_is_refused() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let rogue_ca = certs::generate_ca("rogue").unwrap();
        let client_id = identity(&ca, "node-a");
        let rogue_server_id = identity(&rogue_ca, "node-b");
        let client = endpoint(&client_id, &tuning);
        let rogue_server = endpoint(&rogue_server_id, &tuning);

        let d = dial(&client, &client_id, "node-b", &rogue_server, &tuning).await;
        let err = d.client.expect_err("client must refuse the server");
        eprintln!("client side: {err}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        assert!(
            d.server.is_err(),
            "the aborted handshake fails on the server too"
        );
    })
    .await
}

#[tokio::test]
async fn server_presenting_another_nodes_certificate_is_refused() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let client_id = identity(&ca, "node-a");
        // A genuine cluster member, node-c, answers where node-b was expected.
        let impostor_id = identity(&ca, "node-c");
        let client = endpoint(&client_id, &tuning);
        let impostor = endpoint(&impostor_id, &tuning);

        let d = dial(&client, &client_id, "node-b", &impostor, &tuning).await;
        let err = d
            .client
            .expect_err("client must refuse node-c posing as node-b");
        eprintln!("client side: {err}");
        assert!(
            err.to_string().contains("node-c"),
            "reason names the impostor: {err}"
        );
        assert!(d.server.is_err());

        // The same server is accepted when node-c is what was dialed.
        let ok = dial(&client, &client_id, "node-c", &impostor, &tuning).await;
        assert_eq!(tls::peer_node_id(&ok.client.unwrap()).unwrap(), "node-c");
    })
    .await
}

#[tokio::test]
async fn insecure_nodes_connect() {
    bounded(async {
        let tuning = TransportTuning::default();
        let a_id = PipeIdentity::insecure("local-a").unwrap();
        let b_id = PipeIdentity::insecure("local-b").unwrap();
        let (a, b) = (endpoint(&a_id, &tuning), endpoint(&b_id, &tuning));

        let d = dial(&a, &a_id, "local-b", &b, &tuning).await;
        let (client, server) = (d.client.unwrap(), d.server.unwrap());
        exchange(&client, &server).await;
        // Still TLS: the client sees the server's (self-signed, unverified) certificate; the
        // server asked for none.
        assert_eq!(tls::peer_node_id(&client).unwrap(), "local-b");
        assert!(matches!(
            tls::peer_node_id(&server),
            Err(tls::TlsError::NoPeerCertificate)
        ));
    })
    .await
}

#[tokio::test]
async fn insecure_and_secure_nodes_never_connect() {
    bounded(async {
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let secure_id = identity(&ca, "node-a");
        let insecure_id = PipeIdentity::insecure("node-b").unwrap();
        let secure = endpoint(&secure_id, &tuning);
        let insecure = endpoint(&insecure_id, &tuning);

        // Secure client: the self-signed server certificate does not chain to the CA.
        let d = dial(&secure, &secure_id, "node-b", &insecure, &tuning).await;
        assert!(d.client.is_err());
        assert!(d.server.is_err());

        // Insecure client: it accepts the server, but the server refuses its certificate.
        let d = dial(&insecure, &insecure_id, "node-a", &secure, &tuning).await;
        assert_refused(d).await;
    })
    .await
}

/// Hostile datagrams: random bytes of many sizes, and packets whose first byte claims a QUIC
/// long header (Initial, Handshake, Retry) or a short header, with garbage after it.
fn garbage(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 3]];
    for len in [1usize, 5, 21, 40, 64, 200, 1200, 1350] {
        let mut v = vec![0u8; len];
        rng.fill(&mut v[..]);
        out.push(v.clone());
        for first in [0xc0u8, 0xe0, 0xf0, 0x40, 0x5f] {
            if let Some(b) = v.first_mut() {
                *b = first;
            }
            // QUIC version 1 after a long-header first byte.
            if first & 0x80 != 0 && v.len() >= 5 {
                v[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            out.push(v.clone());
        }
    }
    out
}

#[tokio::test]
async fn garbage_datagrams_do_not_break_an_established_pipe() {
    bounded(async {
        let seed = 0x9e3779b97f4a7c15;
        eprintln!("garbage seed {seed:#x}");
        let tuning = TransportTuning::default();
        let ca = certs::generate_ca("test").unwrap();
        let (a_id, b_id) = (identity(&ca, "node-a"), identity(&ca, "node-b"));
        let (a, b) = (endpoint(&a_id, &tuning), endpoint(&b_id, &tuning));
        let d = dial(&a, &a_id, "node-b", &b, &tuning).await;
        let (client, server) = (d.client.unwrap(), d.server.unwrap());
        exchange(&client, &server).await;

        let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for packet in garbage(seed) {
            attacker.send_to(&packet, addr(&b)).await.unwrap();
            attacker.send_to(&packet, addr(&a)).await.unwrap();
        }

        // The pipe still carries traffic both ways, and neither end saw a close.
        exchange(&client, &server).await;
        assert!(client.close_reason().is_none());
        assert!(server.close_reason().is_none());
        // And the server still accepts new pipes.
        let c_id = identity(&ca, "node-c");
        let c = endpoint(&c_id, &tuning);
        let d = dial(&c, &c_id, "node-b", &b, &tuning).await;
        exchange(&d.client.unwrap(), &d.server.unwrap()).await;
    })
    .await
}

/// A UDP relay between one client and `server`: the test stops it to make the client vanish
/// without a CONNECTION_CLOSE ever reaching the server.
async fn relay(server: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let to = if from == server {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let _ = socket.send_to(&buf[..n], to).await;
        }
    });
    (local, task)
}

#[tokio::test]
async fn idle_timeout_closes_a_pipe_whose_peer_vanished() {
    bounded(async {
        let tuning = TransportTuning {
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(2),
            ..TransportTuning::default()
        };
        let ca = certs::generate_ca("test").unwrap();
        let (a_id, b_id) = (identity(&ca, "node-a"), identity(&ca, "node-b"));
        let (a, b) = (endpoint(&a_id, &tuning), endpoint(&b_id, &tuning));
        let (relay_addr, relay_task) = relay(addr(&b)).await;

        let d = dial_addr(&a, &a_id, "node-b", &b, relay_addr, &tuning).await;
        let (client, server) = (d.client.unwrap(), d.server.unwrap());
        exchange(&client, &server).await;

        // The peer vanishes: its path goes dark, then its connection and endpoint are dropped
        // (their CONNECTION_CLOSE goes nowhere).
        relay_task.abort();
        let _ = relay_task.await;
        let vanished = Instant::now();
        drop(client);
        drop(a);

        let deadline = tuning.idle_timeout + Duration::from_secs(2);
        let reason = tokio::time::timeout(deadline, server.closed())
            .await
            .expect("server must close the pipe within about the idle timeout");
        let elapsed = vanished.elapsed();
        eprintln!("closed after {elapsed:?}: {reason}");
        assert!(matches!(reason, ConnectionError::TimedOut), "{reason}");
        // Keep-alives kept it open until the peer vanished, so it cannot close much earlier
        // than one idle timeout after the last packet heard.
        assert!(
            elapsed + tuning.keep_alive + Duration::from_millis(200) >= tuning.idle_timeout,
            "closed too early: {elapsed:?}"
        );
    })
    .await
}

#[tokio::test]
async fn identities_load_from_files_written_by_the_certs_command() {
    bounded(async {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pipe_tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        certs::run(CertsArgs {
            out: dir.clone(),
            cluster: Some("files".into()),
            ca_cert: None,
            ca_key: None,
            extra_sans: vec!["127.0.0.1".into()],
            days: 30,
            ca_days: 365,
            force: false,
            node_ids: vec!["node-a".into(), "node_b".into()],
        })
        .unwrap();
        let load = |id: &str| {
            PipeIdentity::from_files(
                id,
                dir.join("ca.pem"),
                dir.join(format!("{id}.pem")),
                dir.join(format!("{id}.key")),
            )
            .unwrap()
        };
        let tuning = TransportTuning::default();
        let (a_id, b_id) = (load("node-a"), load("node_b"));
        let (a, b) = (endpoint(&a_id, &tuning), endpoint(&b_id, &tuning));
        let d = dial(&a, &a_id, "node_b", &b, &tuning).await;
        assert_eq!(tls::peer_node_id(&d.server.unwrap()).unwrap(), "node-a");
        assert_eq!(tls::peer_node_id(&d.client.unwrap()).unwrap(), "node_b");

        // A wrong file gives an error that names it.
        let err = PipeIdentity::from_files(
            "node-a",
            dir.join("ca.pem"),
            dir.join("missing.pem"),
            dir.join("node-a.key"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}
