//! Placement: which node a new client of a room should connect to. Sans-IO: a pure function
//! of the cluster as one node's directory sees it ([`ClusterView`]).
//!
//! The rule, in order:
//! 1. Only nodes that are *serving* (not draining) and listed in the registry are candidates
//!    (a node whose record vanished is not offered, even if this node still shows it frozen).
//! 2. Nodes in the client's region come first; another region only if the client's has no
//!    candidate (or the client named no region).
//! 3. Among those, a node that already hosts the room comes first: the room's media stays on
//!    one node and no pipe is needed for it.
//! 4. Then the least loaded: fewest peers, then fewest consumers, then the node id (so that
//!    equal nodes give a stable answer).
//!
//! The load figures are those the nodes publish every few seconds, so a burst of assignments
//! may land on one node before its record shows them; the room preference keeps such a burst
//! together anyway, which is what a room wants.

use serde::Serialize;

use crate::discovery::cluster::ClusterView;
use crate::discovery::keys::{NodeRecord, NodeState};
use crate::ids::{NodeId, RoomId};

/// Why a node was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// In the client's region and already hosting the room.
    RegionHostsRoom,
    /// In the client's region, least loaded.
    RegionLeastLoaded,
    /// No serving node in the client's region (or no region asked): one hosting the room.
    OtherRegionHostsRoom,
    /// No serving node in the client's region (or no region asked): least loaded.
    OtherRegionLeastLoaded,
}

/// The answer of [`assign`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The chosen node.
    pub node_id: NodeId,
    /// Its region.
    pub region: String,
    /// Its signaling URL (WebSocket, without query).
    pub signaling_url: String,
    /// The URL a mediasoup-demo client opens: the signaling URL with `roomId` (the client adds
    /// its `peerId` and, when the cluster requires it, its token).
    pub url: String,
    /// Why this node.
    pub reason: Reason,
}

/// Why no node could be offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Every node is draining or unlisted.
    #[error("no serving node in the cluster")]
    NoServingNode,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Chooses the node for a new client of `room` in `region` (see the module docs).
pub fn assign(
    view: &ClusterView,
    room: &RoomId,
    region: Option<&str>,
) -> Result<Assignment, PlacementError> {
    let hosts: Vec<&NodeId> = view
        .rooms
        .iter()
        .filter(|r| &r.room == room)
        .flat_map(|r| r.hosts.iter())
        .collect();
    let serving: Vec<&NodeRecord> = view
        .nodes
        .iter()
        .filter(|n| n.listed && n.record.state == NodeState::Serving)
        .map(|n| &n.record)
        .collect();
    let in_region: Vec<&NodeRecord> = match region {
        Some(r) => serving.iter().copied().filter(|n| n.region == r).collect(),
        None => Vec::new(),
    };
    let (pool, local) = if in_region.is_empty() {
        (serving, false)
    } else {
        (in_region, true)
    };
    let hosting: Vec<&NodeRecord> = pool
        .iter()
        .copied()
        .filter(|n| hosts.contains(&&n.node_id))
        .collect();
    let (pool, hosts_room) = if hosting.is_empty() {
        (pool, false)
    } else {
        (hosting, true)
    };
    let best = pool
        .into_iter()
        .min_by(|a, b| {
            (a.load.peers, a.load.consumers, &a.node_id).cmp(&(
                b.load.peers,
                b.load.consumers,
                &b.node_id,
            ))
        })
        .ok_or(PlacementError::NoServingNode)?;
    let reason = match (local, hosts_room) {
        (true, true) => Reason::RegionHostsRoom,
        (true, false) => Reason::RegionLeastLoaded,
        (false, true) => Reason::OtherRegionHostsRoom,
        (false, false) => Reason::OtherRegionLeastLoaded,
    };
    let base = best.signaling_url.trim_end_matches('/');
    Ok(Assignment {
        node_id: best.node_id.clone(),
        region: best.region.clone(),
        signaling_url: best.signaling_url.clone(),
        url: format!("{base}/?roomId={}", query_value(room.as_str())),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::cluster::{LinkView, NodeView, RoomView};
    use crate::discovery::keys::NodeLoad;

    fn node(id: &str, region: &str, peers: u64, state: NodeState) -> NodeView {
        NodeView {
            record: NodeRecord {
                node_id: NodeId::from(id),
                region: region.into(),
                pipe_addr: Some("127.0.0.1:7000".into()),
                signaling_url: format!("wss://{id}.example.net"),
                admin_url: String::new(),
                state,
                load: NodeLoad {
                    peers,
                    ..NodeLoad::default()
                },
                software: String::new(),
                started_at_ms: 0,
                incarnation: String::new(),
            },
            listed: true,
            frozen: false,
            link: LinkView::Unknown,
            wanted: false,
            drain: None,
        }
    }

    fn view(nodes: Vec<NodeView>, rooms: &[(&str, &[&str])]) -> ClusterView {
        ClusterView {
            local_node: NodeId::from("a"),
            revision: 1,
            nodes,
            rooms: rooms
                .iter()
                .map(|(r, hosts)| RoomView {
                    room: RoomId::from(*r),
                    watched: false,
                    hosts: hosts.iter().map(|h| NodeId::from(*h)).collect(),
                    peers: Vec::new(),
                })
                .collect(),
            stats: Default::default(),
        }
    }

    fn pick(v: &ClusterView, room: &str, region: Option<&str>) -> (String, Reason) {
        let a = assign(v, &RoomId::from(room), region).expect("a node");
        (a.node_id.to_string(), a.reason)
    }

    #[test]
    fn region_then_room_then_load() {
        use NodeState::Serving;
        let v = view(
            vec![
                node("eu1", "eu", 10, Serving),
                node("eu2", "eu", 3, Serving),
                node("us1", "us", 0, Serving),
            ],
            &[("r", &["eu1", "us1"])],
        );
        // In region, hosting the room beats a lighter node.
        assert_eq!(
            pick(&v, "r", Some("eu")),
            ("eu1".into(), Reason::RegionHostsRoom)
        );
        // A new room goes to the least loaded node of the region.
        assert_eq!(
            pick(&v, "new", Some("eu")),
            ("eu2".into(), Reason::RegionLeastLoaded)
        );
        assert_eq!(
            pick(&v, "r", Some("us")),
            ("us1".into(), Reason::RegionHostsRoom)
        );
        // No node in the region: anywhere, hosting first, then least loaded.
        // (eu1 and us1 both host r; us1 is lighter.)
        assert_eq!(
            pick(&v, "r", Some("ap")),
            ("us1".into(), Reason::OtherRegionHostsRoom)
        );
        assert_eq!(
            pick(&v, "new", None),
            ("us1".into(), Reason::OtherRegionLeastLoaded)
        );
    }

    #[test]
    fn draining_and_unlisted_nodes_are_never_offered() {
        use NodeState::{Draining, Serving};
        let mut gone = node("eu3", "eu", 0, Serving);
        gone.listed = false;
        gone.frozen = true;
        let v = view(
            vec![
                node("eu1", "eu", 0, Draining),
                node("eu2", "eu", 50, Serving),
                gone,
            ],
            &[("r", &["eu1", "eu3"])],
        );
        assert_eq!(
            pick(&v, "r", Some("eu")),
            ("eu2".into(), Reason::RegionLeastLoaded)
        );
        let all_draining = view(vec![node("eu1", "eu", 0, Draining)], &[]);
        assert_eq!(
            assign(&all_draining, &RoomId::from("r"), Some("eu")),
            Err(PlacementError::NoServingNode)
        );
    }

    #[test]
    fn ties_break_by_consumers_then_id_and_urls_are_encoded() {
        use NodeState::Serving;
        let mut b = node("b", "eu", 1, Serving);
        b.record.load.consumers = 5;
        let mut c = node("c", "eu", 1, Serving);
        c.record.load.consumers = 2;
        let v = view(vec![b, c, node("d", "eu", 1, Serving)], &[]);
        // c and d have fewer consumers than b... d has 0: d wins; then c.
        assert_eq!(pick(&v, "x", Some("eu")).0, "d");
        let v2 = view(
            vec![node("b", "eu", 1, Serving), node("a", "eu", 1, Serving)],
            &[],
        );
        assert_eq!(pick(&v2, "x", Some("eu")).0, "a");
        let a = assign(&v2, &RoomId::from("team room/1"), None).unwrap();
        assert_eq!(a.url, "wss://a.example.net/?roomId=team%20room%2F1");
        assert_eq!(a.signaling_url, "wss://a.example.net");
    }
}
