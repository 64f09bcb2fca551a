//! The I/O of the scenarios: a nine-node cluster on the emulated WAN (`simulations/cluster.sh`,
//! torn down on drop, also when a scenario fails), the emulator's control socket, bot
//! processes in the regions' namespaces, and the cluster commands of `pipemesh` run through
//! `cluster.sh cli`. Nothing here decides anything: [`super::analysis`] does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::bot::run::RunReport;

/// The regions of `simulations/netns.sh`, in order (region `i` is 10.77.`i+1`.0/24).
pub const REGIONS: [&str; 3] = ["eu", "us", "ap"];
/// Nodes per region in `simulations/cluster.sh` (`eu1` ... `eu3`).
pub const NODES_PER_REGION: usize = 3;

/// Where the repository's scripts and binaries are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository (holds `simulations/`).
    pub repo: PathBuf,
    /// The `pipemesh` binary the nodes and bots run.
    pub pipemesh: PathBuf,
    /// The `pipemesh-wan` binary.
    pub wan: PathBuf,
}

impl Paths {
    /// The binaries next to the running executable (as cargo builds them, one profile
    /// directory), the repository from `PM_REPO` or the directory above `simulations/` found
    /// from the current directory upwards.
    pub fn discover() -> Result<Paths> {
        let exe = std::env::current_exe().context("current executable")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
        let pipemesh = std::env::var_os("PIPEMESH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("pipemesh"));
        let wan = std::env::var_os("PM_WAN_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("pipemesh-wan"));
        for b in [&pipemesh, &wan] {
            if !b.is_file() {
                bail!(
                    "{} is missing: build it (cargo build --release --bin pipemesh --bin \
                     pipemesh-wan --bin pipemesh-sim), or set PIPEMESH_BIN / PM_WAN_BIN",
                    b.display()
                );
            }
        }
        let repo = match std::env::var_os("PM_REPO") {
            Some(r) => PathBuf::from(r),
            None => {
                let mut d = std::env::current_dir().context("current directory")?;
                loop {
                    if d.join("simulations/cluster.sh").is_file() {
                        break d;
                    }
                    if !d.pop() {
                        bail!("no simulations/cluster.sh above the current directory: run from the repository or set PM_REPO");
                    }
                }
            }
        };
        Ok(Paths {
            repo,
            pipemesh,
            wan,
        })
    }
}

/// A running cluster (`cluster.sh up`); `cluster.sh down` on drop.
pub struct Cluster {
    paths: Paths,
    suffix: String,
    run_dir: PathBuf,
    cluster_dir: PathBuf,
    routing: String,
    node_args: String,
    up: bool,
}

impl Cluster {
    /// Brings up netns, the emulator, etcd and nine nodes with this routing (`tree` or
    /// `mesh`). `tag` names the namespaces (`pm-eu-<tag>`) so runs can share a machine.
    pub fn up(paths: &Paths, tag: &str, routing: &str) -> Result<Cluster> {
        Self::up_with(paths, tag, routing, "")
    }

    /// [`Self::up`] with more `pipemesh serve` flags for every node (split on spaces).
    pub fn up_with(paths: &Paths, tag: &str, routing: &str, node_args: &str) -> Result<Cluster> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the simulation needs root (network namespaces, a TUN device)");
        }
        let mut c = Cluster {
            paths: paths.clone(),
            suffix: format!("-{tag}"),
            run_dir: PathBuf::from(format!("/tmp/pm-wan-{tag}")),
            cluster_dir: PathBuf::from(format!("/tmp/pm-sim-{tag}")),
            routing: routing.to_owned(),
            node_args: node_args.to_owned(),
            up: false,
        };
        let out = c
            .script(&["up"])
            .output()
            .context("running cluster.sh up")?;
        // Whatever happened, `down` is due from here on.
        c.up = true;
        if !out.status.success() {
            bail!(
                "cluster.sh up failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(c)
    }

    /// `simulations/cluster.sh ARGS` with this cluster's environment.
    fn script(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.paths.repo.join("simulations/cluster.sh"));
        cmd.args(args)
            .env("PM_SUFFIX", &self.suffix)
            .env("PM_RUN_DIR", &self.run_dir)
            .env("PM_CLUSTER_DIR", &self.cluster_dir)
            .env("PM_ROUTING", &self.routing)
            .env("PM_NODE_ARGS", &self.node_args)
            .env("PIPEMESH_BIN", &self.paths.pipemesh)
            .env("PM_WAN_BIN", &self.paths.wan)
            .stdin(Stdio::null());
        cmd
    }

    /// Routing of the nodes.
    pub fn routing(&self) -> &str {
        &self.routing
    }

    /// Where node logs are.
    pub fn log_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// One command to the emulator; the payload of its `ok` reply.
    pub fn wan(&self, line: &str) -> Result<String> {
        let path = self.run_dir.join("control.sock");
        let mut s =
            UnixStream::connect(&path).with_context(|| format!("connect {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        writeln!(s, "{line}")?;
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply)?;
        let reply = reply.trim_end();
        match reply.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim_start().to_owned()),
            None => bail!("emulator: {line:?} -> {reply:?}"),
        }
    }

    /// The emulator's statistics.
    pub fn wan_stats(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.wan("stats")?)?)
    }

    /// A cluster command of `pipemesh` (`rooms ROOM -o json`, ...); its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["cli"];
        a.extend_from_slice(args);
        let out = self.script(&a).output().context("cluster.sh cli")?;
        if !out.status.success() {
            bail!(
                "pipemesh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pipemesh rooms ROOM -o json`.
    pub fn room(&self, room: &str) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &self.cli(&["rooms", room, "-o", "json"])?,
        )?)
    }

    /// `pipemesh topology -o json`.
    pub fn topology(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &self.cli(&["topology", "-o", "json"])?,
        )?)
    }

    /// `GET path` on a node's admin API (with the cluster's token), from the node's own
    /// region: no WAN on the way. The body as JSON.
    pub fn admin(&self, node: &str, path: &str) -> Result<serde_json::Value> {
        let region = super::analysis::region_of(node);
        let n = REGIONS
            .iter()
            .position(|r| *r == region)
            .ok_or_else(|| anyhow!("{node}: no such region"))?
            + 1;
        let k = &node[region.len()..];
        let token = std::fs::read_to_string(self.cluster_dir.join("admin-token"))?;
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("pm-{region}{}", self.suffix),
                "curl",
                "-sf",
            ])
            .args(["--max-time", "5", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("http://10.77.{n}.1{k}:9090{path}"))
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("GET {path} on {node} failed ({})", out.status);
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// SIGKILLs a node.
    pub fn kill(&self, node: &str) -> Result<()> {
        let st = self.script(&["kill", node]).status()?;
        if !st.success() {
            bail!("cluster.sh kill {node} failed");
        }
        Ok(())
    }

    /// Starts `count` bots on node `region``k` (`k` from 1) with these extra arguments,
    /// writing their JSON report to `json`.
    pub fn bots(
        &self,
        region: &str,
        k: usize,
        count: usize,
        json: &Path,
        args: &[String],
    ) -> Result<BotProcess> {
        let mut a: Vec<String> = vec![
            "bot".into(),
            region.into(),
            k.to_string(),
            "--count".into(),
            count.to_string(),
            "--report-interval".into(),
            "3600".into(),
            "--json-out".into(),
            json.display().to_string(),
        ];
        a.extend(args.iter().cloned());
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut child = self
            .script(&refs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bots")?;
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        Ok(BotProcess {
            name: format!("{region}{k}"),
            child: Some(child),
            lines: rx,
            seen: Vec::new(),
            json: json.to_owned(),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.up {
            let _ = self
                .script(&["down"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `pipemesh bot` process; killed on drop.
pub struct BotProcess {
    name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    json: PathBuf,
}

impl BotProcess {
    /// Waits until every bot of the process has joined (its `joined bots=` line).
    pub fn wait_joined(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.seen.iter().any(|l| l.starts_with("joined bots=")) {
                return Ok(());
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => bail!(
                    "bots on {} did not join within {timeout:?}; output:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to end and reads its JSON report.
    pub fn finish(mut self, timeout: Duration) -> Result<RunReport> {
        let end = Instant::now() + timeout;
        let mut child = self.child.take().expect("present until finished");
        loop {
            if let Some(st) = child.try_wait()? {
                while let Ok(l) = self.lines.try_recv() {
                    self.seen.push(l);
                }
                if !st.success() {
                    bail!(
                        "bots on {} exited with {st}; output:\n{}",
                        self.name,
                        self.seen.join("\n")
                    );
                }
                break;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                bail!("bots on {} did not finish within {timeout:?}", self.name);
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = std::fs::read(&self.json)
            .with_context(|| format!("reading {}", self.json.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wall clock in milliseconds since the UNIX epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
