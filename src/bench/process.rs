//! A node under benchmark: a `pipemesh serve` child process on loopback, its addresses (read
//! from its startup log line), its `/metrics` and its CPU time. Dropping it kills the process.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cpu::process_cpu_time;

/// How long a node may take to print its "serving" line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Log lines of a node kept for error messages.
const LOG_TAIL: usize = 40;
/// WARN/ERROR lines of one kind (see [`problem_kind`]) echoed to our stderr before the rest
/// are only counted.
const ECHOED_PER_KIND: u64 = 3;

/// Pipe settings of a node: its QUIC listener and the other nodes (`ID=HOST:PORT`).
#[derive(Debug, Clone)]
pub struct PipeSettings {
    /// `--pipe-listen`.
    pub listen: SocketAddr,
    /// `--static-peer`, one per other node.
    pub static_peers: Vec<String>,
}

/// Addresses a node printed in its "pipemesh node serving" line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingAddrs {
    /// WebSocket signaling.
    pub signaling: SocketAddr,
    /// UDP/TCP media.
    pub rtc: SocketAddr,
    /// Admin HTTP (`/metrics`).
    pub admin: SocketAddr,
}

#[derive(Default)]
struct LogState {
    tail: VecDeque<String>,
    /// WARN/ERROR lines by kind.
    problems: BTreeMap<String, u64>,
}

/// A running `pipemesh serve` process.
pub struct NodeProcess {
    id: String,
    child: Child,
    addrs: ServingAddrs,
    log: Arc<Mutex<LogState>>,
}

impl NodeProcess {
    /// Starts `bin serve` on 127.0.0.1 (signaling, media and admin on ports the OS picks) with
    /// node id `id`, optional pipes, and log filter `log`; returns once it serves.
    pub fn spawn(bin: &Path, id: &str, pipes: Option<&PipeSettings>, log: &str) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--node-id", id])
            .args(["--signaling-listen", "127.0.0.1:0"])
            .args(["--rtc-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--announced-address", "127.0.0.1"])
            .args(["--log", log]);
        if let Some(p) = pipes {
            cmd.arg("--pipe-listen").arg(p.listen.to_string());
            for s in &p.static_peers {
                cmd.args(["--static-peer", s]);
            }
            cmd.arg("--insecure-pipes");
        }
        // The caller's PIPEMESH_* settings (a config file, other ports) must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PIPEMESH_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let stderr = child.stderr.take().context("child stderr")?;
        let log = Arc::new(Mutex::new(LogState::default()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            let id = id.to_owned();
            std::thread::Builder::new()
                .name(format!("node-{id}-log"))
                .spawn(move || read_log(stderr, &id, &log, tx))
                .context("log reader thread")?;
        }
        let mut node = NodeProcess {
            id: id.to_owned(),
            child,
            addrs: ServingAddrs {
                signaling: SocketAddr::from(([127, 0, 0, 1], 0)),
                rtc: SocketAddr::from(([127, 0, 0, 1], 0)),
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            log,
        };
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(a) => node.addrs = a,
            Err(_) => {
                // Give an exiting process a moment so its status and last words are in.
                std::thread::sleep(Duration::from_millis(200));
                let status = node.child.try_wait().ok().flatten();
                bail!(
                    "node {id} did not start ({}); its log ends with:\n{}",
                    status.map_or("still running".to_owned(), |s| s.to_string()),
                    node.log_tail()
                );
            }
        }
        Ok(node)
    }

    /// Its node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its addresses.
    pub fn addrs(&self) -> ServingAddrs {
        self.addrs
    }

    /// `ws://` URL of its signaling.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addrs.signaling)
    }

    /// CPU time it has used so far.
    pub fn cpu(&self) -> Result<Duration> {
        process_cpu_time(self.pid()).with_context(|| format!("CPU time of node {}", self.id))
    }

    /// WARN and ERROR lines it logged so far, counted by kind ([`problem_kind`]).
    pub fn problems(&self) -> BTreeMap<String, u64> {
        self.log
            .lock()
            .map(|l| l.problems.clone())
            .unwrap_or_default()
    }

    /// Its last log lines, one per line.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.tail.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(anyhow!(
                "node {} exited ({s}); its log ends with:\n{}",
                self.id,
                self.log_tail()
            )),
            Err(e) => Err(anyhow!("node {}: {e}", self.id)),
        }
    }

    /// Its `/metrics`, read over HTTP.
    pub async fn metrics(&self) -> Result<Metrics> {
        let admin = self.addrs.admin;
        let read = async {
            let mut s = tokio::net::TcpStream::connect(admin).await?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                .await?;
            let mut text = String::new();
            s.read_to_string(&mut text).await?;
            Ok::<_, std::io::Error>(text)
        };
        let text = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .map_err(|_| anyhow!("/metrics of node {} timed out", self.id))?
            .with_context(|| format!("/metrics of node {}", self.id))?;
        let body = text.split_once("\r\n\r\n").map_or(&text[..], |(_, b)| b);
        Ok(Metrics::parse(body))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Only this child, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(
    stderr: std::process::ChildStderr,
    id: &str,
    log: &Mutex<LogState>,
    serving: mpsc::Sender<ServingAddrs>,
) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let line = strip_ansi(&line);
        if let Some(a) = parse_serving_line(&line) {
            let _ = serving.send(a);
        }
        let Ok(mut l) = log.lock() else { break };
        if let Some(kind) = problem_kind(&line) {
            let n = l.problems.entry(kind).or_default();
            *n += 1;
            if *n <= ECHOED_PER_KIND {
                eprintln!("[node {id}] {line}");
            }
            if *n == ECHOED_PER_KIND {
                eprintln!("[node {id}] (more of these are only counted)");
            }
        }
        if l.tail.len() == LOG_TAIL {
            l.tail.pop_front();
        }
        l.tail.push_back(line);
    }
}

/// For a WARN or ERROR line of a node's log: the line without its timestamp, cut to 100
/// characters, with each run of digits replaced by one `#`, so repeats of one message count as
/// one kind.
pub fn problem_kind(line: &str) -> Option<String> {
    // "<timestamp> <LEVEL> <target>: <message> <fields>"
    let ts = line.split_whitespace().next()?;
    let rest = line.get(line.find(ts)? + ts.len()..)?.trim_start();
    if !(rest.starts_with("WARN ") || rest.starts_with("ERROR ")) {
        return None;
    }
    let mut kind = String::with_capacity(rest.len().min(100));
    for c in rest.chars().take(100) {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
        }
    }
    Some(kind)
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The addresses of a node's "pipemesh node serving signaling=… rtc=… admin=…" log line.
pub fn parse_serving_line(line: &str) -> Option<ServingAddrs> {
    let (_, fields) = line.split_once("pipemesh node serving")?;
    let mut signaling = None;
    let mut rtc = None;
    let mut admin = None;
    for f in fields.split_whitespace() {
        let Some((k, v)) = f.split_once('=') else {
            continue;
        };
        let slot = match k {
            "signaling" => &mut signaling,
            "rtc" => &mut rtc,
            "admin" => &mut admin,
            _ => continue,
        };
        *slot = v.parse().ok();
    }
    Some(ServingAddrs {
        signaling: signaling?,
        rtc: rtc?,
        admin: admin?,
    })
}

/// One reading of a node's `/metrics`: series (name with labels, `pipemesh_` prefix removed)
/// to value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// Parses Prometheus text (comments and malformed lines skipped).
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else { continue };
            let k = k.trim();
            m.insert(k.strip_prefix("pipemesh_").unwrap_or(k).to_owned(), v);
        }
        Metrics(m)
    }

    /// The value of `series`, 0 when absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// `self - earlier` for every series of `self` (counters' increase over an interval).
    pub fn delta(&self, earlier: &Metrics) -> Metrics {
        Metrics(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.get(k)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_line_with_and_without_colours() {
        let coloured = "\u{1b}[2m2026-11-24T16:27:56.197662Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
            \u{1b}[2mpipemesh::node\u{1b}[0m\u{1b}[2m:\u{1b}[0m pipemesh node serving \
            \u{1b}[3msignaling\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:35653 \
            \u{1b}[3mrtc\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:58787 \
            \u{1b}[3madmin\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:45649";
        let plain = strip_ansi(coloured);
        assert!(plain.contains(" INFO pipemesh::node: pipemesh node serving signaling=127"));
        let a = parse_serving_line(&plain).unwrap();
        assert_eq!(
            a.signaling,
            "127.0.0.1:35653".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(a.rtc, "127.0.0.1:58787".parse::<SocketAddr>().unwrap());
        assert_eq!(a.admin, "127.0.0.1:45649".parse::<SocketAddr>().unwrap());
        assert_eq!(
            parse_serving_line("pipemesh node serving rtc=1.2.3.4:5"),
            None
        );
        assert_eq!(parse_serving_line("shutting down"), None);
    }

    #[test]
    fn problem_kinds_ignore_timestamps_and_numbers() {
        let a = problem_kind("2026-11-24T16:39:43.495922Z  WARN pipemesh::node: peer queue full; disconnecting it session=11");
        let b = problem_kind("2026-11-24T16:39:44.000000Z  WARN pipemesh::node: peer queue full; disconnecting it session=6");
        assert_eq!(a, b);
        assert_eq!(
            a.as_deref(),
            Some("WARN pipemesh::node: peer queue full; disconnecting it session=#")
        );
        assert!(problem_kind("2026-11-24T16:39:43Z ERROR x: boom").is_some());
        assert_eq!(
            problem_kind("2026-11-24T16:39:43Z  INFO x: WARN in text"),
            None
        );
    }

    #[test]
    fn metrics_with_labels_and_deltas() {
        let a = Metrics::parse(
            "# HELP x\npipemesh_rtp_sent_total 10\npipemesh_pipe_link_up{peer=\"b\"} 1\nbad\n",
        );
        let b = Metrics::parse("pipemesh_rtp_sent_total 25\npipemesh_new_total 3\n");
        assert_eq!(a.get("pipe_link_up{peer=\"b\"}"), 1.0);
        assert_eq!(a.get("missing"), 0.0);
        let d = b.delta(&a);
        assert_eq!((d.get("rtp_sent_total"), d.get("new_total")), (15.0, 3.0));
    }
}
