//! `pipemesh rooms` (one row per room) and `pipemesh rooms ROOM` (its nodes, peers and
//! producers).

use clap::Args;
use serde::Serialize;

use super::etcd::Registry;
use super::snapshot::{RoomEntries, Snapshot};
use super::{block_on, print_json, print_out, render_table, warn_malformed};
use super::{CliError, CommonArgs, Format};
use crate::discovery::keys::encode_segment;
use crate::ids::{NodeId, RoomId};
use crate::router::rtp_parameters::MediaKind;

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
            })
            .collect(),
        peers: entries
            .peers
            .iter()
            .map(|((node, peer), record)| RoomPeer {
                peer_id: peer.to_string(),
                node_id: node.to_string(),
                display_name: record.display_name.clone(),
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
            })
            .collect(),
    })
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
    let nodes: Vec<&str> = d.nodes.iter().map(|n| n.node_id.as_str()).collect();
    let peers: Vec<Vec<String>> = d
        .peers
        .iter()
        .map(|p| vec![p.peer_id.clone(), p.node_id.clone(), p.display_name.clone()])
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
            ]
        })
        .collect();
    format!(
        "Room:  {}\nNodes: {}\n\n{}\n{}",
        d.room,
        nodes.join(", "),
        render_table(&["PEER", "NODE", "NAME"], &peers),
        render_table(
            &["PRODUCER", "PEER", "ORIGIN", "KIND", "PAUSED"],
            &producers
        )
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
    let sub = match &args.room {
        Some(room) => format!("rooms/{}/", encode_segment(room)),
        None => "rooms/".to_owned(),
    };
    let snapshot = block_on(async {
        let mut registry = Registry::connect(&args.common).await?;
        Ok(Snapshot::from_kvs(&registry.list(&sub).await?))
    })?;
    let printed = match &args.room {
        None => {
            let rows = room_rows(&snapshot);
            match output {
                Format::Json => print_json(&rows),
                Format::Table => print_out(&render_rows(&rows)),
            }
        }
        Some(room) => match room_detail(&snapshot, room) {
            None => Err(CliError::NotFound(format!(
                "no room {room} in cluster {}",
                args.common.cluster
            ))),
            Some(detail) => match output {
                Format::Json => print_json(&detail),
                Format::Table => print_out(&render_detail(&detail)),
            },
        },
    };
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
}
