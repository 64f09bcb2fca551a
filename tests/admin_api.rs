//! The node admin API the operator CLI reads: `GET /api/v1/node` and `GET /api/v1/rooms/{room}`
//! on three real node processes sharing a room through etcd (a publisher on n1, consumers on n2
//! and n3), and the bearer token: from `PIPEMESH_ADMIN_TOKEN` on those processes, from
//! `--admin-token-file` on an in-process node (every route but the probes guarded), and a node
//! that refuses to start on an empty or unreadable token file.
//!
//! Every test is bounded; waits re-read the endpoints until a condition holds.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::etcd::Etcd;
use common::process::NodeProcess;
use common::{join, publisher, subscriber, TestNode, WAIT};
use pipemesh::bot::client::BotOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound on one test.
const TEST_DEADLINE: Duration = Duration::from_secs(50);
/// `cpuPercent` needs two samples 5 s apart.
const CPU_WAIT: Duration = Duration::from_secs(15);

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The value of a response header (name in lower case).
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// `GET path` on an admin listener, with `Authorization: <auth>` when given.
async fn get(admin: SocketAddr, path: &str, auth: Option<&str>) -> Answer {
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin reachable");
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request sent");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("response read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `GET path` with the bearer token, expecting 200 and JSON.
async fn get_json(admin: SocketAddr, path: &str, token: &str) -> Value {
    let a = get(admin, path, Some(&format!("Bearer {token}"))).await;
    assert_eq!(a.status, 200, "GET {path}: {}", a.body);
    a.json()
}

/// Re-reads `path` until `ok` holds for it (at most `within`).
async fn wait_json(
    admin: SocketAddr,
    path: &str,
    token: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let v = get_json(admin, path, token).await;
        if ok(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} on {admin}: {what} never held: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn producers(room: &Value) -> &Vec<Value> {
    room["producers"].as_array().expect("producers array")
}

fn kinds(room: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = producers(room)
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    k.sort_unstable();
    k
}

/// `room` lists pub's audio and video, piped in `via` that node (its origin too), each with
/// one active encoding and one accepted (not paused) consumer of `consumer`.
fn piped_in_and_consumed(room: &Value, via: &str, consumer: &str) -> bool {
    kinds(room) == ["audio", "video"]
        && producers(room).iter().all(|p| {
            p["peerId"] == "pub"
                && p["local"] == false
                && p["via"] == via
                && p["originNodeId"] == via
                && p["layers"]
                    .as_array()
                    .is_some_and(|l| l.len() == 1 && l[0]["active"] == true)
                && p["consumers"].as_array().is_some_and(|c| {
                    c.len() == 1 && c[0]["peerId"] == consumer && c[0]["paused"] == false
                })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_node_reports_on_three_nodes_behind_an_environment_token() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let token = "admin-test-token";
        let etcd = Etcd::start().await;
        let endpoint = etcd.endpoint();
        let mut nodes: Vec<NodeProcess> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| {
                NodeProcess::spawn_with_env(
                    id,
                    &endpoint,
                    "test",
                    &["--etcd-lease-ttl-secs=3", "--region=eu"],
                    &[("PIPEMESH_ADMIN_TOKEN", token)],
                )
            })
            .collect();
        for n in &mut nodes {
            n.wait_ready(Duration::from_secs(20)).await;
        }
        let (n1, n2, n3) = (nodes[0].admin, nodes[1].admin, nodes[2].admin);

        let mk = |n: &NodeProcess, peer: &str| BotOptions {
            display_name: peer.to_uppercase(),
            ..BotOptions::new(&n.url(), "r", peer)
        };
        let publisher_bot = join(publisher(mk(&nodes[0], "pub"), true, true)).await;
        let mut c2 = join(subscriber(mk(&nodes[1], "c2"))).await;
        let mut c3 = join(subscriber(mk(&nodes[2], "c3"))).await;
        c2.wait_consumers(2, WAIT).await.expect("c2 consumes pub");
        c3.wait_consumers(2, WAIT).await.expect("c3 consumes pub");

        // n2 and n3: pub's audio and video, piped in from n1, consumed by their local peer.
        for (admin, me, consumer) in [(n2, "n2", "c2"), (n3, "n3", "c3")] {
            let r = wait_json(admin, "/api/v1/rooms/r", token, WAIT, "piped in", |r| {
                piped_in_and_consumed(r, "n1", consumer)
            })
            .await;
            eprintln!("{me}: {r:#}");
            assert_eq!(r["nodeId"], me);
            assert_eq!(r["room"], "r");
            let peers = r["peers"].as_array().expect("peers");
            assert_eq!(peers.len(), 1, "local peers only: {r}");
            assert_eq!(peers[0]["peerId"], consumer);
            assert_eq!(peers[0]["displayName"], consumer.to_uppercase());
            assert_eq!(peers[0]["transports"], 1);
            assert_eq!(peers[0]["producers"], 0);
            assert_eq!(peers[0]["consumers"], 2);
            for p in producers(&r) {
                assert_eq!(p["pipedTo"], serde_json::json!([]), "{p}");
                assert_eq!(p["paused"], false, "{p}");
                let layer = &p["layers"][0];
                assert!(layer["rid"].is_null(), "not simulcast: {layer}");
                assert!(layer["ssrc"].is_u64(), "{layer}");
                assert!(layer["bitrateBps"].is_u64(), "{layer}");
                let c = &p["consumers"][0];
                assert!(c["consumerId"].is_string(), "{c}");
                assert!(
                    c["spatialLayer"].is_null() && c["temporalLayer"].is_null(),
                    "{c}"
                );
            }
        }

        // n1: the same two producers, local, piped to n2 and n3.
        let r = wait_json(
            n1,
            "/api/v1/rooms/r",
            token,
            WAIT,
            "piped to n2 and n3",
            |r| {
                kinds(r) == ["audio", "video"]
                    && producers(r)
                        .iter()
                        .all(|p| p["pipedTo"] == serde_json::json!(["n2", "n3"]))
            },
        )
        .await;
        eprintln!("n1: {r:#}");
        let far = get_json(n2, "/api/v1/rooms/r", token).await;
        for p in producers(&r) {
            assert_eq!(p["local"], true, "{p}");
            assert!(p["via"].is_null(), "{p}");
            assert_eq!(p["originNodeId"], "n1", "{p}");
            assert_eq!(p["peerId"], "pub", "{p}");
            assert_eq!(p["consumers"], serde_json::json!([]), "{p}");
            assert_eq!(p["layers"][0]["active"], true, "{p}");
            // The same producer ids on both nodes.
            assert!(
                producers(&far)
                    .iter()
                    .any(|q| q["producerId"] == p["producerId"] && q["kind"] == p["kind"]),
                "{p} not on n2: {far}"
            );
        }
        let peers = r["peers"].as_array().expect("peers");
        assert_eq!(peers.len(), 1, "{r}");
        assert_eq!(
            (&peers[0]["peerId"], &peers[0]["producers"]),
            (&Value::from("pub"), &Value::from(2))
        );

        // /api/v1/node: the counts match what the room reports show.
        for (admin, me, transports, producers_, consumers, links) in [
            (n1, "n1", 1, 2, 0, 2),
            (n2, "n2", 1, 0, 2, 1),
            (n3, "n3", 1, 0, 2, 1),
        ] {
            let v = wait_json(
                admin,
                "/api/v1/node",
                token,
                CPU_WAIT,
                "a CPU figure",
                |v| v["cpuPercent"].is_number(),
            )
            .await;
            eprintln!("{me}: {v}");
            assert_eq!(v["nodeId"], me);
            assert_eq!(v["region"], "eu");
            assert_eq!(v["state"], "serving");
            assert_eq!(
                v["software"],
                format!("pipemesh {}", env!("CARGO_PKG_VERSION"))
            );
            let cpu = v["cpuPercent"].as_f64().expect("cpuPercent");
            let cores = v["cpuCores"].as_u64().expect("cpuCores");
            assert!(cores >= 1, "{v}");
            assert!(cpu >= 0.0 && cpu <= 100.0 * cores as f64 + 10.0, "{v}");
            assert!(v["rssBytes"].as_u64().is_some_and(|b| b > 1 << 20), "{v}");
            assert!(
                v["startedAtMs"]
                    .as_u64()
                    .is_some_and(|t| t > 1_600_000_000_000),
                "{v}"
            );
            assert!(v["uptimeSecs"].as_u64().is_some_and(|s| s < 60), "{v}");
            assert_eq!(v["sessions"], 1, "{v}");
            assert_eq!(v["rooms"], 1, "{v}");
            assert_eq!(v["peers"], 1, "{v}");
            assert_eq!(v["transports"], transports, "{v}");
            assert_eq!(v["producers"], producers_, "{v}");
            assert_eq!(v["consumers"], consumers, "{v}");
            // Links up: at least those the room needs (n1 to each consumer's node).
            let up = v["pipeLinks"].as_u64().expect("pipeLinks");
            assert!(up >= links, "{v}");
            let listed = get_json(admin, "/api/v1/links", token).await;
            let listed_up = listed["links"]
                .as_array()
                .expect("links")
                .iter()
                .filter(|l| l["up"] == true)
                .count() as u64;
            assert_eq!(up, listed_up, "{v} vs {listed}");
        }

        // A room the node has nothing of, and an invalid room id.
        let a = get(n2, "/api/v1/rooms/nope", Some(&format!("Bearer {token}"))).await;
        assert_eq!(a.status, 404, "{}", a.body);
        assert_eq!(
            a.json()["error"],
            "room \"nope\" has no peers or streams on node n2"
        );
        let long = "x".repeat(257);
        let a = get(
            n2,
            &format!("/api/v1/rooms/{long}"),
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_eq!(a.status, 400, "{}", a.body);

        // The token from the environment guards the node; the probes stay open.
        for auth in [None, Some("Bearer wrong-token"), Some(token)] {
            let a = get(n2, "/api/v1/node", auth).await;
            assert_eq!(a.status, 401, "{auth:?}: {}", a.body);
            assert!(a.json()["error"].is_string());
        }
        assert_eq!(get(n2, "/healthz", None).await.status, 200);
        assert_eq!(get(n2, "/readyz", None).await.status, 200);

        // The consumers leave n3: it has nothing of the room any more.
        c3.close().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let a = get(n3, "/api/v1/rooms/r", Some(&format!("Bearer {token}"))).await;
            if a.status == 404 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}", a.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c2.close().await;
        publisher_bot.close().await;
    })
    .await
    .expect("test exceeded its deadline");
}

/// Every admin route, and whether the token guards it.
const ROUTES: [(&str, bool); 8] = [
    ("/healthz", false),
    ("/readyz", false),
    ("/cluster", true),
    ("/api/v1/node", true),
    ("/api/v1/rooms/r", true),
    ("/api/v1/rooms/r/assign", true),
    ("/api/v1/links", true),
    ("/metrics", true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_guards_every_route_but_the_probes() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = std::env::temp_dir().join(format!("pipemesh-admin-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "file-token-123\n").expect("token file");
        let node = TestNode::start_with(|c| c.admin_token_file = Some(file.clone())).await;
        let admin = node.addrs.admin;
        // A room for /api/v1/rooms/r to find.
        let bot = join(subscriber(node.bot("r", "solo"))).await;

        for (path, guarded) in ROUTES {
            for auth in [
                None,
                Some("Bearer wrong"),
                Some("Basic file-token-123"),
                Some("Bearer file-token-1234"),
            ] {
                let a = get(admin, path, auth).await;
                if !guarded {
                    assert_eq!(a.status, 200, "{path} is open: {}", a.body);
                    continue;
                }
                assert_eq!(a.status, 401, "{path} with {auth:?}: {}", a.body);
                let challenge = a.header("www-authenticate");
                assert_eq!(challenge.as_deref(), Some("Bearer"), "{path}: {}", a.head);
                assert!(a.json()["error"].is_string(), "{path}: {}", a.body);
            }
            let a = get(admin, path, Some("Bearer file-token-123")).await;
            let ok = if path.ends_with("/assign") {
                // Placement answers (the in-process registry lists this node) or says why not.
                a.status == 200 || a.status == 503
            } else {
                a.status == 200
            };
            assert!(ok, "{path} with the token: {} {}", a.status, a.body);
            // The scheme name is case-insensitive.
            let b = get(admin, path, Some("bearer file-token-123")).await;
            assert_eq!(b.status, a.status, "{path}");
        }
        let v = get_json(admin, "/api/v1/rooms/r", "file-token-123").await;
        assert_eq!(v["peers"][0]["peerId"], "solo", "{v}");

        bot.close().await;
        node.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test exceeded its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_api_is_open() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let node = TestNode::start().await;
        for (path, _) in ROUTES {
            let a = get(node.addrs.admin, path, None).await;
            let ok = match path {
                // No peer here: nothing of room r; placement may have no answer.
                "/api/v1/rooms/r" => a.status == 404,
                "/api/v1/rooms/r/assign" => a.status == 200 || a.status == 503,
                _ => a.status == 200,
            };
            assert!(ok, "{path}: {} {}", a.status, a.body);
        }
        node.stop().await;
    })
    .await
    .expect("test exceeded its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_unreadable_token_file_refuses_to_start() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let dir = std::env::temp_dir().join(format!("pipemesh-admin-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n   \nsecond-line-is-not-read\n").expect("token file");
        let missing = dir.join("missing");
        for (file, says) in [(&empty, "empty"), (&missing, "cannot read")] {
            // The binary: one clear line, exit status 1, before binding anything.
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipemesh"))
                .arg("serve")
                .arg(format!("--admin-token-file={}", file.display()))
                .arg("--admin-listen=127.0.0.1:0")
                .arg("--signaling-listen=127.0.0.1:0")
                .arg("--rtc-listen=127.0.0.1:0")
                .env_remove("PIPEMESH_ADMIN_TOKEN")
                .output()
                .await
                .expect("run pipemesh");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains("admin_token_file") && stderr.contains(says),
                "{stderr}"
            );
            // In process: the node does not start either.
            let r = TestNode::try_start_with(|c| c.admin_token_file = Some(file.clone())).await;
            let err = r.err().expect("refused").to_string();
            assert!(err.contains(says), "{err}");
        }
        // An empty PIPEMESH_ADMIN_TOKEN is refused too (and never echoed).
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipemesh"))
            .args(["serve", "--admin-listen=127.0.0.1:0"])
            .env("PIPEMESH_ADMIN_TOKEN", " ")
            .output()
            .await
            .expect("run pipemesh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("PIPEMESH_ADMIN_TOKEN"), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test exceeded its deadline");
}
