//! Node settings. Each setting comes from, in order of precedence: a command-line flag, a
//! `PIPEMESH_*` environment variable (both handled by clap), the TOML file named by `--config`,
//! and finally the embedded default. Defaults let `pipemesh serve` run on a laptop unchanged.

use crate::admin::token::{AdminToken, AdminTokenText};
use crate::auth::AuthSecret;
use crate::signaling::limits::PeerLimits;
use crate::signaling::protoo::MAX_MESSAGE_BYTES;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Errors while assembling the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for our settings.
    #[error("invalid config file {path}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its allowed range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting's name, as in the TOML file.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

/// The effective configuration of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// WebSocket signaling listener (protoo, mediasoup-demo v3 protocol). Also serves the demo page.
    pub signaling_listen: SocketAddr,
    /// One UDP and one TCP port shared by every WebRtcTransport.
    pub rtc_listen: SocketAddr,
    /// Address advertised in ICE candidates. When unset: the listen IP if it is specific,
    /// otherwise the first non-loopback IPv4 address of the host, otherwise 127.0.0.1.
    pub announced_address: Option<String>,
    /// Admin HTTP listener (`/healthz`, `/api/v1/...`, `/metrics`). Loopback by default: the
    /// admin API is open unless a token is set.
    pub admin_listen: SocketAddr,
    /// File whose first line is the admin API's bearer token (required on every admin route but
    /// `/healthz` and `/readyz`). Wins over `PIPEMESH_ADMIN_TOKEN`. Unset and no
    /// `PIPEMESH_ADMIN_TOKEN`: the admin API is open.
    pub admin_token_file: Option<PathBuf>,
    /// The admin API's bearer token itself, from `PIPEMESH_ADMIN_TOKEN`: never read from nor
    /// written to the TOML file, and not shown by `Debug`.
    #[serde(skip)]
    pub admin_token: Option<AdminTokenText>,
    /// This node's id in the cluster. Defaults to the host name.
    pub node_id: String,
    /// Region label of this node.
    pub region: String,
    /// How producers are piped between nodes: `tree` (each producer enters each other region
    /// once, through a relay there) or `mesh` (every node pipes from the origin).
    pub routing: crate::discovery::routing::RoutingMode,
    /// Withhold upper simulcast layers toward a node whose pipe link is congested (loss or
    /// queueing delay rising; see `pipe::shedding`). `false` pipes every layer whatever the
    /// link does.
    pub pipe_layer_shedding: bool,
    /// `tracing` filter, e.g. `info` or `pipemesh=debug,info`.
    pub log: String,
    /// Directory served at `/` on the signaling listener (the demo page), if it exists.
    pub web_root: Option<PathBuf>,
    /// Close a transport when no valid ICE consent check arrived for this many seconds.
    pub consent_timeout_secs: u64,
    /// Upper bound on peers per room.
    pub max_peers_per_room: usize,
    /// Upper bound on concurrent signaling connections.
    pub max_signaling_connections: usize,
    /// Cluster name: pipes refuse nodes of another cluster (and etcd keys are prefixed by it).
    pub cluster: String,
    /// QUIC listener for pipes from other nodes. Unset: no pipes (a single node).
    pub pipe_listen: Option<SocketAddr>,
    /// Other nodes, as `NODE_ID=HOST:PORT` (their pipe listeners), until discovery exists.
    pub static_peers: Vec<String>,
    /// PEM file of the cluster CA that signs every node certificate (`pipemesh certs`).
    pub cluster_ca: Option<PathBuf>,
    /// PEM file of this node's certificate (issued for its node id by the cluster CA).
    pub node_cert: Option<PathBuf>,
    /// PEM file of this node's private key.
    pub node_key: Option<PathBuf>,
    /// Pipes without certificate checks (self-signed, any peer accepted): local experiments only.
    pub insecure_pipes: bool,
    /// Seconds consumers of a remote producer wait without media (pipe link down) before they
    /// are closed and their peers told `consumerClosed`.
    pub pipe_grace_secs: u64,
    /// On SIGTERM/SIGINT, seconds the node drains (no new peers, sessions go on) before it
    /// closes what is left and stops; 0 stops at once.
    pub drain_deadline_secs: u64,
    /// Seconds a pipe link no room needs any more stays open (rooms that empty and refill do
    /// not redial). Links to static peers are always needed.
    pub pipe_idle_linger_secs: u64,
    /// `HOST:PORT` other nodes dial to reach this node's pipe listener. Unset: the announced
    /// address with the pipe listener's port.
    pub pipe_announced_address: Option<String>,
    /// WebSocket URL clients use to reach this node's signaling (published in the cluster
    /// registry). Unset: `ws://<announced address>:<signaling port>`.
    pub signaling_url: Option<String>,
    /// etcd client URLs (`http://host:2379` or `https://...`). Empty: a single node on the
    /// in-process registry.
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) that signs the etcd servers' certificates (for `https` endpoints).
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd client-certificate authentication.
    pub etcd_cert: Option<PathBuf>,
    /// Client private key (PEM) for etcd client-certificate authentication.
    pub etcd_key: Option<PathBuf>,
    /// etcd user (role-based authentication); the password comes from `etcd_password_file`
    /// or the `PIPEMESH_ETCD_PASSWORD` environment variable.
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (first line).
    pub etcd_password_file: Option<PathBuf>,
    /// TTL in seconds of this node's etcd lease: a node that dies is removed from the cluster
    /// this long after its last keepalive.
    pub etcd_lease_ttl_secs: u64,
    /// Seconds to wait for etcd at start before refusing to start.
    pub etcd_connect_timeout_secs: u64,
    /// File holding the cluster secret that signs room tokens (at least 32 bytes; surrounding
    /// whitespace ignored). Also from the `PIPEMESH_AUTH_SECRET` environment variable. Unset:
    /// no tokens, anonymous joins from loopback clients only.
    pub auth_secret_file: Option<PathBuf>,
    /// WebRtcTransports one peer may have open.
    pub max_transports_per_peer: usize,
    /// Producers one peer may have open.
    pub max_producers_per_peer: usize,
    /// Consumers one peer may have open; further producers are not offered to it.
    pub max_consumers_per_peer: usize,
    /// Largest signaling message, in bytes; a larger one closes the connection.
    pub max_signaling_message_bytes: usize,
    /// Sustained signaling requests per second per peer; excess requests get error 429.
    pub signaling_requests_per_sec: u32,
    /// Signaling requests a peer may send in a burst above the sustained rate.
    pub signaling_request_burst: u32,
}

/// A static peer: another node and the address of its pipe listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticPeer {
    /// The node id it must present.
    pub node_id: String,
    /// `HOST:PORT` of its pipe listener (resolved when dialing).
    pub address: String,
}

impl std::str::FromStr for StaticPeer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("static peer {s:?} is not NODE_ID=HOST:PORT"))?;
        if !valid_node_id(id) {
            return Err(format!("static peer {s:?}: invalid node id {id:?}"));
        }
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("static peer {s:?}: address {addr:?} has no :PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "static peer {s:?}: address {addr:?} is not HOST:PORT"
            ));
        }
        Ok(StaticPeer {
            node_id: id.to_owned(),
            address: addr.to_owned(),
        })
    }
}

/// Node ids: 1-64 ASCII letters, digits, '-', '_', '.'.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl Default for Config {
    fn default() -> Self {
        let limits = PeerLimits::default();
        Self {
            signaling_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4443),
            rtc_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 40000),
            announced_address: None,
            admin_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            admin_token_file: None,
            admin_token: None,
            node_id: default_node_id(),
            region: "default".into(),
            routing: crate::discovery::routing::RoutingMode::Tree,
            pipe_layer_shedding: true,
            log: "info,dtls=error".into(),
            web_root: None,
            consent_timeout_secs: 30,
            max_peers_per_room: 500,
            max_signaling_connections: 10_000,
            cluster: "pipemesh".into(),
            pipe_listen: None,
            static_peers: Vec::new(),
            cluster_ca: None,
            node_cert: None,
            node_key: None,
            insecure_pipes: false,
            pipe_grace_secs: 10,
            drain_deadline_secs: 30,
            pipe_idle_linger_secs: 30,
            pipe_announced_address: None,
            signaling_url: None,
            etcd_endpoints: Vec::new(),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
            etcd_lease_ttl_secs: 3,
            etcd_connect_timeout_secs: 10,
            auth_secret_file: None,
            max_transports_per_peer: limits.max_transports,
            max_producers_per_peer: limits.max_producers,
            max_consumers_per_peer: limits.max_consumers,
            max_signaling_message_bytes: limits.max_message_bytes,
            signaling_requests_per_sec: limits.requests_per_sec,
            signaling_request_burst: limits.request_burst,
        }
    }
}

/// Flags of `pipemesh serve`; each also reads a `PIPEMESH_*` environment variable.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "PIPEMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// WebSocket signaling listener [default: 0.0.0.0:4443]
    #[arg(long, env = "PIPEMESH_SIGNALING_LISTEN", value_name = "ADDR:PORT")]
    pub signaling_listen: Option<SocketAddr>,
    /// UDP and TCP port for all WebRtcTransports [default: 0.0.0.0:40000]
    #[arg(long, env = "PIPEMESH_RTC_LISTEN", value_name = "IP:PORT")]
    pub rtc_listen: Option<SocketAddr>,
    /// IP or host name advertised in ICE candidates [default: auto-detected]
    #[arg(long, env = "PIPEMESH_ANNOUNCED_ADDRESS", value_name = "IP|HOST")]
    pub announced_address: Option<String>,
    /// Admin HTTP listener [default: 127.0.0.1:9090]
    #[arg(long, env = "PIPEMESH_ADMIN_LISTEN", value_name = "ADDR:PORT")]
    pub admin_listen: Option<SocketAddr>,
    /// File whose first line is the admin API's bearer token (or the token itself in
    /// PIPEMESH_ADMIN_TOKEN; the file wins) [default: none, admin API open]
    #[arg(long, env = "PIPEMESH_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin API's bearer token itself. Meant for the environment (PIPEMESH_ADMIN_TOKEN):
    /// a command-line value shows in `ps`, so the flag is not advertised.
    #[arg(
        long,
        env = "PIPEMESH_ADMIN_TOKEN",
        value_name = "TOKEN",
        value_parser = admin_token_text,
        hide = true,
        hide_env_values = true
    )]
    pub admin_token: Option<AdminTokenText>,
    /// Node id [default: host name]
    #[arg(long, env = "PIPEMESH_NODE_ID")]
    pub node_id: Option<String>,
    /// Region label [default: default]
    #[arg(long, env = "PIPEMESH_REGION")]
    pub region: Option<String>,
    /// Routing of producers between nodes: tree or mesh [default: tree]
    #[arg(long, env = "PIPEMESH_ROUTING", value_name = "tree|mesh")]
    pub routing: Option<crate::discovery::routing::RoutingMode>,
    /// Shed upper simulcast layers toward nodes whose pipe link is congested [default: true]
    #[arg(long, env = "PIPEMESH_PIPE_LAYER_SHEDDING", value_name = "true|false")]
    pub pipe_layer_shedding: Option<bool>,
    /// Log filter [default: info]
    #[arg(long, env = "PIPEMESH_LOG")]
    pub log: Option<String>,
    /// Directory served at / on the signaling listener (demo page)
    #[arg(long, env = "PIPEMESH_WEB_ROOT")]
    pub web_root: Option<PathBuf>,
    /// Seconds without ICE consent before a transport closes [default: 30]
    #[arg(long, env = "PIPEMESH_CONSENT_TIMEOUT_SECS")]
    pub consent_timeout_secs: Option<u64>,
    /// Maximum peers per room [default: 500]
    #[arg(long, env = "PIPEMESH_MAX_PEERS_PER_ROOM")]
    pub max_peers_per_room: Option<usize>,
    /// Maximum concurrent signaling connections [default: 10000]
    #[arg(long, env = "PIPEMESH_MAX_SIGNALING_CONNECTIONS")]
    pub max_signaling_connections: Option<usize>,
    /// Cluster name [default: pipemesh]
    #[arg(long, env = "PIPEMESH_CLUSTER")]
    pub cluster: Option<String>,
    /// QUIC listener for pipes from other nodes [default: none]
    #[arg(long, env = "PIPEMESH_PIPE_LISTEN", value_name = "IP:PORT")]
    pub pipe_listen: Option<SocketAddr>,
    /// Another node's pipe listener; repeatable (environment: comma-separated)
    #[arg(
        long = "static-peer",
        env = "PIPEMESH_STATIC_PEERS",
        value_name = "NODE_ID=HOST:PORT",
        value_delimiter = ','
    )]
    pub static_peers: Vec<String>,
    /// Cluster CA certificate (PEM) for pipes
    #[arg(long, env = "PIPEMESH_CLUSTER_CA", value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// This node's certificate (PEM) for pipes
    #[arg(long, env = "PIPEMESH_NODE_CERT", value_name = "FILE")]
    pub node_cert: Option<PathBuf>,
    /// This node's private key (PEM) for pipes
    #[arg(long, env = "PIPEMESH_NODE_KEY", value_name = "FILE")]
    pub node_key: Option<PathBuf>,
    /// Pipes without certificate checks (local experiments only)
    #[arg(long, env = "PIPEMESH_INSECURE_PIPES")]
    pub insecure_pipes: bool,
    /// Seconds remote consumers wait for a broken pipe link before closing [default: 10]
    #[arg(long, env = "PIPEMESH_PIPE_GRACE_SECS")]
    pub pipe_grace_secs: Option<u64>,
    /// Seconds to drain on SIGTERM before stopping; 0 stops at once [default: 30]
    #[arg(long, env = "PIPEMESH_DRAIN_DEADLINE_SECS")]
    pub drain_deadline_secs: Option<u64>,
    /// Seconds an unneeded pipe link stays open [default: 30]
    #[arg(long, env = "PIPEMESH_PIPE_IDLE_LINGER_SECS")]
    pub pipe_idle_linger_secs: Option<u64>,
    /// HOST:PORT other nodes dial for this node's pipes [default: announced address + pipe port]
    #[arg(
        long,
        env = "PIPEMESH_PIPE_ANNOUNCED_ADDRESS",
        value_name = "HOST:PORT"
    )]
    pub pipe_announced_address: Option<String>,
    /// Signaling URL published for this node [default: ws://<announced address>:<port>]
    #[arg(long, env = "PIPEMESH_SIGNALING_URL", value_name = "URL")]
    pub signaling_url: Option<String>,
    /// etcd endpoints; joins the cluster through etcd (environment: comma-separated)
    /// [default: none, a single node on the in-process registry]
    #[arg(
        long,
        env = "PIPEMESH_ETCD_ENDPOINTS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) of the etcd servers
    #[arg(long, env = "PIPEMESH_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd
    #[arg(long, env = "PIPEMESH_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Client private key (PEM) for etcd
    #[arg(long, env = "PIPEMESH_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (password: --etcd-password-file or PIPEMESH_ETCD_PASSWORD)
    #[arg(long, env = "PIPEMESH_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// File with the etcd user's password
    #[arg(long, env = "PIPEMESH_ETCD_PASSWORD_FILE", value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// TTL of this node's etcd lease, seconds [default: 3]
    #[arg(long, env = "PIPEMESH_ETCD_LEASE_TTL_SECS")]
    pub etcd_lease_ttl_secs: Option<u64>,
    /// Seconds to wait for etcd at start [default: 10]
    #[arg(long, env = "PIPEMESH_ETCD_CONNECT_TIMEOUT_SECS")]
    pub etcd_connect_timeout_secs: Option<u64>,
    /// File with the cluster secret that signs room tokens (or PIPEMESH_AUTH_SECRET)
    /// [default: none, anonymous joins from loopback only]
    #[arg(long, env = "PIPEMESH_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// WebRtcTransports per peer [default: 4]
    #[arg(long, env = "PIPEMESH_MAX_TRANSPORTS_PER_PEER")]
    pub max_transports_per_peer: Option<usize>,
    /// Producers per peer [default: 16]
    #[arg(long, env = "PIPEMESH_MAX_PRODUCERS_PER_PEER")]
    pub max_producers_per_peer: Option<usize>,
    /// Consumers per peer [default: 500]
    #[arg(long, env = "PIPEMESH_MAX_CONSUMERS_PER_PEER")]
    pub max_consumers_per_peer: Option<usize>,
    /// Largest signaling message in bytes [default: 65536]
    #[arg(long, env = "PIPEMESH_MAX_SIGNALING_MESSAGE_BYTES")]
    pub max_signaling_message_bytes: Option<usize>,
    /// Sustained signaling requests per second per peer [default: 50]
    #[arg(long, env = "PIPEMESH_SIGNALING_REQUESTS_PER_SEC")]
    pub signaling_requests_per_sec: Option<u32>,
    /// Signaling request burst per peer [default: 100]
    #[arg(long, env = "PIPEMESH_SIGNALING_REQUEST_BURST")]
    pub signaling_request_burst: Option<u32>,
}

impl Config {
    /// Reads a TOML file into a config; missing keys take their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text; missing keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// File (if any) overlaid by flags and environment, then validated.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut cfg = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        cfg.apply(args);
        cfg.validate()?;
        // Refuse a missing or weak secret now rather than when the node starts listening.
        cfg.auth_secret()?;
        cfg.load_admin_token()?;
        Ok(cfg)
    }

    /// Overlays the values given as flags or environment variables.
    pub fn apply(&mut self, a: &ServeArgs) {
        if let Some(v) = a.signaling_listen {
            self.signaling_listen = v;
        }
        if let Some(v) = a.rtc_listen {
            self.rtc_listen = v;
        }
        if let Some(v) = &a.announced_address {
            self.announced_address = Some(v.clone());
        }
        if let Some(v) = a.admin_listen {
            self.admin_listen = v;
        }
        if let Some(v) = &a.admin_token_file {
            self.admin_token_file = Some(v.clone());
        }
        if let Some(v) = &a.admin_token {
            self.admin_token = Some(v.clone());
        }
        if let Some(v) = &a.node_id {
            self.node_id = v.clone();
        }
        if let Some(v) = &a.region {
            self.region = v.clone();
        }
        if let Some(v) = a.routing {
            self.routing = v;
        }
        if let Some(v) = a.pipe_layer_shedding {
            self.pipe_layer_shedding = v;
        }
        if let Some(v) = &a.log {
            self.log = v.clone();
        }
        if let Some(v) = &a.web_root {
            self.web_root = Some(v.clone());
        }
        if let Some(v) = a.consent_timeout_secs {
            self.consent_timeout_secs = v;
        }
        if let Some(v) = a.max_peers_per_room {
            self.max_peers_per_room = v;
        }
        if let Some(v) = a.max_signaling_connections {
            self.max_signaling_connections = v;
        }
        if let Some(v) = &a.cluster {
            self.cluster = v.clone();
        }
        if let Some(v) = a.pipe_listen {
            self.pipe_listen = Some(v);
        }
        if !a.static_peers.is_empty() {
            self.static_peers = a.static_peers.clone();
        }
        if let Some(v) = &a.cluster_ca {
            self.cluster_ca = Some(v.clone());
        }
        if let Some(v) = &a.node_cert {
            self.node_cert = Some(v.clone());
        }
        if let Some(v) = &a.node_key {
            self.node_key = Some(v.clone());
        }
        if a.insecure_pipes {
            self.insecure_pipes = true;
        }
        if let Some(v) = a.pipe_grace_secs {
            self.pipe_grace_secs = v;
        }
        if let Some(v) = a.drain_deadline_secs {
            self.drain_deadline_secs = v;
        }
        if let Some(v) = a.pipe_idle_linger_secs {
            self.pipe_idle_linger_secs = v;
        }
        if let Some(v) = &a.pipe_announced_address {
            self.pipe_announced_address = Some(v.clone());
        }
        if let Some(v) = &a.signaling_url {
            self.signaling_url = Some(v.clone());
        }
        if !a.etcd_endpoints.is_empty() {
            self.etcd_endpoints = a.etcd_endpoints.clone();
        }
        if let Some(v) = &a.etcd_ca {
            self.etcd_ca = Some(v.clone());
        }
        if let Some(v) = &a.etcd_cert {
            self.etcd_cert = Some(v.clone());
        }
        if let Some(v) = &a.etcd_key {
            self.etcd_key = Some(v.clone());
        }
        if let Some(v) = &a.etcd_user {
            self.etcd_user = Some(v.clone());
        }
        if let Some(v) = &a.etcd_password_file {
            self.etcd_password_file = Some(v.clone());
        }
        if let Some(v) = a.etcd_lease_ttl_secs {
            self.etcd_lease_ttl_secs = v;
        }
        if let Some(v) = a.etcd_connect_timeout_secs {
            self.etcd_connect_timeout_secs = v;
        }
        if let Some(v) = &a.auth_secret_file {
            self.auth_secret_file = Some(v.clone());
        }
        if let Some(v) = a.max_transports_per_peer {
            self.max_transports_per_peer = v;
        }
        if let Some(v) = a.max_producers_per_peer {
            self.max_producers_per_peer = v;
        }
        if let Some(v) = a.max_consumers_per_peer {
            self.max_consumers_per_peer = v;
        }
        if let Some(v) = a.max_signaling_message_bytes {
            self.max_signaling_message_bytes = v;
        }
        if let Some(v) = a.signaling_requests_per_sec {
            self.signaling_requests_per_sec = v;
        }
        if let Some(v) = a.signaling_request_burst {
            self.signaling_request_burst = v;
        }
    }

    /// Refuses values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_node_id(&self.node_id) {
            return Err(ConfigError::Invalid {
                name: "node_id",
                reason: format!(
                    "{:?} must be 1-64 ASCII letters, digits, '-', '_', '.'",
                    self.node_id
                ),
            });
        }
        if self.consent_timeout_secs == 0 || self.consent_timeout_secs > 3600 {
            return Err(ConfigError::Invalid {
                name: "consent_timeout_secs",
                reason: "must be between 1 and 3600".into(),
            });
        }
        if self.max_peers_per_room == 0 {
            return Err(ConfigError::Invalid {
                name: "max_peers_per_room",
                reason: "must be at least 1".into(),
            });
        }
        if self.cluster.is_empty()
            || self.cluster.len() > 64
            || !self.cluster.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ConfigError::Invalid {
                name: "cluster",
                reason: "must be 1-64 printable ASCII characters".into(),
            });
        }
        if self.pipe_grace_secs == 0 || self.pipe_grace_secs > 3600 {
            return Err(ConfigError::Invalid {
                name: "pipe_grace_secs",
                reason: "must be between 1 and 3600".into(),
            });
        }
        let peers = self.parsed_static_peers()?;
        if peers.iter().any(|p| p.node_id == self.node_id) {
            return Err(ConfigError::Invalid {
                name: "static_peers",
                reason: format!("lists this node's own id {:?}", self.node_id),
            });
        }
        let pki = [&self.cluster_ca, &self.node_cert, &self.node_key];
        let given = pki.iter().filter(|p| p.is_some()).count();
        if given != 0 && given != 3 {
            return Err(ConfigError::Invalid {
                name: "cluster_ca/node_cert/node_key",
                reason: "give all three (see `pipemesh certs`) or none".into(),
            });
        }
        let pipes = self.pipe_listen.is_some() || !peers.is_empty();
        if pipes && given == 0 && !self.insecure_pipes {
            return Err(ConfigError::Invalid {
                name: "pipes",
                reason: "pipes need --cluster-ca, --node-cert and --node-key (or --insecure-pipes for local experiments)".into(),
            });
        }
        if self.drain_deadline_secs > 24 * 3600 {
            return Err(ConfigError::Invalid {
                name: "drain_deadline_secs",
                reason: "must be at most 86400".into(),
            });
        }
        if self.pipe_idle_linger_secs == 0 || self.pipe_idle_linger_secs > 3600 {
            return Err(ConfigError::Invalid {
                name: "pipe_idle_linger_secs",
                reason: "must be between 1 and 3600".into(),
            });
        }
        self.validate_etcd(!peers.is_empty())?;
        self.validate_limits()?;
        if let Some(a) = &self.pipe_announced_address {
            if a.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().map_or(true, |p| p == 0))
            {
                return Err(ConfigError::Invalid {
                    name: "pipe_announced_address",
                    reason: format!("{a:?} is not HOST:PORT"),
                });
            }
        }
        if let Some(u) = &self.signaling_url {
            if !(u.starts_with("ws://") || u.starts_with("wss://")) {
                return Err(ConfigError::Invalid {
                    name: "signaling_url",
                    reason: format!("{u:?} must start with ws:// or wss://"),
                });
            }
        }
        if let Some(a) = &self.announced_address {
            if a.is_empty() {
                return Err(ConfigError::Invalid {
                    name: "announced_address",
                    reason: "must not be empty".into(),
                });
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: String| Err(ConfigError::Invalid { name, reason });
        for (name, v) in [
            ("max_transports_per_peer", self.max_transports_per_peer),
            ("max_producers_per_peer", self.max_producers_per_peer),
            ("max_consumers_per_peer", self.max_consumers_per_peer),
        ] {
            if v == 0 {
                return invalid(name, "must be at least 1".into());
            }
        }
        if !(4096..=MAX_MESSAGE_BYTES).contains(&self.max_signaling_message_bytes) {
            return invalid(
                "max_signaling_message_bytes",
                format!("must be between 4096 and {MAX_MESSAGE_BYTES}"),
            );
        }
        if self.signaling_requests_per_sec == 0 || self.signaling_request_burst == 0 {
            return invalid(
                "signaling_requests_per_sec/signaling_request_burst",
                "must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// The limits every peer gets.
    pub fn peer_limits(&self) -> PeerLimits {
        PeerLimits {
            max_transports: self.max_transports_per_peer,
            max_producers: self.max_producers_per_peer,
            max_consumers: self.max_consumers_per_peer,
            max_message_bytes: self.max_signaling_message_bytes,
            requests_per_sec: self.signaling_requests_per_sec,
            request_burst: self.signaling_request_burst,
        }
    }

    /// The token secret: `auth_secret_file`'s text, else `PIPEMESH_AUTH_SECRET`; `None` when
    /// neither is set. Refused when shorter than 32 bytes.
    pub fn auth_secret(&self) -> Result<Option<AuthSecret>, ConfigError> {
        load_auth_secret(self.auth_secret_file.as_deref())
    }

    /// The admin API's bearer token: the first line of `admin_token_file` (trimmed) when set,
    /// else `admin_token` (`PIPEMESH_ADMIN_TOKEN`); `None`: the admin API is open. An
    /// unreadable file, or one whose first line is empty, is an error.
    pub fn load_admin_token(&self) -> Result<Option<AdminToken>, ConfigError> {
        let Some(path) = &self.admin_token_file else {
            return match &self.admin_token {
                Some(text) => text.token().map(Some).map_err(|e| ConfigError::Invalid {
                    name: "admin_token",
                    reason: format!("PIPEMESH_ADMIN_TOKEN: {e}"),
                }),
                None => Ok(None),
            };
        };
        let invalid = |reason: String| ConfigError::Invalid {
            name: "admin_token_file",
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        AdminToken::from_file_text(&text).map(Some).map_err(|e| {
            invalid(format!(
                "{}: {e} (its first line must be the token)",
                path.display()
            ))
        })
    }

    fn validate_etcd(&self, static_peers: bool) -> Result<(), ConfigError> {
        let invalid = |name, reason: String| Err(ConfigError::Invalid { name, reason });
        if self.etcd_lease_ttl_secs < 2 || self.etcd_lease_ttl_secs > 600 {
            return invalid(
                "etcd_lease_ttl_secs",
                "must be between 2 and 600 (etcd refuses shorter leases)".into(),
            );
        }
        if self.etcd_connect_timeout_secs == 0 || self.etcd_connect_timeout_secs > 3600 {
            return invalid(
                "etcd_connect_timeout_secs",
                "must be between 1 and 3600".into(),
            );
        }
        if self.etcd_endpoints.is_empty() {
            let etcd_only = [
                ("etcd_ca", self.etcd_ca.is_some()),
                ("etcd_cert", self.etcd_cert.is_some()),
                ("etcd_key", self.etcd_key.is_some()),
                ("etcd_user", self.etcd_user.is_some()),
                ("etcd_password_file", self.etcd_password_file.is_some()),
            ];
            if let Some((name, _)) = etcd_only.iter().find(|(_, set)| *set) {
                return invalid(name, "only meaningful with --etcd-endpoints".into());
            }
            return Ok(());
        }
        for e in &self.etcd_endpoints {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .unwrap_or(e);
            if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
                return invalid(
                    "etcd_endpoints",
                    format!("{e:?} is not [http[s]://]HOST:PORT"),
                );
            }
        }
        if static_peers {
            return invalid(
                "static_peers",
                "static peers and etcd discovery are exclusive: with --etcd-endpoints nodes \
                 find each other in etcd"
                    .into(),
            );
        }
        if self.pipe_listen.is_none() {
            return invalid(
                "pipe_listen",
                "a cluster node needs --pipe-listen (the QUIC address other nodes reach it on)"
                    .into(),
            );
        }
        if self.etcd_cert.is_some() != self.etcd_key.is_some() {
            return invalid(
                "etcd_cert/etcd_key",
                "give both the client certificate and its key, or neither".into(),
            );
        }
        if self.etcd_password_file.is_some() && self.etcd_user.is_none() {
            return invalid("etcd_password_file", "needs --etcd-user".into());
        }
        Ok(())
    }

    /// The etcd password: `etcd_password_file`'s first line, else `PIPEMESH_ETCD_PASSWORD`.
    pub fn etcd_password(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.etcd_password_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
        }
        Ok(std::env::var("PIPEMESH_ETCD_PASSWORD").ok())
    }

    /// The address other nodes dial for this node's pipes, given the bound pipe port.
    pub fn effective_pipe_address(&self, pipe_port: u16) -> String {
        if let Some(a) = &self.pipe_announced_address {
            return a.clone();
        }
        let host = match self.pipe_listen.map(|a| a.ip()) {
            Some(ip) if !ip.is_unspecified() => ip.to_string(),
            _ => self.effective_announced_address(),
        };
        if host.contains(':') {
            format!("[{host}]:{pipe_port}")
        } else {
            format!("{host}:{pipe_port}")
        }
    }

    /// The signaling URL published for this node, given the bound signaling port.
    pub fn effective_signaling_url(&self, signaling_port: u16) -> String {
        if let Some(u) = &self.signaling_url {
            return u.clone();
        }
        let host = match self.signaling_listen.ip() {
            ip if !ip.is_unspecified() => ip.to_string(),
            _ => self.effective_announced_address(),
        };
        if host.contains(':') {
            format!("ws://[{host}]:{signaling_port}")
        } else {
            format!("ws://{host}:{signaling_port}")
        }
    }

    /// The static peers, parsed.
    pub fn parsed_static_peers(&self) -> Result<Vec<StaticPeer>, ConfigError> {
        let mut out: Vec<StaticPeer> = Vec::with_capacity(self.static_peers.len());
        for s in &self.static_peers {
            let p: StaticPeer = s.parse().map_err(|reason| ConfigError::Invalid {
                name: "static_peers",
                reason,
            })?;
            if out.iter().any(|o| o.node_id == p.node_id) {
                return Err(ConfigError::Invalid {
                    name: "static_peers",
                    reason: format!("node {:?} is listed twice", p.node_id),
                });
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Consent timeout as a duration.
    pub fn consent_timeout(&self) -> Duration {
        Duration::from_secs(self.consent_timeout_secs)
    }

    /// The address ICE candidates advertise (see [`Config::announced_address`]).
    pub fn effective_announced_address(&self) -> String {
        if let Some(a) = &self.announced_address {
            return a.clone();
        }
        let ip = self.rtc_listen.ip();
        if !ip.is_unspecified() {
            return ip.to_string();
        }
        first_non_loopback_ipv4()
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "127.0.0.1".into())
    }
}

/// Clap's parser of `PIPEMESH_ADMIN_TOKEN`: takes it as given (checked when the node starts,
/// so that a refused token is never echoed in clap's error).
fn admin_token_text(s: &str) -> Result<AdminTokenText, std::convert::Infallible> {
    Ok(AdminTokenText::new(s))
}

/// The token secret from `file` (its text, surrounding whitespace ignored), else from the
/// `PIPEMESH_AUTH_SECRET` environment variable; `None` when neither is given. A secret shorter
/// than 32 bytes is refused. Never from a command-line value: those show in `ps`.
pub fn load_auth_secret(file: Option<&Path>) -> Result<Option<AuthSecret>, ConfigError> {
    let invalid = |e: crate::auth::AuthError| ConfigError::Invalid {
        name: "auth_secret",
        reason: e.to_string(),
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        return AuthSecret::from_file_text(&text).map(Some).map_err(invalid);
    }
    match std::env::var("PIPEMESH_AUTH_SECRET") {
        Ok(v) => AuthSecret::new(v.trim().as_bytes().to_vec())
            .map(Some)
            .map_err(invalid),
        Err(_) => Ok(None),
    }
}

fn first_non_loopback_ipv4() -> Option<IpAddr> {
    let ifaces = if_addrs::get_if_addrs().ok()?;
    ifaces
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4())
}

fn default_node_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .collect();
    if cleaned.is_empty() {
        "pipemesh-node".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn routing_from_file_and_flag() {
        use crate::discovery::routing::RoutingMode;
        assert_eq!(Config::default().routing, RoutingMode::Tree);
        let mut cfg = Config::from_toml("routing = \"mesh\"\n").unwrap();
        assert_eq!(cfg.routing, RoutingMode::Mesh);
        assert!(Config::from_toml("routing = \"ring\"\n").is_err());
        cfg.apply(&ServeArgs {
            routing: Some(RoutingMode::Tree),
            ..Default::default()
        });
        assert_eq!(cfg.routing, RoutingMode::Tree);
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli =
            <Cli as clap::Parser>::try_parse_from(["serve", "--routing", "mesh"]).expect("parses");
        assert_eq!(cli.serve.routing, Some(RoutingMode::Mesh));
        assert!(<Cli as clap::Parser>::try_parse_from(["serve", "--routing", "ring"]).is_err());
        // Layer shedding: on unless turned off in the file or by the flag.
        assert!(Config::default().pipe_layer_shedding);
        let mut cfg = Config::from_toml("pipe_layer_shedding = false\n").unwrap();
        assert!(!cfg.pipe_layer_shedding);
        let cli = <Cli as clap::Parser>::try_parse_from(["serve", "--pipe-layer-shedding", "true"])
            .expect("parses");
        cfg.apply(&cli.serve);
        assert!(cfg.pipe_layer_shedding);
    }

    #[test]
    fn file_values_are_overlaid_by_flags() {
        let mut cfg = Config::from_toml(
            "region = \"eu-west\"\nnode_id = \"a1\"\nrtc_listen = \"127.0.0.1:5000\"\n",
        )
        .unwrap();
        assert_eq!(cfg.region, "eu-west");
        assert_eq!(
            cfg.rtc_listen,
            "127.0.0.1:5000".parse::<SocketAddr>().unwrap()
        );
        cfg.apply(&ServeArgs {
            region: Some("us-east".into()),
            ..Default::default()
        });
        assert_eq!(cfg.region, "us-east");
        assert_eq!(cfg.node_id, "a1");
        assert_eq!(cfg.effective_announced_address(), "127.0.0.1");
    }

    #[test]
    fn static_peers_and_pipe_trust_are_checked() {
        let p: StaticPeer = "node-b=10.0.0.2:4444".parse().unwrap();
        assert_eq!(
            p,
            StaticPeer {
                node_id: "node-b".into(),
                address: "10.0.0.2:4444".into()
            }
        );
        assert!("node-b".parse::<StaticPeer>().is_err());
        assert!("node b=h:1".parse::<StaticPeer>().is_err());
        assert!("b=host".parse::<StaticPeer>().is_err());
        assert!("b=host:0".parse::<StaticPeer>().is_err());
        assert!("b=[::1]:4444".parse::<StaticPeer>().is_ok());

        let mut cfg = Config {
            node_id: "a".into(),
            ..Config::default()
        };
        cfg.static_peers = vec!["b=127.0.0.1:4444".into()];
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Invalid { name: "pipes", .. })
        ));
        cfg.insecure_pipes = true;
        cfg.validate().unwrap();
        cfg.static_peers.push("b=127.0.0.1:5555".into());
        assert!(cfg.validate().is_err(), "duplicate peer");
        cfg.static_peers = vec!["a=127.0.0.1:4444".into()];
        assert!(cfg.validate().is_err(), "own id");
        cfg.static_peers.clear();
        cfg.insecure_pipes = false;
        cfg.node_cert = Some("x.pem".into());
        assert!(cfg.validate().is_err(), "partial PKI");

        let from_file =
            Config::from_toml("static_peers = [\"b=h:1\", \"c=h:2\"]\ninsecure_pipes = true\n")
                .unwrap();
        assert_eq!(from_file.parsed_static_peers().unwrap().len(), 2);
    }

    #[test]
    fn etcd_settings_are_checked() {
        let base = Config {
            node_id: "a".into(),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            insecure_pipes: true,
            pipe_listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Config::default()
        };
        base.validate().unwrap();
        let invalid = |cfg: Config| match cfg.validate() {
            Err(ConfigError::Invalid { name, .. }) => name,
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        assert_eq!(
            invalid(Config {
                pipe_listen: None,
                ..base.clone()
            }),
            "pipe_listen"
        );
        assert_eq!(
            invalid(Config {
                static_peers: vec!["b=127.0.0.1:1".into()],
                ..base.clone()
            }),
            "static_peers"
        );
        assert_eq!(
            invalid(Config {
                etcd_lease_ttl_secs: 1,
                ..base.clone()
            }),
            "etcd_lease_ttl_secs"
        );
        assert_eq!(
            invalid(Config {
                etcd_cert: Some("c.pem".into()),
                ..base.clone()
            }),
            "etcd_cert/etcd_key"
        );
        assert_eq!(
            invalid(Config {
                etcd_password_file: Some("pw".into()),
                ..base.clone()
            }),
            "etcd_password_file"
        );
        assert_eq!(
            invalid(Config {
                etcd_endpoints: Vec::new(),
                etcd_user: Some("u".into()),
                ..base.clone()
            }),
            "etcd_user"
        );
        assert_eq!(
            invalid(Config {
                pipe_announced_address: Some("nohost".into()),
                ..base.clone()
            }),
            "pipe_announced_address"
        );
        assert_eq!(
            invalid(Config {
                signaling_url: Some("http://x".into()),
                ..base.clone()
            }),
            "signaling_url"
        );
        assert_eq!(base.effective_pipe_address(7000), "127.0.0.1:7000");
        let announced = Config {
            pipe_listen: Some("0.0.0.0:7000".parse().unwrap()),
            announced_address: Some("203.0.113.5".into()),
            ..base.clone()
        };
        assert_eq!(announced.effective_pipe_address(7001), "203.0.113.5:7001");
        assert_eq!(
            announced.effective_signaling_url(4443),
            "ws://203.0.113.5:4443"
        );
        let from_file = Config::from_toml(
            "etcd_endpoints = [\"http://e1:2379\", \"http://e2:2379\"]\netcd_lease_ttl_secs = 5\n",
        )
        .unwrap();
        assert_eq!(from_file.etcd_endpoints.len(), 2);
        assert_eq!(from_file.etcd_lease_ttl_secs, 5);
    }

    #[test]
    fn limits_and_the_token_secret_are_checked() {
        let cfg = Config::from_toml(
            "max_transports_per_peer = 2\nsignaling_requests_per_sec = 5\nsignaling_request_burst = 7\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let l = cfg.peer_limits();
        assert_eq!(
            (l.max_transports, l.requests_per_sec, l.request_burst),
            (2, 5, 7)
        );
        assert_eq!(l.max_producers, PeerLimits::default().max_producers);
        for bad in [
            "max_transports_per_peer = 0",
            "max_consumers_per_peer = 0",
            "max_signaling_message_bytes = 100",
            "max_signaling_message_bytes = 100000000",
            "signaling_request_burst = 0",
        ] {
            assert!(Config::from_toml(bad).unwrap().validate().is_err(), "{bad}");
        }

        let dir = std::env::temp_dir().join(format!("pipemesh-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let with_file = Config {
            auth_secret_file: Some(file.clone()),
            ..Config::default()
        };
        assert!(with_file.auth_secret().unwrap().is_some());
        std::fs::write(&file, "too short\n").unwrap();
        assert!(matches!(
            with_file.auth_secret(),
            Err(ConfigError::Invalid {
                name: "auth_secret",
                ..
            })
        ));
        let missing = Config {
            auth_secret_file: Some(dir.join("absent")),
            ..Config::default()
        };
        assert!(matches!(
            missing.auth_secret(),
            Err(ConfigError::Read { .. })
        ));
        // The secret itself never appears in the printed configuration.
        let printed = toml::to_string(&with_file).unwrap();
        assert!(printed.contains("auth_secret_file") && !printed.contains("too short"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_token_from_its_file_else_the_environment() {
        use crate::admin::token::AdminTokenText;
        assert!(Config::default().load_admin_token().unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("pipemesh-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  file-token \nsecond line\n").unwrap();

        // From the environment (clap hands it over as text, checked here).
        let mut cfg = Config::default();
        cfg.apply(&ServeArgs {
            admin_token: Some(AdminTokenText::new("env-token")),
            ..Default::default()
        });
        let t = cfg.load_admin_token().unwrap().expect("a token");
        assert!(t.matches("env-token"));
        // The file wins.
        cfg.apply(&ServeArgs {
            admin_token_file: Some(file.clone()),
            ..Default::default()
        });
        let t = cfg.load_admin_token().unwrap().expect("a token");
        assert!(t.matches("file-token") && !t.matches("env-token"));
        // Neither the token nor the file's text is printed; the file's name is.
        let printed = toml::to_string(&cfg).unwrap();
        assert!(printed.contains("admin_token_file"), "{printed}");
        assert!(!printed.contains("env-token") && !printed.contains("file-token"));
        assert!(!format!("{cfg:?}").contains("env-token"));

        // An empty file, a missing file and an empty variable refuse to start.
        std::fs::write(&file, "\n").unwrap();
        let err = cfg.load_admin_token().unwrap_err().to_string();
        assert!(
            err.contains("admin_token_file") && err.contains("empty"),
            "{err}"
        );
        cfg.admin_token_file = Some(dir.join("absent"));
        let err = cfg.load_admin_token().unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
        let blank = Config {
            admin_token: Some(AdminTokenText::new("  ")),
            ..Config::default()
        };
        let err = blank.load_admin_token().unwrap_err().to_string();
        assert!(err.contains("PIPEMESH_ADMIN_TOKEN"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::from_toml("no_such_key = 1").is_err());
        let mut cfg = Config {
            node_id: "bad id".into(),
            ..Config::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Invalid {
                name: "node_id",
                ..
            })
        ));
        cfg = Config::default();
        cfg.consent_timeout_secs = 0;
        assert!(cfg.validate().is_err());
    }
}
