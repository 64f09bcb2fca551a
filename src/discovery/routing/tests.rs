use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::ids::RoomId;

fn n(id: &str) -> NodeId {
    NodeId::from(id)
}

fn node(id: &str, region: &str) -> RouteNode {
    RouteNode {
        id: n(id),
        region: region.into(),
        draining: false,
        alive: true,
    }
}

/// 3 regions x 3 nodes: e1..e3 in eu, u1..u3 in us, a1..a3 in ap.
fn cluster() -> Vec<RouteNode> {
    let mut v = Vec::new();
    for (p, region) in [("e", "eu"), ("u", "us"), ("a", "ap")] {
        for i in 1..=3 {
            v.push(node(&format!("{p}{i}"), region));
        }
    }
    v
}

fn region_of<'a>(nodes: &'a [RouteNode], id: &NodeId) -> &'a str {
    &nodes.iter().find(|x| &x.id == id).expect("known").region
}

/// Copies crossing into each region (by destination region).
fn crossings(nodes: &[RouteNode], plan: &Plan) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (id, r) in &plan.routes {
        let (to, from) = (region_of(nodes, id), region_of(nodes, &r.parent));
        if to != from {
            *out.entry(to.to_owned()).or_default() += 1;
        }
    }
    out
}

#[test]
fn score_is_stable_across_versions() {
    // Golden values: every node of every version must compute these.
    let p = ProducerId::from("producer-1");
    assert_eq!(score(&p, &n("n1")), score(&p, &n("n1")));
    assert_eq!(
        [
            score(&p, &n("n1")),
            score(&p, &n("n2")),
            score(&ProducerId::from(""), &n(""))
        ],
        GOLDEN
    );
    // The separator keeps ("ab", "c") apart from ("a", "bc").
    assert_ne!(
        score(&ProducerId::from("ab"), &n("c")),
        score(&ProducerId::from("a"), &n("bc"))
    );
}

/// Checked against an independent implementation of the documented algorithm.
const GOLDEN: [u64; 3] = [
    7_564_350_840_152_337_950,
    11_121_298_672_493_614_002,
    5_705_415_379_283_624_141,
];

#[test]
fn mode_parses_and_prints() {
    assert_eq!("tree".parse::<RoutingMode>(), Ok(RoutingMode::Tree));
    assert_eq!(" MESH ".parse::<RoutingMode>(), Ok(RoutingMode::Mesh));
    assert!("ring".parse::<RoutingMode>().is_err());
    assert_eq!(RoutingMode::default(), RoutingMode::Tree);
    assert_eq!(RoutingMode::Mesh.to_string(), "mesh");
    assert_eq!(
        serde_json::to_string(&RoutingMode::Tree).unwrap(),
        "\"tree\""
    );
}

#[test]
fn two_regions_chain() {
    // Origin n1 (eu); n3 and n4 in us: one of them is the relay, the other pipes from it.
    let nodes = vec![
        node("n1", "eu"),
        node("n2", "eu"),
        node("n3", "us"),
        node("n4", "us"),
    ];
    let hosts: BTreeSet<NodeId> = ["n1", "n2", "n3", "n4"].into_iter().map(n).collect();
    let p = ProducerId::from("p");
    let plan = plan(&nodes, &hosts, &p, &n("n1"), RoutingMode::Tree).unwrap();
    plan.check().unwrap();
    assert_eq!(plan.parent(&n("n2")), Some(&n("n1")));
    let relay = plan.parent(&n("n3")).cloned().unwrap();
    let (r, other) = if relay == n("n1") {
        (n("n3"), n("n4"))
    } else {
        (n("n4"), n("n3"))
    };
    assert_eq!(plan.parent(&r), Some(&n("n1")));
    assert_eq!(plan.parent(&other), Some(&r));
    assert_eq!(
        plan.path(&other),
        Some(vec![n("n1"), r.clone(), other.clone()])
    );
    assert_eq!(plan.children(&n("n1")).len(), 2);
    assert_eq!(plan.path(&n("n1")), Some(vec![n("n1")]));
    assert_eq!(plan.parent(&n("n1")), None);

    // The relay dies: the other us node pipes from the origin.
    let mut nodes2 = nodes.clone();
    nodes2.iter_mut().find(|x| x.id == r).unwrap().alive = false;
    let plan2 = super::plan(&nodes2, &hosts, &p, &n("n1"), RoutingMode::Tree).unwrap();
    plan2.check().unwrap();
    assert_eq!(plan2.parent(&other), Some(&n("n1")));
    assert!(!plan2.routes.contains_key(&r));

    // The relay drains: the other takes over, the drained one pipes from it.
    let mut nodes3 = nodes.clone();
    nodes3.iter_mut().find(|x| x.id == r).unwrap().draining = true;
    let plan3 = super::plan(&nodes3, &hosts, &p, &n("n1"), RoutingMode::Tree).unwrap();
    plan3.check().unwrap();
    assert_eq!(plan3.parent(&other), Some(&n("n1")));
    assert_eq!(plan3.parent(&r), Some(&other));

    // Both drain: a draining relay is better than none.
    nodes3.iter_mut().find(|x| x.id == other).unwrap().draining = true;
    let plan4 = super::plan(&nodes3, &hosts, &p, &n("n1"), RoutingMode::Tree).unwrap();
    plan4.check().unwrap();
    assert_eq!(plan4.parent(&r), Some(&n("n1")));
    assert_eq!(plan4.parent(&other), Some(&r));
}

#[test]
fn unknown_dead_or_origin_get_no_route() {
    let mut nodes = vec![node("n1", "eu"), node("n2", "us"), node("n3", "us")];
    let hosts: BTreeSet<NodeId> = ["n1", "n2", "n3", "ghost"].into_iter().map(n).collect();
    let p = ProducerId::from("p");
    nodes[2].alive = false;
    let plan = plan(&nodes, &hosts, &p, &n("n1"), RoutingMode::Tree).unwrap();
    assert_eq!(plan.routes.keys().collect::<Vec<_>>(), vec![&n("n2")]);
    nodes[0].alive = false;
    assert_eq!(
        super::plan(&nodes, &hosts, &p, &n("n1"), RoutingMode::Tree),
        Err(RoutingError::OriginUnavailable(n("n1")))
    );
    assert!(super::plan(&nodes, &hosts, &p, &n("nx"), RoutingMode::Mesh).is_err());
}

#[test]
fn check_finds_defects() {
    let route = |parent: &str, path: &[&str]| Route {
        parent: n(parent),
        path: path.iter().map(|s| n(s)).collect(),
    };
    let mk = |routes: Vec<(&str, Route)>| Plan {
        origin: n("o"),
        routes: routes.into_iter().map(|(k, v)| (n(k), v)).collect(),
    };
    assert_eq!(mk(vec![("a", route("o", &["o", "a"]))]).check(), Ok(()));
    // a and b pipe from each other: neither has a path from the origin.
    let cyc = mk(vec![
        ("a", route("b", &["o", "b", "a"])),
        ("b", route("a", &["o", "a", "b"])),
    ]);
    assert!(matches!(cyc.check(), Err(PlanDefect::BadPath(_))));
    let rep = mk(vec![("a", route("o", &["o", "a", "o", "a"]))]);
    assert_eq!(rep.check(), Err(PlanDefect::Loop(n("a"))));
    let orphan = mk(vec![("a", route("x", &["o", "x", "a"]))]);
    assert_eq!(orphan.check(), Err(PlanDefect::Orphan(n("a"))));
    let bad = mk(vec![("a", route("o", &["a"]))]);
    assert_eq!(bad.check(), Err(PlanDefect::BadPath(n("a"))));
    let o = mk(vec![("o", route("o", &["o", "o"]))]);
    assert_eq!(o.check(), Err(PlanDefect::OriginRouted));
    assert!(would_loop(&[n("o"), n("a")], &n("a")));
    assert!(!would_loop(&[n("o"), n("a")], &n("b")));
}

#[test]
fn tree_saves_cross_region_copies_against_mesh() {
    // A speaker on e1, the room on all 9 nodes, 1 Mbit/s of media.
    let nodes = cluster();
    let hosts: BTreeSet<NodeId> = nodes.iter().map(|x| x.id.clone()).collect();
    let p = ProducerId::from("speaker-audio-video");
    let mesh = plan(&nodes, &hosts, &p, &n("e1"), RoutingMode::Mesh).unwrap();
    let tree = plan(&nodes, &hosts, &p, &n("e1"), RoutingMode::Tree).unwrap();
    mesh.check().unwrap();
    tree.check().unwrap();
    // Every other node gets one copy either way.
    assert_eq!(mesh.copies(), 8);
    assert_eq!(tree.copies(), 8);
    // Out of the origin: 8 vs 4 (2 in eu, one relay per other region).
    assert_eq!(mesh.copies_from_origin(), 8);
    assert_eq!(tree.copies_from_origin(), 4);
    // Across region boundaries: 3 per region vs 1.
    let c_mesh = crossings(&nodes, &mesh);
    let c_tree = crossings(&nodes, &tree);
    assert_eq!(c_mesh.values().sum::<usize>(), 6);
    assert_eq!(c_tree.values().sum::<usize>(), 2);
    let bytes_per_copy = 1_000_000u64 / 8;
    let cross_bytes =
        |c: &BTreeMap<String, usize>| c.values().sum::<usize>() as u64 * bytes_per_copy;
    assert_eq!(cross_bytes(&c_mesh), 3 * cross_bytes(&c_tree));
}

#[test]
fn relays_spread_over_a_region() {
    // With many producers, every us node is the relay of some.
    let nodes = cluster();
    let hosts: BTreeSet<NodeId> = nodes.iter().map(|x| x.id.clone()).collect();
    let mut relays: BTreeMap<NodeId, usize> = BTreeMap::new();
    for i in 0..300 {
        let p = ProducerId::from(format!("producer-{i}"));
        let plan = plan(&nodes, &hosts, &p, &n("e1"), RoutingMode::Tree).unwrap();
        let relay = ["u1", "u2", "u3"]
            .into_iter()
            .map(n)
            .find(|u| plan.parent(u) == Some(&n("e1")))
            .unwrap();
        *relays.entry(relay).or_default() += 1;
    }
    assert_eq!(relays.len(), 3);
    assert!(relays.values().all(|c| *c > 50), "{relays:?}");
}

/// Relay of (producer, region) and the candidates (id, draining) it was chosen among.
type Relays = BTreeMap<(ProducerId, String), (NodeId, Vec<(NodeId, bool)>)>;

/// A small deterministic generator (xorshift64*), so the sequence does not depend on a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.below(v.len())].clone())
    }
}

/// The simulated cluster: nodes, rooms (their hosts) and producers (room, origin).
struct Sim {
    nodes: Vec<RouteNode>,
    rooms: BTreeMap<String, BTreeSet<NodeId>>,
    producers: BTreeMap<ProducerId, (String, NodeId)>,
    next_producer: u64,
}

impl Sim {
    fn alive(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|x| x.alive)
            .map(|x| x.id.clone())
            .collect()
    }

    fn node_mut(&mut self, id: &NodeId) -> &mut RouteNode {
        self.nodes.iter_mut().find(|x| &x.id == id).unwrap()
    }

    /// `node` leaves `room`: its producers there close.
    fn leave(&mut self, room: &str, node: &NodeId) {
        if let Some(h) = self.rooms.get_mut(room) {
            h.remove(node);
        }
        self.producers.retain(|_, (r, o)| !(r == room && o == node));
    }

    /// One random step; returns what it did (for failure messages).
    fn step(&mut self, rng: &mut Rng) -> String {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        let room = rng.pick(&rooms).unwrap();
        match rng.below(8) {
            0 | 1 => {
                let Some(id) = rng.pick(&self.alive()) else {
                    return "no node alive".into();
                };
                self.rooms.get_mut(&room).unwrap().insert(id.clone());
                format!("{id} joins {room}")
            }
            2 => {
                let hosts: Vec<NodeId> = self.rooms[&room].iter().cloned().collect();
                let Some(id) = rng.pick(&hosts) else {
                    return "nobody to leave".into();
                };
                self.leave(&room, &id);
                format!("{id} leaves {room}")
            }
            3 => {
                let Some(id) = rng.pick(&self.alive()) else {
                    return "no node alive".into();
                };
                let x = self.node_mut(&id);
                x.draining = !x.draining;
                format!("{id} draining={}", x.draining)
            }
            4 => {
                let Some(id) = rng.pick(&self.alive()) else {
                    return "no node alive".into();
                };
                self.node_mut(&id).alive = false;
                for r in &rooms {
                    self.leave(r, &id);
                }
                format!("{id} dies")
            }
            5 => {
                let dead: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|x| !x.alive)
                    .map(|x| x.id.clone())
                    .collect();
                let Some(id) = rng.pick(&dead) else {
                    return "nobody to restart".into();
                };
                let x = self.node_mut(&id);
                x.alive = true;
                x.draining = false;
                format!("{id} restarts")
            }
            _ => {
                let hosts: Vec<NodeId> = self.rooms[&room].iter().cloned().collect();
                let Some(id) = rng.pick(&hosts) else {
                    return "nobody to produce".into();
                };
                if rng.below(3) == 0 {
                    let mine: Vec<ProducerId> = self
                        .producers
                        .iter()
                        .filter(|(_, (r, o))| *r == room && *o == id)
                        .map(|(p, _)| p.clone())
                        .collect();
                    if let Some(p) = rng.pick(&mine) {
                        self.producers.remove(&p);
                        return format!("{p} closes");
                    }
                }
                self.next_producer += 1;
                let p = ProducerId::from(format!("p{}", self.next_producer));
                self.producers.insert(p.clone(), (room.clone(), id.clone()));
                format!("{id} produces {p} in {room}")
            }
        }
    }
}

/// The candidates for relay of `region` for a producer of `origin` in `room`.
fn candidates(sim: &Sim, room: &str, origin: &NodeId, region: &str) -> Vec<(NodeId, bool)> {
    sim.nodes
        .iter()
        .filter(|x| x.alive && x.region == region && &x.id != origin)
        .filter(|x| sim.rooms[room].contains(&x.id))
        .map(|x| (x.id.clone(), x.draining))
        .collect()
}

/// The issue's routing test: rooms spanning 3 regions x 3 nodes, producers on various nodes,
/// consumers everywhere, then joins, leaves, drains, deaths and restarts. After every step,
/// for every producer: a tree rooted at its origin (no loops), each other region entered at
/// most once, every alive host routed, relays serving when they can be, and a relay that stays
/// a candidate keeps its role unless a newly eligible node outscores it.
#[test]
fn simulated_cluster_crosses_each_region_once() {
    for seed in 1..=20u64 {
        let nodes = cluster();
        let all: BTreeSet<NodeId> = nodes.iter().map(|x| x.id.clone()).collect();
        let mut sim = Sim {
            nodes,
            rooms: (1..=4).map(|i| (format!("room{i}"), all.clone())).collect(),
            producers: BTreeMap::new(),
            next_producer: 0,
        };
        // Producers on various nodes of every room.
        for (i, room) in sim
            .rooms
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .iter()
            .enumerate()
        {
            for origin in ["e1", "u2", "a3", "e2"].iter().skip(i % 2) {
                sim.next_producer += 1;
                sim.producers.insert(
                    ProducerId::from(format!("p{}", sim.next_producer)),
                    (room.clone(), n(origin)),
                );
            }
        }
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut relays: Relays = BTreeMap::new();
        let mut totals = (0usize, 0usize);
        for step in 0..300 {
            let what = if step == 0 {
                "start".into()
            } else {
                sim.step(&mut rng)
            };
            let ctx = format!("seed {seed} step {step} ({what})");
            for (p, (room, origin)) in &sim.producers {
                let hosts = &sim.rooms[room];
                let tree = plan(&sim.nodes, hosts, p, origin, RoutingMode::Tree)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                tree.check().unwrap_or_else(|e| panic!("{ctx}: {p}: {e}"));
                let mesh = plan(&sim.nodes, hosts, p, origin, RoutingMode::Mesh).unwrap();
                mesh.check().unwrap_or_else(|e| panic!("{ctx}: {p}: {e}"));
                // Every alive host but the origin has a route, nobody else.
                let want: BTreeSet<&NodeId> = hosts
                    .iter()
                    .filter(|h| *h != origin && sim.alive().contains(h))
                    .collect();
                assert_eq!(tree.routes.keys().collect::<BTreeSet<_>>(), want, "{ctx}");
                assert_eq!(mesh.routes.keys().collect::<BTreeSet<_>>(), want, "{ctx}");
                // Each region other than the origin's is entered at most once (exactly once
                // when it has hosts); the origin's region never from outside.
                let o_region = region_of(&sim.nodes, origin).to_owned();
                let cross = crossings(&sim.nodes, &tree);
                assert!(
                    !cross.contains_key(&o_region),
                    "{ctx}: {p} re-enters its region"
                );
                for (region, count) in &cross {
                    assert_eq!(*count, 1, "{ctx}: {p} enters {region} {count} times");
                }
                // No route passes through a dead node or a non-host.
                for r in tree.routes.values() {
                    for hop in &r.path[1..] {
                        assert!(want.contains(hop), "{ctx}: {p} routed via {hop}");
                    }
                    assert!(r.path.len() <= 3, "{ctx}: {p} path {:?}", r.path);
                }
                totals.0 += cross.values().sum::<usize>();
                totals.1 += crossings(&sim.nodes, &mesh).values().sum::<usize>();
                // Relays: serving when possible; stable unless the relay stopped being the
                // same candidate or a new candidate outscores it.
                for region in ["eu", "us", "ap"].into_iter().filter(|r| *r != o_region) {
                    let cands = candidates(&sim, room, origin, region);
                    let key = (p.clone(), region.to_owned());
                    let Some(relay) = tree
                        .routes
                        .iter()
                        .find(|(id, r)| r.parent == *origin && region_of(&sim.nodes, id) == region)
                        .map(|(id, _)| id.clone())
                    else {
                        assert!(cands.is_empty(), "{ctx}: no relay in {region}");
                        relays.remove(&key);
                        continue;
                    };
                    let draining = cands.iter().find(|(c, _)| *c == relay).unwrap().1;
                    assert!(
                        !draining || cands.iter().all(|(_, d)| *d),
                        "{ctx}: draining relay with a serving node in {region}"
                    );
                    if let Some((old, old_cands)) = relays.get(&key) {
                        let old_same = old_cands.iter().find(|(c, _)| c == old);
                        let still = cands.iter().find(|(c, _)| c == old);
                        if *old != relay && old_same == still {
                            // The old relay is the same candidate as before: the new one was
                            // not one (or was another) before.
                            let new_before = old_cands.iter().find(|(c, _)| *c == relay);
                            let new_now = cands.iter().find(|(c, _)| *c == relay);
                            assert_ne!(new_before, new_now, "{ctx}: relay of {p} moved");
                        }
                    }
                    relays.insert(key, (relay, cands));
                }
            }
        }
        assert!(totals.0 < totals.1, "seed {seed}: tree {totals:?} vs mesh");
    }
}

fn view(local: &str, nodes: &[(&str, &str, LinkView, bool)], hosts: &[&str]) -> ClusterView {
    use crate::discovery::cluster::{NodeView, RoomView};
    ClusterView {
        local_node: n(local),
        revision: 1,
        nodes: nodes
            .iter()
            .map(|(id, region, link, draining)| NodeView {
                record: serde_json::from_value(serde_json::json!({
                    "nodeId": id, "region": region,
                    "state": if *draining { "draining" } else { "serving" },
                }))
                .expect("a node record"),
                listed: true,
                frozen: false,
                link: *link,
                wanted: false,
                drain: None,
            })
            .collect(),
        rooms: vec![RoomView {
            room: RoomId::from("r"),
            watched: true,
            hosts: hosts.iter().map(|h| n(h)).collect(),
            peers: Vec::new(),
        }],
        stats: Default::default(),
    }
}

#[test]
fn parent_from_the_cluster_view() {
    let p = ProducerId::from("p");
    let r = RoomId::from("r");
    let o = n("n1");
    let nodes = |link3, link4, drain4| {
        vec![
            ("n1", "eu", LinkView::Up, false),
            ("n3", "us", link3, false),
            ("n4", "us", link4, drain4),
        ]
    };
    let all = ["n1", "n3", "n4"];
    // Seen from n3 and from n4, the same relay; the other pipes from it.
    let from3 = view("n3", &nodes(LinkView::Local, LinkView::Up, false), &all);
    let from4 = view("n4", &nodes(LinkView::Up, LinkView::Local, false), &all);
    let (p3, p4) = (
        parent_in_view(&from3, RoutingMode::Tree, &r, &p, &o).unwrap(),
        parent_in_view(&from4, RoutingMode::Tree, &r, &p, &o).unwrap(),
    );
    assert!(
        (p3 == o && p4 == n("n3")) || (p4 == o && p3 == n("n4")),
        "{p3} {p4}"
    );
    // Mesh: both from the origin.
    assert_eq!(
        parent_in_view(&from3, RoutingMode::Mesh, &r, &p, &o),
        Some(o.clone())
    );
    // n4 drains: n3 relays; its link is down (seen from n3): n3 pipes from the origin.
    let drained = view("n4", &nodes(LinkView::Up, LinkView::Local, true), &all);
    assert_eq!(
        parent_in_view(&drained, RoutingMode::Tree, &r, &p, &o),
        Some(n("n3"))
    );
    let down = view("n3", &nodes(LinkView::Local, LinkView::Down, false), &all);
    assert_eq!(
        parent_in_view(&down, RoutingMode::Tree, &r, &p, &o),
        Some(o.clone())
    );
    // The local node counts as a host before its host key is listed.
    let early = view("n3", &nodes(LinkView::Local, LinkView::Up, false), &["n1"]);
    assert_eq!(
        parent_in_view(&early, RoutingMode::Tree, &r, &p, &o),
        Some(o.clone())
    );
    // No route when the origin is unknown.
    assert_eq!(
        parent_in_view(&early, RoutingMode::Tree, &r, &p, &n("nx")),
        None
    );
}
