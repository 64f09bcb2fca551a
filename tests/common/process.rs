//! Nodes as real processes (the `pipemesh` binary), for tests that SIGKILL a node or need it to
//! refuse to start. Ports are chosen free on 127.0.0.1 before the start; the node's stderr goes
//! to a file that tests can read (and that is printed when a wait fails).
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback TCP port (bound, then released).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A free loopback UDP port (bound, then released).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A loopback port free for both UDP and TCP (both bound at once, then released): the media
/// port takes both.
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let port = udp.local_addr().expect("bound").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP in 100 tries");
}

/// How the process was started, to start it again on other ports.
#[derive(Default)]
struct Spawn {
    etcd: String,
    cluster: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

/// A `pipemesh serve` process.
pub struct NodeProcess {
    /// Its node id.
    pub id: String,
    /// Signaling address.
    pub signaling: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Pipe (QUIC) address.
    pub pipe: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    spawn: Spawn,
    /// Starts so far (a start that lost a port race is retried on fresh ports).
    starts: u32,
}

/// HTTP GET on loopback: (status, body). `None` when the connection fails.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw))
        .await
        .ok()?
        .ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

impl NodeProcess {
    /// The arguments of a cluster node on free loopback ports, with insecure pipes.
    pub fn spawn(id: &str, etcd: &str, cluster: &str, extra: &[&str]) -> NodeProcess {
        Self::spawn_with_env(id, etcd, cluster, extra, &[])
    }

    /// [`NodeProcess::spawn`] with more environment variables.
    pub fn spawn_with_env(
        id: &str,
        etcd: &str,
        cluster: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let spawn = Spawn {
            etcd: etcd.to_owned(),
            cluster: cluster.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Self::start(id, spawn, 1)
    }

    /// Starts the process on fresh free ports.
    fn start(id: &str, spawn: Spawn, starts: u32) -> NodeProcess {
        let (etcd, cluster) = (spawn.etcd.as_str(), spawn.cluster.as_str());
        let signaling = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let rtc = SocketAddr::from(([127, 0, 0, 1], free_udp_tcp_port()));
        let pipe = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let log = std::env::temp_dir().join(format!(
            "pipemesh-node-{}-{id}-{}.log",
            std::process::id(),
            free_tcp_port()
        ));
        let file = std::fs::File::create(&log).expect("node log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipemesh"));
        cmd.arg("serve")
            .arg(format!("--node-id={id}"))
            .arg(format!("--cluster={cluster}"))
            .arg(format!("--etcd-endpoints={etcd}"))
            .arg(format!("--signaling-listen={signaling}"))
            .arg(format!("--admin-listen={admin}"))
            .arg(format!("--rtc-listen={rtc}"))
            .arg(format!("--pipe-listen={pipe}"))
            .arg("--announced-address=127.0.0.1")
            .arg("--insecure-pipes")
            .args(&spawn.extra)
            .envs(spawn.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "PIPEMESH_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,dtls=error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().expect("spawn pipemesh");
        NodeProcess {
            id: id.to_owned(),
            signaling,
            admin,
            pipe,
            child: Some(child),
            log,
            spawn,
            starts,
        }
    }

    /// `ws://` URL of its signaling.
    pub fn url(&self) -> String {
        format!("ws://{}", self.signaling)
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 (panics with the log past `timeout`, or if it exits).
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((200, _)) = http_get(self.admin, "/readyz").await {
                return;
            }
            if let Some(status) = self.try_exit() {
                // Ports are chosen free, then released: another test may take one before the
                // node binds it. Start again on fresh ports.
                if self.log().contains("Address already in use") && self.starts < 3 {
                    let spawn = std::mem::take(&mut self.spawn);
                    *self = Self::start(&self.id.clone(), spawn, self.starts + 1);
                    continue;
                }
                panic!(
                    "node {} exited with {status} before ready:\n{}",
                    self.id,
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} not ready after {timeout:?}:\n{}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the process to exit (panics past `timeout`).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} still running after {timeout:?}:\n{}",
                self.id,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` on the admin listener as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        let (status, body) = http_get(self.admin, path)
            .await
            .unwrap_or_else(|| panic!("admin of {} unreachable", self.id));
        assert_eq!(status, 200, "GET {path} on {}: {body}", self.id);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// `/readyz` status code (0 when unreachable).
    pub async fn readyz(&self) -> u16 {
        http_get(self.admin, "/readyz").await.map_or(0, |(s, _)| s)
    }

    /// `/healthz` status code (0 when unreachable).
    pub async fn healthz(&self) -> u16 {
        http_get(self.admin, "/healthz").await.map_or(0, |(s, _)| s)
    }

    /// The node's `/metrics` counters.
    pub async fn metrics(&self) -> std::collections::HashMap<String, u64> {
        let (_, body) = http_get(self.admin, "/metrics").await.unwrap_or_default();
        super::parse_metrics(&body)
    }

    /// SIGKILL: no goodbye, no lease revoke.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        // SAFETY-free: `kill` the command-line tool sends SIGTERM without libc bindings.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let s = self.wait_exit(Duration::from_secs(10)).await;
        self.child = None;
        Some(s)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        // A failing test keeps the logs for the post-mortem.
        if std::thread::panicking() {
            eprintln!("node {} log kept at {}", self.id, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
