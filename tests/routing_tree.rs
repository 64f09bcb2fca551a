//! Routing with real node processes and etcd: n1 in eu publishes, n3 and n4 in us consume.
//! With `--routing tree` (the default) n1 pipes each producer into us once (to its relay, one
//! of n3/n4 chosen per producer, which pipes it on to the other); with `--routing mesh` n1
//! pipes to both. When a relay drains, the other us node relays; when it dies, the other
//! pipes from n1. Read from
//! `/api/v1/links` (`pipedStreamsOut` / `pipedStreamsIn` per peer).
//!
//! Every test is bounded; waits re-read the endpoint until a condition holds.

mod common;

use std::time::Duration;

use common::etcd::Etcd;
use common::join;
use common::process::{http_get, NodeProcess};
use pipemesh::bot::client::{Bot, BotOptions};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);

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

/// Producers piped from `n` to `peer` (`out`) and from `peer` to `n` (`in`), per `n`'s links.
async fn piped(n: &NodeProcess) -> Vec<(String, u64, u64)> {
    let Some((200, body)) = http_get(n.admin, "/api/v1/links").await else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["peer"].as_str().unwrap_or_default().to_owned(),
                l["pipedStreamsOut"].as_u64().unwrap_or(0),
                l["pipedStreamsIn"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn out_to(links: &[(String, u64, u64)], peer: &str) -> u64 {
    links.iter().find(|l| l.0 == peer).map_or(0, |l| l.1)
}

fn in_from(links: &[(String, u64, u64)], peer: &str) -> u64 {
    links.iter().find(|l| l.0 == peer).map_or(0, |l| l.2)
}

/// Re-reads the links of `nodes` until `ok` holds (panics with them after [`SETTLE`]).
async fn wait_links(
    nodes: &[&NodeProcess],
    what: &str,
    ok: impl Fn(&[Vec<(String, u64, u64)>]) -> bool,
) -> Vec<Vec<(String, u64, u64)>> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(piped(n).await);
        }
        if ok(&all) {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cluster(routing: &str) -> (Etcd, Vec<NodeProcess>) {
    let etcd = Etcd::start().await;
    let ep = etcd.endpoint();
    let mut nodes: Vec<NodeProcess> = [("n1", "eu"), ("n3", "us"), ("n4", "us")]
        .iter()
        .map(|(id, region)| {
            NodeProcess::spawn(
                id,
                &ep,
                "test",
                &[
                    "--etcd-lease-ttl-secs=3",
                    &format!("--region={region}"),
                    &format!("--routing={routing}"),
                ],
            )
        })
        .collect();
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(20)).await;
    }
    (etcd, nodes)
}

#[tokio::test]
async fn tree_pipes_each_producer_into_a_region_once_and_reroutes_when_the_relay_dies() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let (etcd, mut nodes) = cluster("tree").await;
        let _p = publisher(&nodes[0], "r", "pub").await;
        let mut c3 = consumer(&nodes[1], "r", "c3").await;
        let mut c4 = consumer(&nodes[2], "r", "c4").await;
        c3.wait_consumers(2, SETTLE).await.expect("c3 consumes pub");
        c4.wait_consumers(2, SETTLE).await.expect("c4 consumes pub");
        let (n1, n3, n4) = (&nodes[0], &nodes[1], &nodes[2]);
        // Each producer has its own relay (rendezvous hashing on its id): n1 sends each
        // into us once, and the relay of each sends it on to the other us node.
        wait_links(&[n1, n3, n4], "one copy of each producer into us", |l| {
            let into_us = out_to(&l[0], "n3") + out_to(&l[0], "n4");
            let within_us = out_to(&l[1], "n4") + out_to(&l[2], "n3");
            let in3 = in_from(&l[1], "n1") + in_from(&l[1], "n4");
            let in4 = in_from(&l[2], "n1") + in_from(&l[2], "n3");
            into_us == 2 && within_us == 2 && in3 == 2 && in4 == 2
        })
        .await;
        // n4 drains: n3 relays both producers, and pipes them on to n4.
        let drain = tokio::process::Command::new(env!("CARGO_BIN_EXE_pipemesh"))
            .args(["drain", "n4", "--reason=test"])
            .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
            .arg("--cluster=test")
            .env_remove("PIPEMESH_CLUSTER")
            .output()
            .await
            .expect("run pipemesh drain");
        assert!(drain.status.success(), "{drain:?}");
        wait_links(&[n1, n3, n4], "n3 relays both", |l| {
            out_to(&l[0], "n3") == 2
                && out_to(&l[0], "n4") == 0
                && out_to(&l[1], "n4") == 2
                && in_from(&l[2], "n3") == 2
        })
        .await;
        // n3 dies: n4 (draining, but the only one left in us) pipes both from n1.
        nodes[1].kill();
        let (n1, n4) = (&nodes[0], &nodes[2]);
        wait_links(&[n1, n4], "n4 pipes from n1", |l| {
            out_to(&l[0], "n4") == 2 && in_from(&l[1], "n1") == 2
        })
        .await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn mesh_pipes_each_producer_to_every_node() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (_etcd, nodes) = cluster("mesh").await;
        let _p = publisher(&nodes[0], "r", "pub").await;
        let mut c3 = consumer(&nodes[1], "r", "c3").await;
        let mut c4 = consumer(&nodes[2], "r", "c4").await;
        c3.wait_consumers(2, SETTLE).await.expect("c3 consumes pub");
        c4.wait_consumers(2, SETTLE).await.expect("c4 consumes pub");
        let refs: Vec<&NodeProcess> = nodes.iter().collect();
        wait_links(&refs, "n1 pipes to both us nodes", |l| {
            out_to(&l[0], "n3") == 2
                && out_to(&l[0], "n4") == 2
                && out_to(&l[1], "n4") == 0
                && out_to(&l[2], "n3") == 0
        })
        .await;
    })
    .await
    .expect("within the time limit");
}
