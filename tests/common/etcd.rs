//! A real etcd server for discovery tests: Debian's `etcd` (package `etcd-server`), started on
//! free loopback ports with its own data directory, stopped (and the directory removed) on drop.
//! `stop` and `start_again` keep the data directory, so tests can take etcd away and bring the
//! same cluster back.
#![allow(dead_code)] // each test file uses a different subset

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The etcd binary (override with `PIPEMESH_ETCD_BIN`).
pub fn etcd_binary() -> String {
    std::env::var("PIPEMESH_ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One single-member etcd cluster.
pub struct Etcd {
    /// Client address (`http://` + this is the endpoint).
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub async fn start() -> Etcd {
        let n = std::process::id();
        let dir = std::env::temp_dir().join(format!(
            "pipemesh-etcd-{n}-{}",
            free_port() // distinct per call
        ));
        let mut e = Etcd {
            client: SocketAddr::from(([127, 0, 0, 1], free_port())),
            peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            child: None,
        };
        e.start_again().await;
        e
    }

    /// The endpoint to give clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// (Re)starts the server on the same ports and data directory; waits until healthy.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer);
        let child = Command::new(etcd_binary())
            .arg("--name=pm")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=pm={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (Debian package etcd-server; ./scripts/test-all installs it): {e}",
                    etcd_binary()
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(body) = self.http("GET", "/health", "").await {
                if body.contains("\"health\":\"true\"") {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited during startup: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd not healthy within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (SIGKILL); the data directory stays for [`Etcd::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Puts a key through etcd's v3 JSON gateway (for tests that plant values).
    pub async fn put(&self, key: &str, value: &[u8]) {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(key.as_bytes()),
            base64(value)
        );
        let r = self
            .http("POST", "/v3/kv/put", &body)
            .await
            .expect("etcd reachable");
        assert!(r.contains("\"header\""), "put failed: {r}");
    }

    /// The value of a key through the JSON gateway, base64 as etcd returns it.
    pub async fn get_base64(&self, key: &str) -> Option<String> {
        let body = format!(r#"{{"key":"{}"}}"#, base64(key.as_bytes()));
        let r = self.http("POST", "/v3/kv/range", &body).await.ok()?;
        let at = r.find("\"value\":\"")? + "\"value\":\"".len();
        Some(r[at..].split('"').next()?.to_owned())
    }

    async fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(self.client).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Standard base64 with padding (the JSON gateway's encoding of bytes).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
