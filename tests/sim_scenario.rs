//! `pipemesh-sim` scenarios at small N in the test command, on the nine-node cluster on the
//! emulated WAN (root, /dev/net/tun, etcd), one speaker on eu1 and nine listeners (one per
//! node). Scenario 1 runs with tree and with full-mesh routing: the copy counts each routing
//! must give, fewer bytes across regions for the tree, video at every listener, the report
//! and its plots. Scenario 4 limits eu>us below the speaker's simulcast: eu1 sheds the top
//! layer toward us only, the link stops overflowing and us listeners keep their video.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The output directory, removed at the end (kept when the test fails, for its raw reports).
struct Out(std::path::PathBuf);

impl Out {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run<'a>(v: &'a Value, routing: &str) -> &'a Value {
    v["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["routing"] == routing)
        .unwrap_or_else(|| panic!("no {routing} run in {v}"))
}

fn assert_png(path: &Path) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000,
        "{} is not a plot",
        path.display()
    );
}

/// Runs `pipemesh-sim ARGS MORE --tag <prefix><pid> --out <dir>`; its output directory and
/// result.json.
fn sim(prefix: char, args: &[&str], more: &[&str]) -> (Out, Value) {
    let tag = format!("{prefix}{}", std::process::id() % 100_000);
    let out = std::env::temp_dir().join(format!("pipemesh-sim-test-{tag}"));
    let _ = std::fs::remove_dir_all(&out);
    let out = Out(out);
    let st = Command::new(env!("CARGO_BIN_EXE_pipemesh-sim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .args(more)
        .args(["--tag", &tag])
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("pipemesh-sim runs");
    assert!(st.success(), "pipemesh-sim {} failed: {st}", args[0]);
    let v: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("result.json")).unwrap()).unwrap();
    (out, v)
}

#[test]
fn speaker_scenario_tree_crosses_each_region_boundary_once_mesh_once_per_node() {
    let (out, v) = sim(
        't',
        &["speaker", "--listeners", "9", "--routing", "tree,mesh"],
        &["--settle-secs", "2", "--window-secs", "4"],
    );
    let (tree, mesh) = (run(&v, "tree"), run(&v, "mesh"));
    for r in [tree, mesh] {
        assert_eq!(r["listeners"], 9, "{r}");
        assert_eq!(r["listenersWithoutVideo"], 0, "{r}");
        // Eight nodes besides eu1 have listeners: each gets one copy of each producer.
        for kind in ["audio", "video"] {
            assert_eq!(r["copies"][kind]["total"], 8, "{kind}: {r}");
        }
    }
    // Tree: one copy into us and one into ap; mesh: one into each of their six nodes.
    for kind in ["audio", "video"] {
        assert_eq!(tree["copies"][kind]["interRegion"], 2, "{kind}: {tree}");
        assert_eq!(mesh["copies"][kind]["interRegion"], 6, "{kind}: {mesh}");
    }
    let (t, m) = (
        tree["interRegionKbps"].as_f64().unwrap(),
        mesh["interRegionKbps"].as_f64().unwrap(),
    );
    // Three times the copies: comfortably more than twice the bytes.
    assert!(t > 100.0 && m > 2.0 * t, "tree {t} kbit/s, mesh {m} kbit/s");
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("| tree | 9 | 2 | 8 | 2 |"), "{md}");
    assert!(md.contains("Model (extrapolated, not measured)"), "{md}");
    for png in ["inter-region.png", "first-frame.png", "latency.png"] {
        assert_png(&out.path().join(png));
    }
}

#[test]
fn congested_link_sheds_upper_layers_toward_that_region_only() {
    let (out, v) = sim(
        'c',
        &["congested-link", "--listeners", "9", "--shedding", "on"],
        &["--before-secs", "4", "--window-secs", "15"],
    );
    let r = &v["runs"][0];
    assert_eq!(r["shedding"], true, "{r}");
    // 900 kbit/s for ~1.4 Mbit/s of simulcast: eu1 withholds the top layer toward us.
    let first = r["firstShedSecs"]
        .as_f64()
        .unwrap_or_else(|| panic!("never shed: {r}"));
    assert!(first < 12.0, "{r}");
    assert!(r["maxShed"].as_u64().unwrap() >= 1, "{r}");
    // What is withheld fits the link: few drops at its queue, and us listeners keep their
    // video (without shedding: ~80% of the link's packets dropped, ~75% video lost).
    let (offered, dropped) = (
        r["linkDrops"][0].as_f64().unwrap(),
        r["linkDrops"][1].as_f64().unwrap(),
    );
    assert!(offered > 0.0 && dropped / offered < 0.1, "{r}");
    let (lost, expected) = (
        r["videoLoss"]["us"][0].as_f64().unwrap(),
        r["videoLoss"]["us"][1].as_f64().unwrap(),
    );
    assert!(expected > 0.0 && lost / expected < 0.1, "{r}");
    // eu and ap keep the top layer, without loss.
    let sizes = |g: &str| r["lastSizes"][g].as_object().cloned().unwrap_or_default();
    for g in ["eu", "ap"] {
        assert_eq!(sizes(g).get("640x480"), Some(&Value::from(3)), "{g}: {r}");
        assert_eq!(r["videoLoss"][g][0], 0, "{g}: {r}");
    }
    assert_png(&out.path().join("congested-link.png"));
}
