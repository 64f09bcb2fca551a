//! Mutual TLS for pipes: quinn configurations that admit only nodes of the cluster.
//!
//! Every pipe is one QUIC connection between two nodes, and both ends authenticate:
//!
//! - **Server side** (the accepting node) requires a client certificate that chains to the
//!   cluster CA (rustls [`WebPkiClientVerifier`], CA as the only root). Which node the client
//!   is comes from [`peer_node_id`] after the handshake; the pipe glue compares it with the id
//!   the client claims in its hello.
//! - **Client side** (the dialing node) verifies that the server's chain leads to the CA and
//!   that the certificate's `pipemesh://node/<id>` URI SAN (see [`super::certs`]) names the
//!   node it meant to dial. The expected id travels in the [`client_config`] itself, one
//!   configuration per dial, rather than in the TLS server name: node ids may contain `_` or
//!   look like IP addresses, which a `ServerName` cannot carry faithfully. The SNI sent is the
//!   constant [`SERVER_NAME`]; [`connect`] does all of this in one call.
//!
//! Both sides speak TLS 1.3 only, offer ALPN [`ALPN`] and never resume sessions: every pipe
//! handshake verifies certificates afresh (resumption would also be keyed by the constant SNI,
//! so it could not tell nodes apart).
//!
//! **Insecure mode** ([`PipeIdentity::insecure`], `--insecure-pipes`) still runs TLS with a
//! self-signed certificate made at start, but a client accepts any server certificate and a
//! server asks for no client certificate. A secure node never accepts an insecure one: a
//! secure client rejects the self-signed server certificate, and a secure server rejects the
//! self-signed client certificate an insecure client presents.
//!
//! rustls configurations are built with an explicit ring provider: other crates in the
//! dependency tree enable rustls too, so the process-wide default provider may be ambiguous.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::certs::{self, CertError};

/// The ALPN protocol of pipes; bump it when the pipe protocol changes incompatibly.
pub const ALPN: &[u8] = b"pipemesh/1";

/// The TLS server name (SNI) sent when dialing. Constant because identity is checked against
/// the URI SAN, not the server name (see the module docs).
pub const SERVER_NAME: &str = "pipemesh";

/// Errors of building pipe TLS configurations and of reading peer identities.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Certificate material could not be loaded, generated or read.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The node certificate names another node than the one this identity is for.
    #[error("the node certificate is for node {presented:?}, not {expected:?}")]
    IdentityMismatch {
        /// The node id this identity was asked to be.
        expected: String,
        /// The node id the certificate names.
        presented: String,
    },
    /// A certificate of the CA file is not a CA certificate.
    #[error("the CA file holds a certificate that is not a CA (basic constraints)")]
    NotACa,
    /// The node certificate does not chain to the cluster CA (wrong CA file, expired, ...).
    #[error("the node certificate does not verify against the cluster CA: {0}")]
    NotSignedByCa(#[source] rustls::Error),
    /// The CA certificate could not be used as a trust anchor.
    #[error("cannot use the CA certificate as a root: {0}")]
    BadCa(#[source] rustls::Error),
    /// The private key is unusable or does not match the node certificate.
    #[error("the node key is unusable or does not match the node certificate: {0}")]
    KeyMismatch(#[source] rustls::Error),
    /// rustls refused to build a configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[source] rustls::Error),
    /// rustls refused to build the client-certificate verifier.
    #[error("cannot build the client certificate verifier: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// quinn found no TLS 1.3 cipher suite usable for QUIC initial packets.
    #[error("the TLS configuration cannot be used for QUIC: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A transport tuning value is out of range.
    #[error("invalid pipe transport setting {name}: {reason}")]
    Tuning {
        /// The setting.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The connection carries no peer certificate (an insecure server does not ask clients
    /// for one, or the handshake has not completed).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The dialed server presented a valid cluster certificate of another node.
    #[error("dialed node {expected:?} but its certificate is for node {presented:?}")]
    PeerMismatch {
        /// The node that was dialed.
        expected: String,
        /// The node the certificate names.
        presented: String,
    },
    /// quinn refused to start the connection (for example an endpoint without a socket).
    #[error("cannot dial the pipe: {0}")]
    Connect(#[source] quinn::ConnectError),
}

/// QUIC transport settings of pipes, shared by both ends of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportTuning {
    /// Interval of keep-alive packets; must be shorter than `idle_timeout`.
    pub keep_alive: Duration,
    /// A connection that hears nothing for this long is closed (the peer has vanished). The
    /// effective value is the smaller of both ends'.
    pub idle_timeout: Duration,
    /// Bytes of unread incoming datagrams kept (and of outgoing datagrams queued) before the
    /// oldest are dropped: media is better dropped than late.
    pub max_datagram_buffer: usize,
    /// Flow-control window of each stream, in bytes.
    pub stream_receive_window: u32,
    /// Flow-control window of the whole connection, in bytes.
    pub connection_receive_window: u32,
}

impl Default for TransportTuning {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            max_datagram_buffer: 1 << 20,
            stream_receive_window: 1 << 20,
            connection_receive_window: 4 << 20,
        }
    }
}

/// Initial QUIC MTU of pipe links (UDP payload bytes).
pub const PIPE_INITIAL_MTU: u16 = 1400;

/// Bounds of buffer and window settings: below 64 KiB a pipe stalls on one burst of video,
/// above 16 MiB one peer can pin too much memory.
const MIN_BUFFER: u64 = 64 << 10;
const MAX_BUFFER: u64 = 16 << 20;

impl TransportTuning {
    /// Refuses values that cannot work.
    pub fn validate(&self) -> Result<(), TlsError> {
        let bad = |name, reason: String| Err(TlsError::Tuning { name, reason });
        if self.idle_timeout < Duration::from_millis(100)
            || self.idle_timeout > Duration::from_secs(600)
        {
            return bad(
                "idle_timeout",
                format!("{:?} is outside 100 ms ..= 600 s", self.idle_timeout),
            );
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return bad(
                "keep_alive",
                format!(
                    "{:?} must be non-zero and shorter than idle_timeout {:?}",
                    self.keep_alive, self.idle_timeout
                ),
            );
        }
        for (name, value) in [
            ("max_datagram_buffer", self.max_datagram_buffer as u64),
            (
                "stream_receive_window",
                u64::from(self.stream_receive_window),
            ),
            (
                "connection_receive_window",
                u64::from(self.connection_receive_window),
            ),
        ] {
            if !(MIN_BUFFER..=MAX_BUFFER).contains(&value) {
                return bad(
                    name,
                    format!("{value} bytes is outside {MIN_BUFFER} ..= {MAX_BUFFER}"),
                );
            }
        }
        if self.connection_receive_window < self.stream_receive_window {
            return bad(
                "connection_receive_window",
                "must be at least stream_receive_window".into(),
            );
        }
        Ok(())
    }

    /// The quinn transport configuration for these settings.
    pub fn transport_config(&self) -> Result<quinn::TransportConfig, TlsError> {
        self.validate()?;
        let idle =
            quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|e| TlsError::Tuning {
                name: "idle_timeout",
                reason: e.to_string(),
            })?;
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(idle))
            .datagram_receive_buffer_size(Some(self.max_datagram_buffer))
            .datagram_send_buffer_size(self.max_datagram_buffer)
            .stream_receive_window(quinn::VarInt::from_u32(self.stream_receive_window))
            .receive_window(quinn::VarInt::from_u32(self.connection_receive_window))
            // Bound what we buffer for a slow peer the same way we bound what it may send us.
            .send_window(u64::from(self.connection_receive_window))
            // A piped RTP packet (up to ~1,250 bytes with QUIC's overhead) must fit a datagram
            // from the first packet on; quinn's 1,200-byte start would drop video packets
            // until path MTU discovery (still on) raised it. 1,400 fits any 1,500-byte path.
            .initial_mtu(PIPE_INITIAL_MTU)
            .congestion_controller_factory(std::sync::Arc::new(
                super::congestion::FixedWindowConfig::default(),
            ));
        Ok(t)
    }
}

/// Whom a node trusts.
#[derive(Debug, Clone)]
enum Trust {
    /// Peers whose certificates chain to these roots (the cluster CA).
    Cluster(Arc<RootCertStore>),
    /// Anyone (`--insecure-pipes`).
    Insecure,
}

/// A node's pipe identity: its id, certificate chain and key, and the CA it trusts.
pub struct PipeIdentity {
    node_id: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    trust: Trust,
}

impl Clone for PipeIdentity {
    fn clone(&self) -> Self {
        Self {
            node_id: self.node_id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            trust: self.trust.clone(),
        }
    }
}

// The private key stays out of logs.
impl std::fmt::Debug for PipeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeIdentity")
            .field("node_id", &self.node_id)
            .field("insecure", &self.is_insecure())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl PipeIdentity {
    /// Loads the identity of `node_id` from PEM files: the cluster CA certificate, the node
    /// certificate (chain, leaf first) and the node's private key.
    ///
    /// Checks at load time what would otherwise fail at the first connection: the certificate
    /// names `node_id`, chains to the CA, and matches the key.
    pub fn from_files(
        node_id: &str,
        ca_cert: impl AsRef<Path>,
        node_cert: impl AsRef<Path>,
        node_key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Self::from_parts(
            node_id,
            certs::load_pem_cert_chain(ca_cert)?,
            certs::load_pem_cert_chain(node_cert)?,
            certs::load_pem_key(node_key)?,
        )
    }

    /// Like [`PipeIdentity::from_files`], from PEM text.
    pub fn from_pem(
        node_id: &str,
        ca_cert_pem: &str,
        node_cert_pem: &str,
        node_key_pem: &str,
    ) -> Result<Self, TlsError> {
        Self::from_parts(
            node_id,
            certs::parse_pem_cert_chain(ca_cert_pem.as_bytes(), "the CA certificate")?,
            certs::parse_pem_cert_chain(node_cert_pem.as_bytes(), "the node certificate")?,
            certs::parse_pem_key(node_key_pem.as_bytes(), "the node key")?,
        )
    }

    fn from_parts(
        node_id: &str,
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        certs::validate_node_id(node_id)?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            // webpki trusts a root by name and key alone; a node certificate in the CA file
            // would make a cluster of one.
            if !certs::is_ca_cert(&cert)? {
                return Err(TlsError::NotACa);
            }
            roots.add(cert).map_err(TlsError::BadCa)?;
        }
        // The PEM parsers already refuse an empty chain; this keeps a clear error regardless.
        let leaf = chain.first().ok_or_else(|| CertError::NoCertificate {
            source_name: "the node certificate".into(),
        })?;
        let presented = certs::node_id_from_cert(leaf)?;
        if presented != node_id {
            return Err(TlsError::IdentityMismatch {
                expected: node_id.to_owned(),
                presented,
            });
        }
        let provider = provider();
        let parsed =
            rustls::server::ParsedCertificate::try_from(leaf).map_err(TlsError::NotSignedByCa)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            chain.get(1..).unwrap_or_default(),
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(TlsError::NotSignedByCa)?;
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
            .map_err(TlsError::KeyMismatch)?;
        Ok(Self {
            node_id: node_id.to_owned(),
            chain,
            key,
            trust: Trust::Cluster(Arc::new(roots)),
        })
    }

    /// An identity for `--insecure-pipes`: a self-signed certificate made now, trusting
    /// anyone. Logs a warning, since such a node accepts pipes from anyone who can reach it.
    pub fn insecure(node_id: &str) -> Result<Self, TlsError> {
        let bundle = certs::generate_self_signed_node_cert(node_id)?;
        let chain =
            certs::parse_pem_cert_chain(bundle.cert_pem.as_bytes(), "generated certificate")?;
        let key = certs::parse_pem_key(bundle.key_pem.as_bytes(), "generated key")?;
        tracing::warn!(
            node_id,
            "INSECURE PIPES: peer certificates are NOT verified; any host that can reach the \
             pipe port can join this mesh. Use only for local experiments; run `pipemesh certs` \
             for a real cluster."
        );
        Ok(Self {
            node_id: node_id.to_owned(),
            chain,
            key,
            trust: Trust::Insecure,
        })
    }

    /// This node's id, as named by its certificate.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether this identity was made by [`PipeIdentity::insecure`].
    pub fn is_insecure(&self) -> bool {
        matches!(self.trust, Trust::Insecure)
    }
}

/// The quinn server configuration of a node's pipe endpoint.
pub fn server_config(
    identity: &PipeIdentity,
    transport: &TransportTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = match &identity.trust {
        Trust::Cluster(roots) => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(TlsError::ClientVerifier)?
        }
        Trust::Insecure => WebPkiClientVerifier::no_client_auth(),
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::KeyMismatch)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: every pipe handshake verifies the client certificate afresh.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(TlsError::Quic)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport.transport_config()?));
    Ok(config)
}

/// The quinn client configuration for dialing the node `expected_peer`: the connection fails
/// unless the server proves to be that node of the cluster (see the module docs). Use with
/// `Endpoint::connect_with(config, addr, SERVER_NAME)`, or call [`connect`].
pub fn client_config(
    identity: &PipeIdentity,
    expected_peer: &str,
    transport: &TransportTuning,
) -> Result<quinn::ClientConfig, TlsError> {
    certs::validate_node_id(expected_peer)?;
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let cluster = match &identity.trust {
        Trust::Cluster(roots) => Some(ClusterCheck {
            roots: roots.clone(),
            expected: expected_peer.to_owned(),
        }),
        Trust::Insecure => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(ServerVerifier { cluster, algs });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::KeyMismatch)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // Sessions would be cached under the constant SNI for every peer; never resume.
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(TlsError::Quic)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport.transport_config()?));
    Ok(config)
}

/// Dials `expected_peer` at `addr` from `endpoint`; await the result for the connection.
pub fn connect(
    endpoint: &quinn::Endpoint,
    identity: &PipeIdentity,
    expected_peer: &str,
    transport: &TransportTuning,
    addr: SocketAddr,
) -> Result<quinn::Connecting, TlsError> {
    let config = client_config(identity, expected_peer, transport)?;
    endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(TlsError::Connect)
}

/// The node id of the peer of an established connection, from its certificate.
///
/// With cluster trust the certificate was verified during the handshake (chain to the CA on
/// both sides, and the dialed id on the client side), so the id is authenticated. In insecure
/// mode a client gets the id the server's self-signed certificate asserts (unauthenticated),
/// and a server gets [`TlsError::NoPeerCertificate`] because it asks for no certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Result<String, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    Ok(certs::node_id_from_cert(leaf)?)
}

/// Turns an error into the rustls certificate error that aborts a handshake with a reason.
fn reject(err: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(err),
    )))
}

/// Client-side verification of the server's certificate. With cluster trust (`cluster` set):
/// the chain must reach the CA and the node URI SAN must name the node we dialed. In insecure
/// mode (`cluster` unset) any certificate passes, but the handshake signature is still checked
/// so the server at least holds the key of the certificate it shows.
#[derive(Debug)]
struct ServerVerifier {
    cluster: Option<ClusterCheck>,
    algs: WebPkiSupportedAlgorithms,
}

/// What cluster trust checks: the roots and the node id we dialed.
#[derive(Debug)]
struct ClusterCheck {
    roots: Arc<RootCertStore>,
    expected: String,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(check) = &self.cluster else {
            return Ok(ServerCertVerified::assertion());
        };
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &check.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let presented = certs::node_id_from_cert(end_entity).map_err(reject)?;
        if presented != check.expected {
            return Err(reject(TlsError::PeerMismatch {
                expected: check.expected.clone(),
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration allows TLS 1.3 only, so rustls never gets here.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tuning_is_valid_and_bounds_are_enforced() {
        let t = TransportTuning::default();
        assert!(t.transport_config().is_ok());
        let bad = [
            TransportTuning {
                keep_alive: Duration::from_secs(5),
                ..TransportTuning::default()
            },
            TransportTuning {
                idle_timeout: Duration::ZERO,
                ..TransportTuning::default()
            },
            TransportTuning {
                max_datagram_buffer: 1 << 30,
                ..TransportTuning::default()
            },
            TransportTuning {
                stream_receive_window: 1024,
                ..TransportTuning::default()
            },
            TransportTuning {
                stream_receive_window: 8 << 20,
                connection_receive_window: 4 << 20,
                ..TransportTuning::default()
            },
        ];
        for t in bad {
            assert!(
                matches!(t.validate(), Err(TlsError::Tuning { .. })),
                "{t:?}"
            );
        }
    }

    #[test]
    fn identity_checks_name_ca_and_key() {
        let ca = certs::generate_ca("t").unwrap();
        let other_ca = certs::generate_ca("o").unwrap();
        let a = certs::generate_node_cert(&ca, "node-a", &[]).unwrap();
        let b = certs::generate_node_cert(&ca, "node-b", &[]).unwrap();
        let ok = PipeIdentity::from_pem("node-a", &ca.cert_pem, &a.cert_pem, &a.key_pem).unwrap();
        assert_eq!(ok.node_id(), "node-a");
        assert!(!ok.is_insecure());
        assert!(server_config(&ok, &TransportTuning::default()).is_ok());
        assert!(client_config(&ok, "node-b", &TransportTuning::default()).is_ok());
        assert!(matches!(
            PipeIdentity::from_pem("node-b", &ca.cert_pem, &a.cert_pem, &a.key_pem),
            Err(TlsError::IdentityMismatch { .. })
        ));
        assert!(matches!(
            PipeIdentity::from_pem("node-a", &other_ca.cert_pem, &a.cert_pem, &a.key_pem),
            Err(TlsError::NotSignedByCa(_))
        ));
        assert!(matches!(
            PipeIdentity::from_pem("node-a", &ca.cert_pem, &a.cert_pem, &b.key_pem),
            Err(TlsError::KeyMismatch(_))
        ));
        assert!(matches!(
            PipeIdentity::from_pem("node-a", &a.cert_pem, &a.cert_pem, &a.key_pem),
            Err(TlsError::NotACa)
        ));
        assert!(matches!(
            client_config(&ok, "bad id", &TransportTuning::default()),
            Err(TlsError::Cert(CertError::InvalidNodeId { .. }))
        ));
    }

    #[test]
    fn insecure_identity_builds_configs() {
        let id = PipeIdentity::insecure("local_1").unwrap();
        assert!(id.is_insecure());
        assert_eq!(id.node_id(), "local_1");
        assert!(server_config(&id, &TransportTuning::default()).is_ok());
        assert!(client_config(&id, "local_2", &TransportTuning::default()).is_ok());
    }
}
