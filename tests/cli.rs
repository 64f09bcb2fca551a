//! The operator CLI (`pipemesh nodes`, `rooms`, `topology`, `drain`, `undrain`) run as the real
//! binary against a real etcd and real node processes: JSON output parsed, table headers
//! checked, the mesh's links with live figures, drain and undrain confirmed by the node, nodes
//! whose admin endpoint does not answer (or refuses) shown as such, exit codes and one-line
//! errors (not found, etcd unreachable, usage).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::process::NodeProcess;
use common::{join, WAIT};
use pipemesh::bot::client::{Bot, BotOptions};
use serde_json::Value;

/// Node load figures are refreshed every 5 s: how long to poll for them.
const LOAD_WAIT: Duration = Duration::from_secs(20);

/// What one run of the CLI gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `pipemesh <args>` against `etcd` (cluster "test").
async fn cli(etcd: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipemesh"))
        .args(args)
        .arg(format!("--etcd-endpoints={etcd}"))
        .arg("--cluster=test")
        .env_remove("PIPEMESH_CLUSTER")
        .output()
        .await
        .expect("run pipemesh");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `args` with `--output json` until `pred` holds for the output (panics past `within`);
/// the output that satisfied it.
async fn poll_json(
    etcd: &str,
    args: &[&str],
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut args = args.to_vec();
    args.push("--output=json");
    loop {
        let v = cli(etcd, &args).await.json();
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "pipemesh {args:?}: {v:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The link between `a` and `b` in `topology --output json`.
fn link<'a>(topology: &'a Value, a: &str, b: &str) -> &'a Value {
    topology["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["a"] == a && l["b"] == b))
        .unwrap_or(&Value::Null)
}

/// The link carries media from `a` to `b`: up, measured, `streams` producers piped.
fn carries(topology: &Value, a: &str, b: &str, streams: u64) -> bool {
    let l = link(topology, a, b);
    l["up"] == true
        && l["rttMs"].as_f64().is_some_and(|r| r >= 0.0)
        && l["aToB"]["bitrateBps"].as_u64().is_some_and(|b| b > 0)
        && l["aToB"]["streams"] == streams
        && l["aToB"]["streamsReceived"] == streams
        && l["reportedBy"] == serde_json::json!([a, b])
}

/// An admin endpoint that answers every request with 401, handing over each request's head.
async fn refusing_admin() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = s
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, rx)
}

fn node<'a>(nodes: &'a Value, id: &str) -> &'a Value {
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["nodeId"] == id))
        .unwrap_or(&Value::Null)
}

async fn publisher(node: &NodeProcess, room: &str, peer: &str) -> Bot {
    let mut o = BotOptions::new(&node.url(), room, peer);
    o.consume = false;
    join(o).await
}

async fn consumer(node: &NodeProcess, room: &str, peer: &str) -> Bot {
    let mut o = BotOptions::new(&node.url(), room, peer);
    o.audio = false;
    o.video = false;
    join(o).await
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

#[tokio::test]
async fn nodes_rooms_drain_and_undrain_against_a_three_node_cluster() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let etcd = Etcd::start().await;
        let endpoint = etcd.endpoint();
        let ep = endpoint.as_str();
        let regions = [("n1", "eu"), ("n2", "eu"), ("n3", "us")];
        let mut nodes: Vec<NodeProcess> = regions
            .iter()
            .map(|(id, region)| {
                let region = format!("--region={region}");
                NodeProcess::spawn(id, ep, "test", &["--etcd-lease-ttl-secs=3", &region])
            })
            .collect();
        for n in &mut nodes {
            n.wait_ready(Duration::from_secs(20)).await;
        }
        let _p = publisher(&nodes[0], "r", "pub").await;
        let mut c2 = consumer(&nodes[1], "r", "c2").await;
        c2.wait_consumers(2, WAIT).await.expect("c2 consumes pub");
        let mut c3 = consumer(&nodes[2], "r", "c3").await;
        c3.wait_consumers(2, WAIT).await.expect("c3 consumes pub");

        // Topology: regions, and the two links carrying pub's two producers from n1.
        let t = poll_json(ep, &["topology"], LOAD_WAIT, |v| {
            carries(v, "n1", "n2", 2) && carries(v, "n1", "n3", 2)
        })
        .await;
        let grouped: Vec<(String, Vec<String>)> = t["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let nodes = r["nodes"].as_array().unwrap().iter();
                (
                    r["region"].as_str().unwrap().to_owned(),
                    nodes.map(|n| n["nodeId"].as_str().unwrap().to_owned()).collect(),
                )
            })
            .collect();
        assert_eq!(
            grouped,
            [
                ("eu".to_owned(), vec!["n1".to_owned(), "n2".to_owned()]),
                ("us".to_owned(), vec!["n3".to_owned()])
            ],
            "{t:#}"
        );
        assert_eq!(t["unreachable"], serde_json::json!([]), "{t:#}");
        let l = link(&t, "n1", "n2");
        assert_eq!(l["bToA"]["streams"], 0, "{l}");
        assert!(l["aToB"]["lossPercent"].as_f64().is_some(), "{l}");
        let table = cli(ep, &["topology"]).await;
        assert_eq!(table.code, Some(0), "{}", table.stderr);
        assert!(table.stderr.is_empty(), "{}", table.stderr);
        let lines: Vec<&str> = table.stdout.lines().collect();
        assert!(lines[0].starts_with("REGION   NODE   STATE"), "{}", table.stdout);
        assert!(lines[1].starts_with("eu       n1     serving   2 up"), "{}", table.stdout);
        assert!(
            lines.iter().any(|l| l.starts_with("n1   n3   up ") && l.contains(" ms ")),
            "{}",
            table.stdout
        );
        eprintln!("$ pipemesh topology\n{}", table.stdout);
        let dot = cli(ep, &["topology", "--output=dot"]).await;
        assert_eq!(dot.code, Some(0), "{}", dot.stderr);
        let dot = dot.stdout;
        assert!(dot.starts_with("graph ") || dot.starts_with("digraph "), "{dot}");
        assert!(dot.contains("cluster_eu") && dot.contains("cluster_us"), "{dot}");
        assert!(dot.contains(r#""n1" -- "n2""#), "{dot}");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
        if let Ok(out) = std::process::Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(dot.as_bytes())?;
                child.wait()
            })
        {
            assert!(out.success(), "graphviz rejects:\n{dot}");
        }

        // Nodes: ids, regions, states; load figures once the nodes have refreshed them.
        poll_json(ep, &["nodes"], LOAD_WAIT, |v| {
            node(v, "n1")["producers"] == 2
                && node(v, "n1")["peers"] == 1
                && node(v, "n1")["pipeLinks"] == 2
                && node(v, "n2")["consumers"] == 2
        })
        .await;
        // Live figures from each node's /api/v1/node (CPU needs two samples: polled).
        let v = poll_json(ep, &["nodes"], LOAD_WAIT, |v| {
            ["n1", "n2", "n3"]
                .iter()
                .all(|id| node(v, id)["cpuPercent"].as_f64().is_some())
        })
        .await;
        for id in ["n1", "n2", "n3"] {
            let n = node(&v, id);
            assert_eq!(n["live"], true, "{n}");
            assert_eq!(n["adminError"], Value::Null, "{n}");
            assert!(n["transports"].as_u64().is_some(), "{n}");
        }
        assert!(node(&v, "n1")["transports"].as_u64() >= Some(1), "{v:#}");
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["nodeId"].as_str())
            .collect();
        assert_eq!(ids, ["n1", "n2", "n3"]);
        for (id, region) in regions {
            let n = node(&v, id);
            assert_eq!(n["region"], region, "{n}");
            assert_eq!(n["state"], "serving", "{n}");
            assert!(n["signalingUrl"].as_str().unwrap().starts_with("ws://"));
            assert!(n["version"].as_str().unwrap().starts_with("pipemesh"));
        }
        assert_eq!(node(&v, "n1")["pipeLinks"], 2, "{v:#}");

        // Table output: headers and a row.
        let table = cli(ep, &["nodes"]).await;
        assert_eq!(table.code, Some(0), "{}", table.stderr);
        let mut lines = table.stdout.lines();
        let header = lines.next().unwrap();
        for h in [
            "NODE",
            "REGION",
            "STATE",
            "PEERS",
            "TRANSPORTS",
            "PRODUCERS",
            "CPU",
            "UPTIME",
        ] {
            assert!(header.contains(h), "{header}");
        }
        assert!(
            lines.any(|l| l.starts_with("n3 ") && l.contains(" us ") && l.contains("serving")),
            "{}",
            table.stdout
        );
        eprintln!("$ pipemesh nodes\n{}{}", table.stdout, table.stderr);

        // Rooms: r on n1 and n2, with both peers and pub's two producers.
        poll_json(ep, &["rooms"], WAIT, |v| {
            v[0]["room"] == "r" && v[0]["peers"] == 3 && v[0]["producers"] == 2
        })
        .await;
        let rooms = cli(ep, &["rooms", "--output=json"]).await.json();
        assert_eq!(
            rooms[0]["nodes"],
            serde_json::json!(["n1", "n2", "n3"]),
            "{rooms:#}"
        );
        let r = cli(ep, &["rooms", "r", "--output=json"]).await.json();
        let peers: Vec<(String, String)> = r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["peerId"].to_string(), p["nodeId"].to_string()))
            .collect();
        assert_eq!(
            peers,
            [
                (r#""pub""#.into(), r#""n1""#.into()),
                (r#""c2""#.into(), r#""n2""#.into()),
                (r#""c3""#.into(), r#""n3""#.into())
            ],
            "{r:#}"
        );
        let mut kinds: Vec<&str> = r["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["originNodeId"], "n1", "{p}");
                assert_eq!(p["peerId"], "pub", "{p}");
                assert_eq!(p["paused"], false, "{p}");
                p["kind"].as_str().unwrap()
            })
            .collect();
        kinds.sort();
        assert_eq!(kinds, ["audio", "video"]);
        for n in r["nodes"].as_array().unwrap() {
            assert_eq!(n["reachable"], true, "{r:#}");
            assert_eq!(n["adminError"], Value::Null, "{r:#}");
        }
        // Each producer of pub's is consumed on n2 and n3, both through n1's links.
        for p in r["producers"].as_array().unwrap() {
            assert_eq!(
                p["consumedOn"],
                serde_json::json!([
                    {"nodeId": "n2", "via": "n1", "consumers": 1},
                    {"nodeId": "n3", "via": "n1", "consumers": 1}
                ]),
                "{p}"
            );
            assert_eq!(p["pipedTo"], serde_json::json!(["n2", "n3"]), "{p}");
            assert!(!p["layers"].as_array().unwrap().is_empty(), "{p}");
        }
        assert_eq!(r["peers"][0]["producers"], 2, "{r:#}");
        let detail = cli(ep, &["rooms", "r"]).await;
        assert_eq!(detail.code, Some(0), "{}", detail.stderr);
        assert!(detail.stdout.contains("CONSUMED ON"), "{}", detail.stdout);
        eprintln!("$ pipemesh rooms r\n{}{}", detail.stdout, detail.stderr);
        let missing = cli(ep, &["rooms", "nosuch"]).await;
        assert_eq!(missing.code, Some(1));
        assert_eq!(
            one_line(&missing.stderr),
            "pipemesh: error: no room nosuch in cluster test"
        );

        // Drain: exits once n1 reports draining; nodes shows it with the deadline.
        let t = Instant::now();
        let drain = cli(ep, &["drain", "n1", "--deadline=10m", "--reason=test"]).await;
        assert_eq!(drain.code, Some(0), "{}", drain.stderr);
        assert!(drain.stderr.contains("waiting for n1 to report draining"));
        assert!(
            drain.stdout.contains("node n1 is draining"),
            "{}",
            drain.stdout
        );
        eprintln!("drain confirmed after {:?}", t.elapsed());
        let v = cli(ep, &["nodes", "-o", "json"]).await.json();
        let n1 = node(&v, "n1");
        assert_eq!(n1["state"], "draining", "{n1}");
        assert_eq!(n1["drainRequested"], true, "{n1}");
        assert_eq!(n1["drainReason"], "test", "{n1}");
        assert!(n1["drainDeadlineMs"].as_u64().is_some(), "{n1}");
        assert_eq!(node(&v, "n2")["state"], "serving");

        let undrain = cli(ep, &["undrain", "n1", "-o", "json"]).await;
        let out = undrain.json();
        assert_eq!(out["state"], "serving", "{out}");
        let v = cli(ep, &["nodes", "-o", "json"]).await.json();
        assert_eq!(node(&v, "n1")["state"], "serving");
        assert_eq!(node(&v, "n1")["drainRequested"], false);

        let nosuch = cli(ep, &["drain", "nosuch"]).await;
        assert_eq!(nosuch.code, Some(1));
        assert_eq!(
            one_line(&nosuch.stderr),
            "pipemesh: error: no node nosuch in cluster test"
        );
        assert!(etcd
            .get_base64("/pipemesh/test/drain/nosuch")
            .await
            .is_none());

        // Nodes whose admin endpoint does not answer in time (n4: a listener that never
        // replies), is not there (n5: a closed port) or refuses the token (n6): shown as
        // such, each with a warning, and the command still succeeds.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = common::etcd::free_addr();
        let (refusing, mut heads) = refusing_admin().await;
        for (id, admin) in [
            ("n4", silent.local_addr().unwrap()),
            ("n5", closed),
            ("n6", refusing),
        ] {
            let record = format!(
                r#"{{"nodeId":"{id}","region":"us","signalingUrl":"ws://{admin}","adminUrl":"http://{admin}"}}"#
            );
            etcd.put(&format!("/pipemesh/test/nodes/{id}"), record.as_bytes())
                .await;
        }
        let token = std::env::temp_dir().join(format!("pipemesh-cli-token-{}", std::process::id()));
        std::fs::write(&token, "t0k3n\n").unwrap();
        let token_flag = format!("--admin-token-file={}", token.display());
        let t0 = Instant::now();
        let run = cli(ep, &["topology", "-o", "json", "--timeout=1s", &token_flag]).await;
        let took = t0.elapsed();
        let t = run.json();
        let unreachable: Vec<(&str, &str)> = t["unreachable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["nodeId"].as_str().unwrap(), u["error"].as_str().unwrap()))
            .collect();
        assert_eq!(unreachable.len(), 3, "{t:#}");
        assert_eq!(unreachable[0], ("n4", "unreachable: no answer within 1s"));
        assert_eq!(unreachable[1].0, "n5");
        assert!(unreachable[1].1.starts_with("unreachable: "), "{t:#}");
        assert_eq!(unreachable[2], ("n6", "unauthorized (check --admin-token-file)"));
        assert!(carries(&t, "n1", "n2", 2), "{t:#}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        for (id, _) in &unreachable {
            assert!(
                run.stderr.contains(&format!("pipemesh: warning: {id}: ")),
                "{}",
                run.stderr
            );
        }
        let head = heads.recv().await.expect("n6 asked");
        assert!(head.starts_with("GET /api/v1/links HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nauthorization: bearer t0k3n\r\n"),
            "{head}"
        );
        let table = cli(ep, &["topology", "--timeout=1s"]).await;
        assert_eq!(table.code, Some(0), "{}", table.stderr);
        for row in ["us       n4     unreachable", "us       n6     unauthorized"] {
            assert!(table.stdout.contains(row), "{}", table.stdout);
        }
        eprintln!("$ pipemesh topology (with n4-n6 not answering)\n{}{}", table.stdout, table.stderr);
        let run = cli(ep, &["nodes", "-o", "json", "--timeout=1s", &token_flag]).await;
        let v = run.json();
        for id in ["n1", "n2", "n3"] {
            assert_eq!(node(&v, id)["reachable"], true, "{v:#}");
        }
        let n4 = node(&v, "n4");
        assert_eq!(n4["reachable"], false, "{n4}");
        assert_eq!(n4["live"], false, "{n4}");
        assert_eq!(n4["state"], "serving", "{n4}");
        assert_eq!(n4["adminError"], "unreachable: no answer within 1s", "{n4}");
        assert_eq!(node(&v, "n6")["reachable"], true, "{v:#}");
        assert!(
            run.stderr
                .contains("pipemesh: warning: n6: unauthorized (check --admin-token-file)"),
            "{}",
            run.stderr
        );
        let table = cli(ep, &["nodes", "--timeout=1s"]).await;
        assert_eq!(table.code, Some(0), "{}", table.stderr);
        for row in ["n4     us       unreachable", "n6     us       unauthorized"] {
            assert!(table.stdout.contains(row), "{}", table.stdout);
        }
        eprintln!("$ pipemesh nodes (with n4-n6 not answering)\n{}{}", table.stdout, table.stderr);
        std::fs::remove_file(&token).unwrap();
        let _ = (&silent, &mut c3);
    })
    .await
    .expect("test exceeded its deadline");
}

#[tokio::test]
async fn usage_errors_exit_2_before_anything_is_done() {
    // No etcd is needed: both are refused before connecting.
    let closed = common::etcd::free_addr();
    let etcd = format!("http://{closed}");
    for args in [
        &["nodes", "-o", "dot"][..],
        &["rooms", "--output=dot"],
        &["drain", "n1", "-o", "dot"],
    ] {
        let run = cli(&etcd, args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(
            one_line(&run.stderr),
            "pipemesh: error: --output dot is only for `pipemesh topology`; use table or json"
        );
    }
    let run = cli(
        &etcd,
        &["topology", "--admin-token-file=/nonexistent/token"],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        one_line(&run.stderr)
            .starts_with("pipemesh: error: cannot read --admin-token-file /nonexistent/token: "),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn an_unreachable_etcd_is_one_line_and_exit_code_3_within_seconds() {
    // A port nothing listens on.
    let closed = common::etcd::free_addr();
    let t = Instant::now();
    let run = cli(&format!("http://{closed}"), &["nodes"]).await;
    let took = t.elapsed();
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let line = one_line(&run.stderr);
    assert!(
        line.starts_with(&format!(
            "pipemesh: error: cannot reach etcd at http://{closed}: "
        )),
        "{line}"
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("unreachable etcd reported after {took:?}: {line}");
}
