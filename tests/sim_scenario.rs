//! Scenario 1 of `pipemesh-sim` at small N in the test command: the nine-node cluster on the
//! emulated WAN (root, /dev/net/tun, etcd), one speaker on eu1 and nine listeners (one per
//! node), run with tree and with full-mesh routing. Asserts the copy counts each routing must
//! give, that the tree sends fewer bytes across regions, that every listener got video, and
//! that the report and its plots were written.

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

#[test]
fn speaker_scenario_tree_crosses_each_region_boundary_once_mesh_once_per_node() {
    let tag = format!("t{}", std::process::id() % 100_000);
    let out = std::env::temp_dir().join(format!("pipemesh-sim-test-{tag}"));
    let _ = std::fs::remove_dir_all(&out);
    let out = Out(out);
    let st = Command::new(env!("CARGO_BIN_EXE_pipemesh-sim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["speaker", "--listeners", "9", "--routing", "tree,mesh"])
        .args(["--settle-secs", "2", "--window-secs", "4", "--tag", &tag])
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("pipemesh-sim runs");
    assert!(st.success(), "pipemesh-sim speaker failed: {st}");
    let v: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("result.json")).unwrap()).unwrap();
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
