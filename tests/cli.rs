//! The operator CLI (`pipemesh nodes`, `rooms`, `drain`, `undrain`) run as the real binary
//! against a real etcd and real node processes: JSON output parsed, table headers checked,
//! drain and undrain confirmed by the node, exit codes and one-line errors (not found, etcd
//! unreachable).

mod common;

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

/// Runs `args` with `--output json` until `pred` holds for the output (panics past `within`).
async fn poll_json(etcd: &str, args: &[&str], within: Duration, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + within;
    let mut args = args.to_vec();
    args.push("--output=json");
    loop {
        let v = cli(etcd, &args).await.json();
        if pred(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "pipemesh {args:?}: {v:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

        // Nodes: ids, regions, states; load figures once the nodes have refreshed them.
        poll_json(ep, &["nodes"], LOAD_WAIT, |v| {
            node(v, "n1")["producers"] == 2
                && node(v, "n1")["peers"] == 1
                && node(v, "n1")["pipeLinks"] == 1
                && node(v, "n2")["consumers"] == 2
        })
        .await;
        let v = cli(ep, &["nodes", "-o", "json"]).await.json();
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
        assert_eq!(node(&v, "n1")["pipeLinks"], 1, "{v:#}");

        // Table output: headers and a row.
        let table = cli(ep, &["nodes"]).await;
        assert_eq!(table.code, Some(0), "{}", table.stderr);
        let mut lines = table.stdout.lines();
        let header = lines.next().unwrap();
        for h in ["NODE", "REGION", "STATE", "PEERS", "PRODUCERS", "UPTIME"] {
            assert!(header.contains(h), "{header}");
        }
        assert!(
            lines.any(|l| l.starts_with("n3 ") && l.contains(" us ") && l.contains("serving")),
            "{}",
            table.stdout
        );

        // Rooms: r on n1 and n2, with both peers and pub's two producers.
        poll_json(ep, &["rooms"], WAIT, |v| {
            v[0]["room"] == "r" && v[0]["peers"] == 2 && v[0]["producers"] == 2
        })
        .await;
        let rooms = cli(ep, &["rooms", "--output=json"]).await.json();
        assert_eq!(
            rooms[0]["nodes"],
            serde_json::json!(["n1", "n2"]),
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
                (r#""c2""#.into(), r#""n2""#.into())
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
    })
    .await
    .expect("test exceeded its deadline");
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
