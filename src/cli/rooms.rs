//! `pipemesh rooms` (one row per room) and `pipemesh rooms ROOM` (its nodes, peers and
//! producers). For one room, each node hosting it is also asked what only it knows
//! (`GET /api/v1/rooms/{room}`): its peers' transports, producers and consumers, each
//! producer's layers and, per producer, which nodes consume it and through which link. A node
//! that does not answer is flagged; what the registry says is shown all the same.

use std::collections::BTreeMap;

use clap::Args;
use serde::{Deserialize, Deserializer, Serialize};

use super::adminapi::{check_node, problems, targets, AdminClient, AdminError, Answer};
use super::etcd::Registry;
use super::snapshot::{RoomEntries, Snapshot};
use super::{block_on, print_json, print_out, render_table, warn_malformed};
use super::{CliError, CommonArgs, Format};
use crate::discovery::keys::encode_segment;
use crate::ids::{NodeId, RoomId};
use crate::router::rtp_parameters::MediaKind;

/// The path asked of a node hosting `room`.
pub fn room_path(room: &str) -> String {
    format!("/api/v1/rooms/{}", encode_segment(room))
}

/// A node's `GET /api/v1/rooms/{room}`, decoded leniently (absent fields are empty).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoomReport {
    /// The node that answered.
    pub node_id: String,
    /// Its peers in the room.
    pub peers: Vec<PeerReport>,
    /// The producers it has in the room: its own and those piped to it.
    pub producers: Vec<ProducerReport>,
}

impl Answer for RoomReport {
    fn answered_by(&self) -> &str {
        &self.node_id
    }
}

/// A peer, as its node reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerReport {
    /// The peer.
    pub peer_id: String,
    /// Its transports (a count, or a list counted).
    #[serde(deserialize_with = "count")]
    pub transports: Option<u64>,
    /// Its producers (a count, or a list counted).
    #[serde(deserialize_with = "count")]
    pub producers: Option<u64>,
    /// Its consumers (a count, or a list counted).
    #[serde(deserialize_with = "count")]
    pub consumers: Option<u64>,
}

/// A producer on one node: its own (`local`), or piped in (`via` the node it comes from).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerReport {
    /// The producer.
    pub producer_id: String,
    /// Its peer.
    pub peer_id: String,
    /// Where it is published.
    pub origin_node_id: String,
    /// Published on the answering node.
    pub local: bool,
    /// The node it is piped from (`None` when local).
    pub via: Option<String>,
    /// Nodes this node pipes it to.
    pub piped_to: Vec<String>,
    /// The way its stream takes to the answering node, origin first (empty when unknown).
    pub path: Vec<String>,
    /// Its encodings.
    pub layers: Vec<LayerReport>,
    /// Its consumers on the answering node.
    pub consumers: Vec<serde_json::Value>,
}

/// One encoding of a producer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LayerReport {
    /// Simulcast id (`None` without simulcast).
    pub rid: Option<String>,
    /// Its SSRC.
    pub ssrc: Option<u32>,
    /// Receiving media lately.
    pub active: Option<bool>,
    /// Its bitrate, when the node measures it.
    pub bitrate_bps: Option<f64>,
}

/// A count given as a number or as a list (whose length counts).
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::Array(a) => u64::try_from(a.len()).ok(),
        _ => None,
    })
}

/// Flags of `pipemesh rooms`.
#[derive(Args, Debug, Clone)]
pub struct RoomsArgs {
    /// Show this room in detail (else: every room, one line each)
    pub room: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One room in the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRow {
    /// The room.
    pub room: String,
    /// Nodes with peers in it (from its host, peer and producer entries).
    pub nodes: Vec<String>,
    /// Peers, on every node.
    pub peers: usize,
    /// Producers, on every node.
    pub producers: usize,
}

/// One room in detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomDetail {
    /// The room.
    pub room: String,
    /// Nodes hosting it.
    pub nodes: Vec<RoomNode>,
    /// Its peers.
    pub peers: Vec<RoomPeer>,
    /// Its producers.
    pub producers: Vec<RoomProducer>,
}

/// A node hosting the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomNode {
    /// The node.
    pub node_id: String,
    /// Since when it hosts the room (Unix milliseconds, its clock); `None` when only its
    /// peers or producers are listed.
    pub since_ms: Option<u64>,
    /// Its admin endpoint answered (`false` until asked).
    pub reachable: bool,
    /// Why its view of the room is missing.
    pub admin_error: Option<String>,
}

/// A peer of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomPeer {
    /// The peer.
    pub peer_id: String,
    /// The node it is connected to.
    pub node_id: String,
    /// Its display name.
    pub display_name: String,
    /// Its transports, per its node.
    pub transports: Option<u64>,
    /// Its producers, per its node.
    pub producers: Option<u64>,
    /// Its consumers, per its node.
    pub consumers: Option<u64>,
}

/// A producer of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomProducer {
    /// The producer.
    pub producer_id: String,
    /// Its peer.
    pub peer_id: String,
    /// The node it is published on.
    pub origin_node_id: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Paused at the origin.
    pub paused: bool,
    /// Its encodings, per its origin (else per a node it is piped to); `None`: unknown.
    pub layers: Option<Vec<Layer>>,
    /// Nodes its origin pipes it to; `None`: unknown (the origin did not answer).
    pub piped_to: Option<Vec<String>>,
    /// Nodes with consumers of it, and the node each gets it from, sorted.
    pub consumed_on: Vec<ConsumedOn>,
    /// Its tree: the path (origin first) to every node that reported one, sorted.
    pub paths: Vec<Vec<String>>,
}

/// One encoding of a producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// Simulcast id (`None` without simulcast).
    pub rid: Option<String>,
    /// Its SSRC.
    pub ssrc: Option<u32>,
    /// Receiving media lately.
    pub active: bool,
    /// Its bitrate, when the node measures it.
    pub bitrate_bps: Option<u64>,
}

/// Consumers of a producer on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumedOn {
    /// The node.
    pub node_id: String,
    /// The node whose link brings the producer there; `None` on the origin itself (or when
    /// the node does not say).
    pub via: Option<String>,
    /// How many consumers.
    pub consumers: u64,
}

/// Every node named by the room's entries, sorted.
fn room_nodes(entries: &RoomEntries) -> Vec<String> {
    let mut nodes: Vec<String> = entries
        .hosts
        .keys()
        .chain(entries.peers.keys().map(|(n, _)| n))
        .chain(entries.producers.keys().map(|(n, _, _)| n))
        .map(|n| n.to_string())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The listing, sorted by room.
pub fn room_rows(snapshot: &Snapshot) -> Vec<RoomRow> {
    snapshot
        .rooms
        .iter()
        .map(|(room, entries)| RoomRow {
            room: room.to_string(),
            nodes: room_nodes(entries),
            peers: entries.peers.len(),
            producers: entries.producers.len(),
        })
        .collect()
}

/// One room in detail; `None` when the snapshot has no entry of it.
pub fn room_detail(snapshot: &Snapshot, room: &str) -> Option<RoomDetail> {
    let entries = snapshot.rooms.get(&RoomId::from(room))?;
    Some(RoomDetail {
        room: room.to_owned(),
        nodes: room_nodes(entries)
            .into_iter()
            .map(|node| RoomNode {
                since_ms: entries
                    .hosts
                    .get(&NodeId::from(node.as_str()))
                    .map(|h| h.since_ms),
                node_id: node,
                reachable: false,
                admin_error: None,
            })
            .collect(),
        peers: entries
            .peers
            .iter()
            .map(|((node, peer), record)| RoomPeer {
                peer_id: peer.to_string(),
                node_id: node.to_string(),
                display_name: record.display_name.clone(),
                transports: None,
                producers: None,
                consumers: None,
            })
            .collect(),
        producers: entries
            .producers
            .iter()
            .map(|((node, peer, producer), record)| RoomProducer {
                producer_id: producer.to_string(),
                peer_id: peer.to_string(),
                origin_node_id: node.to_string(),
                kind: record.kind,
                paused: record.paused,
                layers: None,
                piped_to: None,
                consumed_on: Vec::new(),
                paths: Vec::new(),
            })
            .collect(),
    })
}

fn layers(reports: &[LayerReport]) -> Vec<Layer> {
    reports
        .iter()
        .map(|l| Layer {
            rid: l.rid.clone(),
            ssrc: l.ssrc,
            active: l.active.unwrap_or(true),
            bitrate_bps: l
                .bitrate_bps
                .filter(|b| b.is_finite() && *b >= 0.0)
                .map(|b| b.round() as u64),
        })
        .collect()
}

/// Adds what the nodes hosting the room say (`answers`: a node's report, or why there is
/// none) to the registry's view of it.
pub fn enrich(detail: &mut RoomDetail, answers: &BTreeMap<NodeId, Result<RoomReport, AdminError>>) {
    let mut reports: BTreeMap<&str, &RoomReport> = BTreeMap::new();
    for node in &mut detail.nodes {
        let id = NodeId::from(node.node_id.as_str());
        let answer = match answers.get(&id) {
            Some(Ok(report)) => check_node(&id, &report.node_id).map(|()| report),
            Some(Err(e)) => Err(e.clone()),
            None => continue,
        };
        match answer {
            Ok(report) => {
                node.reachable = true;
                reports.insert(node.node_id.as_str(), report);
            }
            Err(e) => {
                node.reachable = !e.is_unreachable();
                node.admin_error = Some(e.to_string());
            }
        }
    }
    for peer in &mut detail.peers {
        let Some(report) = reports.get(peer.node_id.as_str()) else {
            continue;
        };
        if let Some(p) = report.peers.iter().find(|p| p.peer_id == peer.peer_id) {
            peer.transports = p.transports;
            peer.producers = p.producers;
            peer.consumers = p.consumers;
        }
    }
    for producer in &mut detail.producers {
        let origin = producer.origin_node_id.as_str();
        let mut remote_layers = None;
        for (&node, report) in &reports {
            let Some(p) = report.producers.iter().find(|p| {
                p.producer_id == producer.producer_id
                    && (p.origin_node_id.is_empty() || p.origin_node_id == origin)
            }) else {
                continue;
            };
            let consumers = u64::try_from(p.consumers.len()).unwrap_or(u64::MAX);
            let at_origin = node == origin;
            if !p.path.is_empty() {
                producer.paths.push(p.path.clone());
            }
            if at_origin {
                producer.layers = Some(layers(&p.layers));
                producer.piped_to = Some(p.piped_to.clone());
            } else if remote_layers.is_none() && !p.layers.is_empty() {
                remote_layers = Some(layers(&p.layers));
            }
            if consumers > 0 {
                producer.consumed_on.push(ConsumedOn {
                    node_id: node.to_owned(),
                    via: if at_origin { None } else { p.via.clone() },
                    consumers,
                });
            }
        }
        if producer.layers.is_none() {
            producer.layers = remote_layers;
        }
        producer.paths.sort();
        producer.paths.dedup();
    }
}

/// The layers column: simulcast ids (`r0,r1,r2`, an inactive one marked `(off)`), or how
/// many encodings there are without them.
pub fn layers_cell(layers: Option<&[Layer]>) -> String {
    let Some(layers) = layers else {
        return "-".into();
    };
    if layers.iter().all(|l| l.rid.is_none()) {
        return layers.len().to_string();
    }
    layers
        .iter()
        .map(|l| {
            let rid = l.rid.as_deref().unwrap_or("?");
            if l.active {
                rid.to_owned()
            } else {
                format!("{rid}(off)")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The tree column: every path that no other one extends, `n1 → n2, n1 → n3 → n4`; `-`
/// when no node told its path.
pub fn tree_cell(paths: &[Vec<String>]) -> String {
    let leaves: Vec<String> = paths
        .iter()
        .filter(|p| {
            !paths
                .iter()
                .any(|q| q.len() > p.len() && q.starts_with(p.as_slice()))
        })
        .map(|p| p.join(" → "))
        .collect();
    if leaves.is_empty() {
        return "-".into();
    }
    leaves.join(", ")
}

/// The consumed-on column: `n1 (1), n2 via n1 (2)`.
pub fn consumed_cell(consumed: &[ConsumedOn]) -> String {
    if consumed.is_empty() {
        return "-".into();
    }
    consumed
        .iter()
        .map(|c| match &c.via {
            Some(via) => format!("{} via {via} ({})", c.node_id, c.consumers),
            None => format!("{} ({})", c.node_id, c.consumers),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_cell(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// The listing's table.
pub fn render_rows(rows: &[RoomRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.room.clone(),
                r.nodes.join(","),
                r.peers.to_string(),
                r.producers.to_string(),
            ]
        })
        .collect();
    render_table(&["ROOM", "NODES", "PEERS", "PRODUCERS"], &cells)
}

/// The detail's tables: peers (with their node), then producers.
pub fn render_detail(d: &RoomDetail) -> String {
    let nodes: Vec<String> = d
        .nodes
        .iter()
        .map(|n| match n.admin_error.as_ref().map(|_| n.reachable) {
            Some(false) => format!("{} (unreachable)", n.node_id),
            Some(true) => format!("{} (no details)", n.node_id),
            None => n.node_id.clone(),
        })
        .collect();
    let peers: Vec<Vec<String>> = d
        .peers
        .iter()
        .map(|p| {
            vec![
                p.peer_id.clone(),
                p.node_id.clone(),
                p.display_name.clone(),
                count_cell(p.transports),
                count_cell(p.producers),
                count_cell(p.consumers),
            ]
        })
        .collect();
    let producers: Vec<Vec<String>> = d
        .producers
        .iter()
        .map(|p| {
            vec![
                p.producer_id.clone(),
                p.peer_id.clone(),
                p.origin_node_id.clone(),
                kind_name(p.kind).into(),
                if p.paused { "yes" } else { "no" }.into(),
                layers_cell(p.layers.as_deref()),
                consumed_cell(&p.consumed_on),
            ]
        })
        .collect();
    // Each producer's tree, once some node beyond its origin told its path.
    let trees: Vec<Vec<String>> = d
        .producers
        .iter()
        .filter(|p| p.paths.iter().any(|x| x.len() > 1))
        .map(|p| vec![p.producer_id.clone(), tree_cell(&p.paths)])
        .collect();
    let trees = if trees.is_empty() {
        String::new()
    } else {
        format!("\n{}", render_table(&["PRODUCER", "TREE"], &trees))
    };
    format!(
        "Room:  {}\nNodes: {}\n\n{}\n{}{}",
        d.room,
        nodes.join(", "),
        render_table(
            &[
                "PEER",
                "NODE",
                "NAME",
                "TRANSPORTS",
                "PRODUCERS",
                "CONSUMERS"
            ],
            &peers
        ),
        render_table(
            &[
                "PRODUCER",
                "PEER",
                "ORIGIN",
                "KIND",
                "PAUSED",
                "LAYERS",
                "CONSUMED ON"
            ],
            &producers
        ),
        trees
    )
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// `pipemesh rooms [ROOM]`.
pub fn run(args: &RoomsArgs) -> Result<(), CliError> {
    let output = args.common.format()?;
    match &args.room {
        None => run_listing(args, output),
        Some(room) => run_detail(args, room, output),
    }
}

fn run_listing(args: &RoomsArgs, output: Format) -> Result<(), CliError> {
    let snapshot = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        Ok(Snapshot::from_kvs(&registry.list("rooms/").await?))
    })?;
    let rows = room_rows(&snapshot);
    let printed = match output {
        Format::Json => print_json(&rows),
        Format::Table => print_out(&render_rows(&rows)),
    };
    warn_malformed(snapshot.malformed);
    printed
}

fn run_detail(args: &RoomsArgs, room: &str, output: Format) -> Result<(), CliError> {
    let client = AdminClient::new(&args.common)?;
    let path = room_path(room);
    let (snapshot, answers) = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        let mut kvs = registry
            .list(&format!("rooms/{}/", encode_segment(room)))
            .await?;
        kvs.extend(registry.list("nodes/").await?);
        let snapshot = Snapshot::from_kvs(&kvs);
        let hosts: Vec<NodeId> = snapshot
            .rooms
            .get(&RoomId::from(room))
            .map(|entries| room_nodes(entries).into_iter().map(NodeId::from).collect())
            .unwrap_or_default();
        let answers = client
            .get_all::<RoomReport>(targets(&snapshot, &hosts), |_| path.clone())
            .await;
        Ok((snapshot, answers))
    })?;
    let printed = match room_detail(&snapshot, room) {
        None => Err(CliError::NotFound(format!(
            "no room {room} in cluster {}",
            args.common.cluster
        ))),
        Some(mut detail) => {
            enrich(&mut detail, &answers);
            match output {
                Format::Json => print_json(&detail),
                Format::Table => print_out(&render_detail(&detail)),
            }
        }
    };
    if printed.is_ok() {
        for line in problems(&answers, |nodes| {
            format!("{nodes}: {path} not found (an older version, or the room just left): consumers there unknown")
        }) {
            eprintln!("{line}");
        }
    }
    warn_malformed(snapshot.malformed);
    printed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot::from_kvs(&[
            ("rooms/r/nodes/n1", r#"{"sinceMs":7}"#),
            ("rooms/r/nodes/n2", "{}"),
            ("rooms/r/peers/n1/pub", r#"{"displayName":"Pub"}"#),
            ("rooms/r/peers/n2/sub", "{}"),
            ("rooms/r/producers/n1/pub/a", r#"{"kind":"audio"}"#),
            (
                "rooms/r/producers/n1/pub/v",
                r#"{"kind":"video","paused":true}"#,
            ),
            ("rooms/r/producers/n1/pub/x", "{}"),
            // A peer whose host entry is missing still names its node.
            ("rooms/s/peers/n3/p", "{}"),
        ])
    }

    #[test]
    fn the_listing_counts_peers_and_producers_per_room() {
        let s = snapshot();
        assert_eq!(s.malformed, 1);
        let rows = room_rows(&s);
        assert_eq!(
            rows,
            vec![
                RoomRow {
                    room: "r".into(),
                    nodes: vec!["n1".into(), "n2".into()],
                    peers: 2,
                    producers: 2,
                },
                RoomRow {
                    room: "s".into(),
                    nodes: vec!["n3".into()],
                    peers: 1,
                    producers: 0,
                },
            ]
        );
        assert_eq!(
            render_rows(&rows),
            "ROOM   NODES   PEERS   PRODUCERS\n\
             r      n1,n2   2       2\n\
             s      n3      1       0\n"
        );
    }

    #[test]
    fn the_detail_lists_peers_with_their_node_and_producers_with_their_origin() {
        let d = room_detail(&snapshot(), "r").unwrap();
        assert_eq!(d.nodes[0].since_ms, Some(7));
        assert_eq!(
            d.peers
                .iter()
                .map(|p| (p.peer_id.as_str(), p.node_id.as_str()))
                .collect::<Vec<_>>(),
            [("pub", "n1"), ("sub", "n2")]
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["producers"][1]["kind"], "video");
        assert_eq!(json["producers"][1]["paused"], true);
        assert_eq!(json["producers"][0]["originNodeId"], "n1");
        let text = render_detail(&d);
        assert!(text.contains("Nodes: n1, n2"), "{text}");
        assert!(
            text.contains("v          pub    n1       video   yes"),
            "{text}"
        );
        assert!(room_detail(&snapshot(), "nosuch").is_none());
    }

    /// `GET /api/v1/rooms/r` on n1 (the origin) and n2, as the contract describes it.
    const N1_ROOM: &str = r#"{"nodeId":"n1","room":"r",
        "peers":[{"peerId":"pub","displayName":"Pub","transports":2,"producers":2,"consumers":1}],
        "producers":[
          {"producerId":"a","peerId":"pub","originNodeId":"n1","kind":"audio","paused":false,
           "local":true,"via":null,"pipedTo":["n2","n3"],"path":["n1"],
           "layers":[{"rid":null,"ssrc":1111,"active":true}],"consumers":[]},
          {"producerId":"v","peerId":"pub","originNodeId":"n1","kind":"video","paused":true,
           "local":true,"via":null,"pipedTo":["n2"],
           "layers":[{"rid":"r0","ssrc":1,"active":true,"bitrateBps":150000},
                     {"rid":"r1","ssrc":2,"active":true,"bitrateBps":500000.4},
                     {"rid":"r2","ssrc":3,"active":false}],
           "consumers":[{"consumerId":"k","peerId":"pub","paused":false,
                         "spatialLayer":2,"temporalLayer":null}]}]}"#;
    const N2_ROOM: &str = r#"{"nodeId":"n2","room":"r",
        "peers":[{"peerId":"sub","displayName":"","transports":[{},{}],"producers":[],
                  "consumers":[{},{}]}],
        "producers":[
          {"producerId":"a","peerId":"pub","originNodeId":"n1","local":false,"via":"n1",
           "pipedTo":[],"path":["n1","n2"],"layers":[{"ssrc":9}],
           "consumers":[{"consumerId":"c1","peerId":"sub"},{"consumerId":"c9","peerId":"x"}]},
          {"producerId":"v","peerId":"pub","originNodeId":"n1","local":false,"via":"n1",
           "consumers":[{"consumerId":"c2","peerId":"sub","spatialLayer":0}]},
          {"producerId":"elsewhere","originNodeId":"n7","consumers":[{}]}],
        "future":true}"#;

    fn answers(
        n1: Result<RoomReport, AdminError>,
    ) -> BTreeMap<NodeId, Result<RoomReport, AdminError>> {
        BTreeMap::from([
            (NodeId::from("n1"), n1),
            (
                NodeId::from("n2"),
                Ok(serde_json::from_str(N2_ROOM).unwrap()),
            ),
        ])
    }

    fn n1_room() -> Result<RoomReport, AdminError> {
        Ok(serde_json::from_str(N1_ROOM).unwrap())
    }

    #[test]
    fn producers_show_their_layers_and_where_they_are_consumed() {
        let mut d = room_detail(&snapshot(), "r").unwrap();
        enrich(&mut d, &answers(n1_room()));
        assert!(d
            .nodes
            .iter()
            .all(|n| n.reachable && n.admin_error.is_none()));
        let a = &d.producers[0];
        assert_eq!(a.producer_id, "a");
        assert_eq!(
            a.piped_to.as_deref(),
            Some(&["n2".to_owned(), "n3".to_owned()][..])
        );
        assert_eq!(layers_cell(a.layers.as_deref()), "1");
        // No consumer on the origin: only n2, through n1's link.
        assert_eq!(
            a.consumed_on,
            [ConsumedOn {
                node_id: "n2".into(),
                via: Some("n1".into()),
                consumers: 2
            }]
        );
        let v = &d.producers[1];
        assert_eq!(layers_cell(v.layers.as_deref()), "r0,r1,r2(off)");
        assert_eq!(v.layers.as_ref().unwrap()[1].bitrate_bps, Some(500_000));
        assert_eq!(v.layers.as_ref().unwrap()[2].bitrate_bps, None);
        assert_eq!(consumed_cell(&v.consumed_on), "n1 (1), n2 via n1 (1)");
        assert_eq!(
            (
                d.peers[0].transports,
                d.peers[0].producers,
                d.peers[0].consumers
            ),
            (Some(2), Some(2), Some(1))
        );
        assert_eq!(
            (
                d.peers[1].transports,
                d.peers[1].producers,
                d.peers[1].consumers
            ),
            (Some(2), Some(0), Some(2))
        );

        let json = serde_json::to_value(&d).unwrap();
        let v = &json["producers"][1];
        assert_eq!(
            v["consumedOn"][0],
            serde_json::json!({"nodeId":"n1","via":null,"consumers":1})
        );
        assert_eq!(v["consumedOn"][1]["via"], "n1");
        assert_eq!(v["pipedTo"], serde_json::json!(["n2"]));
        assert_eq!(
            v["layers"][0],
            serde_json::json!({"rid":"r0","ssrc":1,"active":true,"bitrateBps":150000})
        );
        assert_eq!(json["nodes"][0]["reachable"], true);
        assert_eq!(json["peers"][0]["transports"], 2);

        let text = render_detail(&d);
        assert!(text.contains("Nodes: n1, n2\n"), "{text}");
        assert!(
            text.contains("pub    n1     Pub    2            2           1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "a          pub    n1       audio   no       1               n2 via n1 (2)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("v          pub    n1       video   yes      r0,r1,r2(off)   n1 (1), n2 via n1 (1)\n"),
            "{text}"
        );
        // The tree of a: n1's path is a prefix of n2's; v's paths are not known beyond n1.
        assert_eq!(
            d.producers[0].paths,
            vec![
                vec!["n1".to_owned()],
                vec!["n1".to_owned(), "n2".to_owned()]
            ]
        );
        assert!(text.contains("PRODUCER   TREE"), "{text}");
        assert!(text.contains("a          n1 → n2\n"), "{text}");
        assert_eq!(
            json["producers"][0]["paths"][1],
            serde_json::json!(["n1", "n2"])
        );
    }

    #[test]
    fn tree_cell_shows_the_leaves() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(tree_cell(&[]), "-");
        assert_eq!(tree_cell(&[p(&["n1"])]), "n1");
        assert_eq!(
            tree_cell(&[
                p(&["n1"]),
                p(&["n1", "n2"]),
                p(&["n1", "n3"]),
                p(&["n1", "n3", "n4"])
            ]),
            "n1 → n2, n1 → n3 → n4"
        );
    }

    #[test]
    fn an_unreachable_origin_leaves_what_others_know() {
        let mut d = room_detail(&snapshot(), "r").unwrap();
        enrich(&mut d, &answers(Err(AdminError::Timeout("1s".into()))));
        assert!(!d.nodes[0].reachable);
        assert_eq!(
            d.nodes[0].admin_error.as_deref(),
            Some("unreachable: no answer within 1s")
        );
        let a = &d.producers[0];
        assert_eq!(a.piped_to, None);
        // The layers as n2 knows them.
        assert_eq!(layers_cell(a.layers.as_deref()), "1");
        assert_eq!(consumed_cell(&a.consumed_on), "n2 via n1 (2)");
        let v = &d.producers[1];
        assert_eq!(v.layers, None);
        assert_eq!(layers_cell(None), "-");
        assert_eq!(d.peers[0].transports, None);
        let text = render_detail(&d);
        assert!(text.contains("Nodes: n1 (unreachable), n2\n"), "{text}");
        assert!(
            text.contains("pub    n1     Pub    -            -           -\n"),
            "{text}"
        );

        // A node that answers 404 (an older version) is reachable, without details.
        let mut d = room_detail(&snapshot(), "r").unwrap();
        let older = Err(AdminError::NotFound {
            path: room_path("r"),
            message: String::new(),
        });
        enrich(&mut d, &answers(older));
        assert!(d.nodes[0].reachable);
        assert!(render_detail(&d).contains("Nodes: n1 (no details), n2\n"));
        // Not asked at all: nothing said.
        let mut d = room_detail(&snapshot(), "r").unwrap();
        enrich(&mut d, &BTreeMap::new());
        assert!(d
            .nodes
            .iter()
            .all(|n| !n.reachable && n.admin_error.is_none()));
        assert!(d.producers.iter().all(|p| p.consumed_on.is_empty()));
    }

    #[test]
    fn room_paths_encode_the_room() {
        assert_eq!(room_path("r"), "/api/v1/rooms/r");
        assert_eq!(room_path("a b/c?"), "/api/v1/rooms/a%20b%2Fc%3F");
        assert!(room_path("é").parse::<hyper::Uri>().is_ok());
    }
}
