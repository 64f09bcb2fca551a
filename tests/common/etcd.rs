//! A real etcd server for discovery tests: Debian's `etcd` (package `etcd-server`), started on
//! free loopback ports with its own data directory, stopped (and the directory removed) on drop.
//! `stop` and `start_again` keep the data directory, so tests can take etcd away and bring the
//! same cluster back (`start_again_on` on another client address). [`EtcdTls`] serves clients
//! over TLS with certificates made here; health is read on a separate plain metrics listener.
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

/// A free loopback address (bound, then released).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Server certificates for a TLS etcd, and a client certificate it accepts, as PEM files in
/// the server's data directory's parent.
pub struct EtcdTls {
    /// The CA that signs every certificate here.
    pub ca: PathBuf,
    /// The server certificate (for `localhost` and 127.0.0.1) and its key.
    pub server_cert: PathBuf,
    server_key: PathBuf,
    /// A client certificate and its key, signed by the CA.
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

impl EtcdTls {
    /// Makes a CA, a server and a client certificate in `dir`.
    pub fn generate(dir: &std::path::Path) -> EtcdTls {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        std::fs::create_dir_all(dir).expect("certificate directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issue = |names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(names)
                .expect("params")
                .signed_by(&key, &ca, &ca_key)
                .expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = issue(vec!["pipemesh-node".into()]);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        EtcdTls {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}

/// One single-member etcd cluster.
pub struct Etcd {
    /// Client address (`http://` + this is the endpoint).
    pub client: SocketAddr,
    peer: SocketAddr,
    metrics: SocketAddr,
    dir: PathBuf,
    tls: Option<EtcdTls>,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub async fn start() -> Etcd {
        Self::start_with(false, &[]).await
    }

    /// Starts etcd serving clients over TLS only, requiring client certificates signed by
    /// [`Etcd::tls`]'s CA when `client_cert_auth`.
    pub async fn start_tls(client_cert_auth: bool) -> Etcd {
        let args: &[&str] = if client_cert_auth {
            &["--client-cert-auth"]
        } else {
            &[]
        };
        Self::start_with(true, args).await
    }

    /// Starts etcd with more command-line arguments (`--auth-token-ttl=1`, ...).
    pub async fn start_with(tls: bool, extra_args: &[&str]) -> Etcd {
        let n = std::process::id();
        let base = std::env::temp_dir().join(format!(
            "pipemesh-etcd-{n}-{}",
            free_port() // distinct per call
        ));
        let mut e = Etcd {
            client: free_addr(),
            peer: free_addr(),
            metrics: free_addr(),
            dir: base.join("data"),
            tls: tls.then(|| EtcdTls::generate(&base.join("certs"))),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        e.start_again().await;
        e
    }

    /// The TLS files, for a server started with [`Etcd::start_tls`].
    pub fn tls(&self) -> &EtcdTls {
        self.tls.as_ref().expect("etcd started with TLS")
    }

    /// The endpoint to give clients.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// A plain etcd-client on this server (no TLS, no authentication).
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("etcd-client connects")
    }

    /// Restarts the server with the same data directory but clients served on `client`
    /// (another port: clients of the old address cannot see it). Waits until healthy.
    pub async fn start_again_on(&mut self, client: SocketAddr) {
        self.client = client;
        self.start_again().await;
    }

    /// (Re)starts the server on the same ports and data directory; waits until healthy.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let client = self.endpoint();
        let peer = format!("http://{}", self.peer);
        let mut command = Command::new(etcd_binary());
        command
            .arg("--name=pm")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=pm={peer}"))
            .arg(format!("--listen-metrics-urls=http://{}", self.metrics))
            .arg("--log-level=error")
            .args(&self.extra_args);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()));
        }
        let child = command
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
            if let Ok(body) = http(self.metrics, "GET", "/health", "").await {
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
        http(self.client, method, path, body).await
    }
}

async fn http(to: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(to).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
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
