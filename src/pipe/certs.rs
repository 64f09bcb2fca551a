//! Cluster certificates for pipes and the `pipemesh certs` command.
//!
//! Trust between nodes is a private cluster CA: `pipemesh certs` makes the CA and one
//! certificate per node, and [`super::tls`] refuses any peer whose certificate does not chain
//! to that CA or does not name the node it claims to be.
//!
//! ## How a certificate names its node
//!
//! Node ids are ASCII letters, digits, `-`, `_` and `.` (the rule of `config`), and `_` is not
//! valid in a DNS name, so a DNS SAN cannot carry every id. The authoritative name is therefore
//! a URI SAN `pipemesh://node/<id>` ([`NODE_URI_PREFIX`]), which takes any id unchanged; a DNS
//! SAN with the id is added as well when the id happens to be a valid DNS name, only so that
//! generic tools (`openssl x509 -text`, browsers of admin pages) show something familiar.
//! Verification ([`node_id_from_cert`]) reads the URI SAN only.
//!
//! ## Key and certificate choices
//!
//! Keys are ECDSA P-256 (small, fast, supported everywhere rustls and webpki are). The CA has
//! basic constraints `CA, pathlen 0` (it signs node certificates, never another CA) and key
//! usage `keyCertSign, cRLSign`. Node certificates carry both `serverAuth` and `clientAuth`
//! extended key usages because every node both dials and accepts pipes. Validity starts one
//! hour in the past so that small clock skew between the signing host and the nodes does not
//! make fresh certificates "not yet valid".
//!
//! The module also holds a minimal, bounds-checked DER reader ([`der`]) because the crate has
//! no X.509 parser among its dependencies: it reads only the subject, issuer, public key and
//! subject-alternative-name URIs of a certificate, and returns `None` on anything unexpected.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose, PrintableString, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// The URI SAN prefix that names a node: `pipemesh://node/<node id>`.
pub const NODE_URI_PREFIX: &str = "pipemesh://node/";

/// Default validity of a node certificate: one year, so that a leaked key stops working.
pub const DEFAULT_NODE_VALID_DAYS: u32 = 365;

/// Default validity of a cluster CA: ten years, since replacing it means re-issuing every node.
pub const DEFAULT_CA_VALID_DAYS: u32 = 3650;

/// Longest accepted validity (100 years): beyond that the date arithmetic of `rcgen` gets near
/// its limits and the value is almost certainly a typo.
pub const MAX_VALID_DAYS: u32 = 36_500;

/// Longest accepted node id, the length limit of a DNS name: ids are often host names.
pub const MAX_NODE_ID_LEN: usize = 253;

/// Longest accepted cluster name.
const MAX_CLUSTER_LEN: usize = 64;

/// Backdating of `notBefore`, against clock skew between the signing host and the nodes.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// Errors of certificate generation, loading and inspection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A node id is empty, too long, or uses characters outside ASCII letters, digits, `-`,
    /// `_`, `.`; or it is reserved.
    #[error("invalid node id {id:?}: {reason}")]
    InvalidNodeId {
        /// The id as given.
        id: String,
        /// Why it was refused.
        reason: String,
    },
    /// The cluster name is empty, too long or not printable ASCII.
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidCluster {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A validity period outside `1..=MAX_VALID_DAYS` days.
    #[error("invalid validity of {days} days: must be between 1 and {MAX_VALID_DAYS}")]
    InvalidValidity {
        /// The number of days asked for.
        days: u32,
    },
    /// An extra subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid extra subject alternative name {san:?}: {reason}")]
    InvalidSan {
        /// The name as given.
        san: String,
        /// Why it was refused.
        reason: String,
    },
    /// The system clock is before 1970 or beyond what a certificate can encode.
    #[error("the system clock cannot be used for certificate validity")]
    Clock,
    /// `rcgen` failed to build a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A CA key could not be parsed (it must be an unencrypted PKCS#8 ECDSA or Ed25519 key).
    #[error("cannot use the CA key: {source} (expected an unencrypted PKCS#8 \"PRIVATE KEY\"; convert with `openssl pkcs8 -topk8 -nocrypt`)")]
    CaKey {
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// The CA key does not belong to the CA certificate.
    #[error("the CA key does not match the CA certificate")]
    CaKeyMismatch,
    /// An existing CA cannot be reused to sign node certificates.
    #[error("cannot sign with this CA certificate: {reason}")]
    CaNotReusable {
        /// Why.
        reason: String,
    },
    /// A freshly made node certificate does not verify against its CA; the CA is not usable
    /// for pipes (for example it is not a CA, or it has expired).
    #[error("the certificate for node {node_id:?} does not verify against the CA: {reason}")]
    Unverifiable {
        /// The node the certificate was made for.
        node_id: String,
        /// The verifier's complaint.
        reason: String,
    },
    /// A certificate is not well-formed DER in the places this module reads.
    #[error("malformed certificate: cannot read its {what}")]
    Malformed {
        /// The part that could not be read.
        what: &'static str,
    },
    /// A certificate has no `pipemesh://node/<id>` URI SAN, so it names no node.
    #[error("the certificate names no pipemesh node (no {NODE_URI_PREFIX}<id> URI SAN)")]
    NoNodeId,
    /// A certificate names more than one node, which this cluster never issues.
    #[error("the certificate names several pipemesh nodes: {ids:?}")]
    AmbiguousNodeId {
        /// The ids found.
        ids: Vec<String>,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// PEM text could not be parsed.
    #[error("cannot parse PEM in {source_name}: {source}")]
    Pem {
        /// The file (or other origin) of the text.
        source_name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// PEM text holds no certificate.
    #[error("no certificate (\"BEGIN CERTIFICATE\") found in {source_name}")]
    NoCertificate {
        /// The file (or other origin) of the text.
        source_name: String,
    },
    /// PEM text holds no private key.
    #[error("no private key (\"BEGIN PRIVATE KEY\", \"BEGIN EC PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\") found in {source_name}")]
    NoKey {
        /// The file (or other origin) of the text.
        source_name: String,
    },
    /// An output file already exists and `--force` was not given.
    #[error("{} already exists; pass --force to overwrite it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A cluster CA: certificate and private key, both PEM.
#[derive(Clone)]
pub struct CaBundle {
    /// The CA certificate (PEM, one `CERTIFICATE` block).
    pub cert_pem: String,
    /// The CA private key (PEM, PKCS#8). Secret: whoever holds it can admit nodes.
    pub key_pem: String,
}

/// A node certificate signed by the cluster CA, and its private key, both PEM.
#[derive(Clone)]
pub struct NodeBundle {
    /// The node certificate (PEM, one `CERTIFICATE` block).
    pub cert_pem: String,
    /// The node private key (PEM, PKCS#8). Secret: whoever holds it can act as the node.
    pub key_pem: String,
}

// Keys stay out of logs and panic messages: Debug shows only the certificates.
impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for NodeBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBundle")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Checks a node id: 1 to [`MAX_NODE_ID_LEN`] ASCII letters, digits, `-`, `_`, `.`.
pub fn validate_node_id(id: &str) -> Result<(), CertError> {
    let refuse = |reason: &str| CertError::InvalidNodeId {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    if id.is_empty() {
        return Err(refuse("it is empty"));
    }
    if id.len() > MAX_NODE_ID_LEN {
        return Err(refuse(&format!(
            "it is longer than {MAX_NODE_ID_LEN} characters"
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(refuse(&format!(
            "character {c:?} is not allowed (use ASCII letters, digits, '-', '_', '.')"
        )));
    }
    Ok(())
}

/// The URI SAN that names `node_id`.
pub fn node_id_uri(node_id: &str) -> String {
    format!("{NODE_URI_PREFIX}{node_id}")
}

/// Whether `name` is a conventional DNS host name (LDH labels of 1 to 63 characters, no
/// leading or trailing `-`, a non-numeric last label so it cannot be mistaken for an IPv4
/// address).
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

fn validate_cluster(cluster: &str) -> Result<(), CertError> {
    let refuse = |reason: &str| CertError::InvalidCluster {
        name: cluster.to_owned(),
        reason: reason.to_owned(),
    };
    if cluster.trim().is_empty() {
        return Err(refuse("it is empty"));
    }
    if cluster.len() > MAX_CLUSTER_LEN {
        return Err(refuse(&format!(
            "it is longer than {MAX_CLUSTER_LEN} characters"
        )));
    }
    if !cluster.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(refuse("use printable ASCII only"));
    }
    Ok(())
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Generate { what, source }
}

/// Sets `notBefore` to now minus the skew allowance and `notAfter` to now plus `days`.
fn set_validity(params: &mut CertificateParams, days: u32) -> Result<(), CertError> {
    if days == 0 || days > MAX_VALID_DAYS {
        return Err(CertError::InvalidValidity { days });
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Clock)?;
    let since_epoch = since_epoch
        .checked_sub(CLOCK_SKEW_ALLOWANCE)
        .ok_or(CertError::Clock)?;
    let lifetime = CLOCK_SKEW_ALLOWANCE + Duration::from_secs(u64::from(days) * 86_400);
    // rcgen takes `time::OffsetDateTime`, which this crate does not depend on directly;
    // anchoring on rcgen's own date constructor avoids naming the type.
    let not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = not_before;
    params.not_after = not_before + lifetime;
    Ok(())
}

fn new_key(what: &str) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err(format!("{what} key")))
}

fn ca_params(cluster: &str, days: u32) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        format!("pipemesh cluster {cluster}"),
    );
    dn.push(DnType::CommonName, format!("pipemesh {cluster} CA"));
    params.distinguished_name = dn;
    // pathlen 0: this CA signs node certificates and nothing that could sign further.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, days)?;
    Ok(params)
}

/// Creates a cluster CA valid for [`DEFAULT_CA_VALID_DAYS`].
pub fn generate_ca(cluster: &str) -> Result<CaBundle, CertError> {
    generate_ca_valid_for(cluster, DEFAULT_CA_VALID_DAYS)
}

/// Creates a cluster CA valid for `days` days.
pub fn generate_ca_valid_for(cluster: &str, days: u32) -> Result<CaBundle, CertError> {
    validate_cluster(cluster)?;
    let key = new_key("CA")?;
    let cert = ca_params(cluster, days)?
        .self_signed(&key)
        .map_err(gen_err("CA certificate"))?;
    Ok(CaBundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Parameters of a node certificate: the URI SAN, a DNS SAN when the id allows it, the
/// extra SANs, both TLS extended key usages.
fn node_params(
    node_id: &str,
    extra_sans: &[String],
    days: u32,
) -> Result<CertificateParams, CertError> {
    validate_node_id(node_id)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    // Validated ids are ASCII, so this conversion cannot fail; map it anyway rather than unwrap.
    let uri = Ia5String::try_from(node_id_uri(node_id)).map_err(|e| CertError::InvalidNodeId {
        id: node_id.to_owned(),
        reason: e.to_string(),
    })?;
    let mut sans = vec![SanType::URI(uri)];
    if is_dns_name(node_id) {
        if let Ok(dns) = Ia5String::try_from(node_id) {
            sans.push(SanType::DnsName(dns));
        }
    }
    for san in extra_sans {
        let entry = if let Ok(ip) = san.parse::<std::net::IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(san) {
            SanType::DnsName(Ia5String::try_from(san.as_str()).map_err(|e| {
                CertError::InvalidSan {
                    san: san.clone(),
                    reason: e.to_string(),
                }
            })?)
        } else {
            return Err(CertError::InvalidSan {
                san: san.clone(),
                reason: "neither an IP address nor a DNS name".into(),
            });
        };
        if !sans.contains(&entry) {
            sans.push(entry);
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, days)?;
    Ok(params)
}

/// Creates a certificate for `node_id` signed by `ca`, valid for [`DEFAULT_NODE_VALID_DAYS`].
pub fn generate_node_cert(
    ca: &CaBundle,
    node_id: &str,
    extra_sans: &[String],
) -> Result<NodeBundle, CertError> {
    generate_node_cert_valid_for(ca, node_id, extra_sans, DEFAULT_NODE_VALID_DAYS)
}

/// Creates a certificate for `node_id` signed by `ca`, valid for `days` days.
///
/// `extra_sans` are IP addresses or DNS names added as further SANs (informational: pipes
/// verify the node URI SAN only). The new certificate is verified against the CA before it is
/// returned, so a CA that cannot admit nodes (not a CA, expired, subject not reproducible) is
/// reported here rather than at the first connection.
pub fn generate_node_cert_valid_for(
    ca: &CaBundle,
    node_id: &str,
    extra_sans: &[String],
    days: u32,
) -> Result<NodeBundle, CertError> {
    let params = node_params(node_id, extra_sans, days)?;
    let ca_der = first_cert(&ca.cert_pem, "the CA certificate")?;
    let ca_info = der::cert_info(ca_der.as_ref()).ok_or(CertError::Malformed {
        what: "CA certificate structure",
    })?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|source| CertError::CaKey { source })?;
    if ca_key.public_key_der() != ca_info.spki {
        return Err(CertError::CaKeyMismatch);
    }
    // webpki trusts a root by its name and key alone, so it would accept a node certificate
    // passed off as the CA; check basic constraints here instead.
    if !is_ca_cert(&ca_der)? {
        return Err(CertError::CaNotReusable {
            reason: "it is not a CA certificate (basic constraints do not say CA)".into(),
        });
    }
    // rcgen 0.13 (without its x509-parser feature) signs only with an issuer it built itself,
    // and writes the issuer's subject from those parameters. Rebuilding the CA's subject from
    // the certificate gives the same bytes for every CA made by `generate_ca` and for most
    // others; the issuer comparison below catches the rest.
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = distinguished_name_of(ca_info.subject_body)?;
    issuer_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuer_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = issuer_params
        .self_signed(&ca_key)
        .map_err(gen_err("CA issuer"))?;
    let key = new_key("node")?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(gen_err(format!("certificate for node {node_id:?}")))?;
    let node_info = der::cert_info(cert.der().as_ref()).ok_or(CertError::Malformed {
        what: "generated certificate structure",
    })?;
    if node_info.issuer != ca_info.subject {
        return Err(CertError::CaNotReusable {
            reason:
                "its subject name cannot be reproduced exactly (use a CA made by `pipemesh certs`)"
                    .into(),
        });
    }
    verify_against_ca(&ca_der, cert.der(), node_id)?;
    Ok(NodeBundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Creates a self-signed certificate for `node_id` (insecure pipes: no CA, nothing verifies it).
pub fn generate_self_signed_node_cert(node_id: &str) -> Result<NodeBundle, CertError> {
    let params = node_params(node_id, &[], DEFAULT_NODE_VALID_DAYS)?;
    let key = new_key("node")?;
    let cert = params.self_signed(&key).map_err(gen_err(format!(
        "self-signed certificate for node {node_id:?}"
    )))?;
    Ok(NodeBundle {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Verifies `cert` against `ca` as a TLS server certificate, the way a dialing node will.
fn verify_against_ca(
    ca: &CertificateDer<'_>,
    cert: &CertificateDer<'_>,
    node_id: &str,
) -> Result<(), CertError> {
    let unverifiable = |reason: String| CertError::Unverifiable {
        node_id: node_id.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(|e| unverifiable(format!("the CA certificate is not usable as a root: {e}")))?;
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| unverifiable(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| unverifiable(e.to_string()))
}

/// Rebuilds an rcgen distinguished name from the body of an X.509 `Name`.
fn distinguished_name_of(name_body: &[u8]) -> Result<DistinguishedName, CertError> {
    let not_reusable = |reason: String| CertError::CaNotReusable { reason };
    let attrs = der::name_attributes(name_body).ok_or_else(|| {
        not_reusable("its subject has a multi-valued or malformed relative name".into())
    })?;
    let mut dn = DistinguishedName::new();
    let mut seen = BTreeSet::new();
    for (oid, tag, value) in attrs {
        // rcgen keeps one value per attribute type; a repeated type would be silently lost.
        if !seen.insert(oid.clone()) {
            return Err(not_reusable("its subject repeats an attribute type".into()));
        }
        let text = std::str::from_utf8(value)
            .map_err(|_| not_reusable("its subject has a non-UTF-8 attribute".into()))?;
        let value = match tag {
            der::UTF8_STRING => DnValue::Utf8String(text.to_owned()),
            der::PRINTABLE_STRING => DnValue::PrintableString(
                PrintableString::try_from(text)
                    .map_err(|e| not_reusable(format!("bad PrintableString: {e}")))?,
            ),
            der::IA5_STRING => DnValue::Ia5String(
                Ia5String::try_from(text)
                    .map_err(|e| not_reusable(format!("bad IA5String: {e}")))?,
            ),
            other => {
                return Err(not_reusable(format!(
                    "its subject uses string type 0x{other:02x}"
                )))
            }
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// Whether a certificate's basic constraints mark it as a CA.
pub fn is_ca_cert(cert: &CertificateDer<'_>) -> Result<bool, CertError> {
    let info = der::cert_info(cert.as_ref()).ok_or(CertError::Malformed {
        what: "certificate structure",
    })?;
    match info.extensions {
        Some(ext) => der::is_ca(ext).ok_or(CertError::Malformed { what: "extensions" }),
        None => Ok(false),
    }
}

/// The node id named by a certificate's `pipemesh://node/<id>` URI SAN.
///
/// This only reads the certificate; callers rely on it after the TLS layer has verified the
/// chain (see [`super::tls::peer_node_id`]).
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<String, CertError> {
    let info = der::cert_info(cert.as_ref()).ok_or(CertError::Malformed {
        what: "certificate structure",
    })?;
    let uris = match info.extensions {
        Some(ext) => der::san_uris(ext).ok_or(CertError::Malformed { what: "extensions" })?,
        None => Vec::new(),
    };
    let ids: BTreeSet<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(NODE_URI_PREFIX))
        .collect();
    let mut ids = ids.into_iter();
    match (ids.next(), ids.next()) {
        (None, _) => Err(CertError::NoNodeId),
        (Some(id), None) => {
            validate_node_id(id)?;
            Ok(id.to_owned())
        }
        (Some(a), Some(b)) => {
            let mut all = vec![a.to_owned(), b.to_owned()];
            all.extend(ids.map(str::to_owned));
            Err(CertError::AmbiguousNodeId { ids: all })
        }
    }
}

fn first_cert(pem: &str, source_name: &str) -> Result<CertificateDer<'static>, CertError> {
    parse_pem_cert_chain(pem.as_bytes(), source_name)?
        .into_iter()
        .next()
        .ok_or_else(|| CertError::NoCertificate {
            source_name: source_name.to_owned(),
        })
}

/// Parses every `CERTIFICATE` block of PEM text; `source_name` names the origin in errors.
/// Fails when there is none.
pub fn parse_pem_cert_chain(
    pem: &[u8],
    source_name: &str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = rustls_pemfile::certs(&mut io::Cursor::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            source_name: source_name.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            source_name: source_name.to_owned(),
        });
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, SEC1 or PKCS#1) of PEM text; `source_name` names the
/// origin in errors.
pub fn parse_pem_key(pem: &[u8], source_name: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    rustls_pemfile::private_key(&mut io::Cursor::new(pem))
        .map_err(|source| CertError::Pem {
            source_name: source_name.to_owned(),
            source,
        })?
        .ok_or_else(|| CertError::NoKey {
            source_name: source_name.to_owned(),
        })
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Loads a PEM certificate chain (leaf first) from a file; errors name the file.
pub fn load_pem_cert_chain(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let path = path.as_ref();
    parse_pem_cert_chain(&read_file(path)?, &path.display().to_string())
}

/// Loads the first PEM private key from a file; errors name the file.
pub fn load_pem_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, CertError> {
    let path = path.as_ref();
    parse_pem_key(&read_file(path)?, &path.display().to_string())
}

/// `pipemesh certs`: create a cluster CA (or reuse one) and a certificate per node.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory to write into; created if missing. Writes ca.pem, ca.key (new CA only),
    /// <NODE_ID>.pem and <NODE_ID>.key; keys get mode 0600.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Cluster name, written into a new CA's subject (not needed with --ca-cert).
    #[arg(long, value_name = "NAME", required_unless_present = "ca_cert")]
    pub cluster: Option<String>,
    /// Reuse this CA certificate instead of creating a CA (needs --ca-key).
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Private key of the reused CA (PKCS#8 PEM).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Extra subject alternative name (IP address or DNS name) for every node certificate;
    /// repeatable. Informational: pipes verify the node id only.
    #[arg(long = "san", value_name = "NAME|IP")]
    pub extra_sans: Vec<String>,
    /// Validity of node certificates, in days.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_NODE_VALID_DAYS)]
    pub days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CA_VALID_DAYS)]
    pub ca_days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Node ids to issue certificates for (ASCII letters, digits, '-', '_', '.').
    #[arg(value_name = "NODE_ID", required = true)]
    pub node_ids: Vec<String>,
}

/// One file to write.
struct Output {
    path: PathBuf,
    contents: String,
    secret: bool,
    what: String,
}

/// Runs `pipemesh certs`: generates everything in memory, checks that no file would be
/// overwritten (unless `--force`), then writes and prints each file.
pub fn run(args: CertsArgs) -> Result<(), CertError> {
    let mut seen = BTreeSet::new();
    for id in &args.node_ids {
        validate_node_id(id)?;
        // `ca` would write ca.pem and ca.key over the CA's own files.
        if id == "ca" {
            return Err(CertError::InvalidNodeId {
                id: id.clone(),
                reason: "\"ca\" is reserved for the CA's files".into(),
            });
        }
        if !seen.insert(id.as_str()) {
            return Err(CertError::InvalidNodeId {
                id: id.clone(),
                reason: "given twice".into(),
            });
        }
    }

    let mut outputs = Vec::new();
    let ca_pem_path = args.out.join("ca.pem");
    let ca = match (&args.ca_cert, &args.ca_key) {
        (Some(cert_path), Some(key_path)) => {
            let ca = CaBundle {
                cert_pem: read_text(cert_path)?,
                key_pem: read_text(key_path)?,
            };
            // Nodes need ca.pem next to their own files; skip it when it is already there.
            let existing = fs::read_to_string(&ca_pem_path).ok();
            if existing.as_deref() != Some(ca.cert_pem.as_str()) {
                outputs.push(Output {
                    path: ca_pem_path,
                    contents: ca.cert_pem.clone(),
                    secret: false,
                    what: format!("CA certificate (copy of {})", cert_path.display()),
                });
            }
            ca
        }
        (None, None) => {
            let cluster = args.cluster.as_deref().unwrap_or_default();
            let ca = generate_ca_valid_for(cluster, args.ca_days)?;
            outputs.push(Output {
                path: ca_pem_path,
                contents: ca.cert_pem.clone(),
                secret: false,
                what: format!("CA certificate of cluster {cluster:?}"),
            });
            outputs.push(Output {
                path: args.out.join("ca.key"),
                contents: ca.key_pem.clone(),
                secret: true,
                what: "CA private key: keep it offline, it admits nodes".into(),
            });
            ca
        }
        // clap's `requires` makes these unreachable from the command line; a caller building
        // CertsArgs by hand gets an error, not a panic.
        _ => {
            return Err(CertError::CaNotReusable {
                reason: "--ca-cert and --ca-key must be given together".into(),
            })
        }
    };

    for id in &args.node_ids {
        let node = generate_node_cert_valid_for(&ca, id, &args.extra_sans, args.days)?;
        outputs.push(Output {
            path: args.out.join(format!("{id}.pem")),
            contents: node.cert_pem,
            secret: false,
            what: format!("certificate of node {id:?}"),
        });
        outputs.push(Output {
            path: args.out.join(format!("{id}.key")),
            contents: node.key_pem,
            secret: true,
            what: format!("private key of node {id:?}"),
        });
    }

    // Check every target before writing any, so a refusal leaves the directory untouched.
    if !args.force {
        if let Some(o) = outputs.iter().find(|o| o.path.exists()) {
            return Err(CertError::Exists {
                path: o.path.clone(),
            });
        }
    }
    fs::create_dir_all(&args.out).map_err(|source| CertError::Write {
        path: args.out.clone(),
        source,
    })?;
    for o in &outputs {
        write_file(&o.path, &o.contents, o.secret, args.force)?;
        println!("wrote {} ({})", o.path.display(), o.what);
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new file with mode 0600 (secret) or 0644. An existing file is removed first
/// (only with `force`) rather than truncated, so a key never lands in a file that kept a
/// wider mode, and `create_new` refuses a file that appeared since the existence check.
fn write_file(path: &Path, contents: &str, secret: bool, force: bool) -> Result<(), CertError> {
    let write_err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_err(e)),
        }
    }
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                CertError::Exists {
                    path: path.to_owned(),
                }
            } else {
                write_err(e)
            }
        })?;
    // The umask may have narrowed the mode further; it must not have widened it, but make
    // the key's mode exact regardless.
    if secret {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
    }
    file.write_all(contents.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// A minimal DER reader for the few certificate fields pipes need. Every function returns
/// `None` on malformed input; nothing indexes without a bounds check.
pub(crate) mod der {
    /// Tag of SEQUENCE.
    pub const SEQUENCE: u8 = 0x30;
    /// Tag of SET.
    pub const SET: u8 = 0x31;
    /// Tag of OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// Tag of UTF8String.
    pub const UTF8_STRING: u8 = 0x0c;
    /// Tag of PrintableString.
    pub const PRINTABLE_STRING: u8 = 0x13;
    /// Tag of IA5String.
    pub const IA5_STRING: u8 = 0x16;
    /// `id-ce-subjectAltName` (2.5.29.17), content octets.
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    /// `id-ce-basicConstraints` (2.5.29.19), content octets.
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    /// Tag of BOOLEAN.
    const BOOLEAN: u8 = 0x01;
    /// GeneralName `uniformResourceIdentifier` ([6] IMPLICIT IA5String).
    const GENERAL_NAME_URI: u8 = 0x86;

    /// One tag-length-value element.
    pub struct Tlv<'a> {
        /// The identifier octet.
        pub tag: u8,
        /// The content octets.
        pub body: &'a [u8],
        /// The whole element, header included.
        pub raw: &'a [u8],
    }

    /// Reads one element from the front of `input`; returns it and the rest.
    pub fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
        let (&tag, rest) = input.split_first()?;
        // High tag numbers never occur in the fields read here.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // 0x80 is BER's indefinite length, not DER; more than 4 octets is absurd here.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (octets, after) = rest.split_at_checked(n)?;
            rest = after;
            octets
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let header = input.len() - rest.len();
        let (body, after) = rest.split_at_checked(len)?;
        let raw = input.get(..header + len)?;
        Some((Tlv { tag, body, raw }, after))
    }

    /// Reads one element that must have tag `tag`.
    pub fn expect(input: &[u8], tag: u8) -> Option<(Tlv<'_>, &[u8])> {
        let (tlv, rest) = read(input)?;
        (tlv.tag == tag).then_some((tlv, rest))
    }

    /// The parts of a certificate pipes look at.
    pub struct CertInfo<'a> {
        /// The issuer `Name`, header included (compared byte for byte).
        pub issuer: &'a [u8],
        /// The subject `Name`, header included.
        pub subject: &'a [u8],
        /// The content of the subject `Name` (its relative names).
        pub subject_body: &'a [u8],
        /// The `SubjectPublicKeyInfo`, header included.
        pub spki: &'a [u8],
        /// The content of the `Extensions` SEQUENCE, if present.
        pub extensions: Option<&'a [u8]>,
    }

    /// Splits an X.509 certificate into the parts of [`CertInfo`].
    pub fn cert_info(cert: &[u8]) -> Option<CertInfo<'_>> {
        let (cert, _) = expect(cert, SEQUENCE)?;
        let (tbs, _) = expect(cert.body, SEQUENCE)?;
        let mut r = tbs.body;
        let (first, after) = read(r)?;
        if first.tag == 0xa0 {
            r = after; // [0] EXPLICIT version
        }
        let (_serial, r) = expect(r, 0x02)?;
        let (_signature, r) = expect(r, SEQUENCE)?;
        let (issuer, r) = expect(r, SEQUENCE)?;
        let (_validity, r) = expect(r, SEQUENCE)?;
        let (subject, r) = expect(r, SEQUENCE)?;
        let (spki, mut r) = expect(r, SEQUENCE)?;
        let mut extensions = None;
        while !r.is_empty() {
            let (field, rest) = read(r)?;
            if field.tag == 0xa3 {
                let (seq, _) = expect(field.body, SEQUENCE)?;
                extensions = Some(seq.body);
            }
            r = rest;
        }
        Some(CertInfo {
            issuer: issuer.raw,
            subject: subject.raw,
            subject_body: subject.body,
            spki: spki.raw,
            extensions,
        })
    }

    /// Whether the basicConstraints extension says `cA: TRUE`.
    pub fn is_ca(extensions: &[u8]) -> Option<bool> {
        let mut r = extensions;
        while !r.is_empty() {
            let (ext, rest) = expect(r, SEQUENCE)?;
            r = rest;
            let (oid, mut e) = expect(ext.body, OID)?;
            if oid.body != BASIC_CONSTRAINTS {
                continue;
            }
            if let Some((_critical, after)) = expect(e, BOOLEAN) {
                e = after;
            }
            let (value, _) = expect(e, 0x04)?;
            let (constraints, _) = expect(value.body, SEQUENCE)?;
            return Some(match expect(constraints.body, BOOLEAN) {
                Some((ca, _)) => ca.body.first().is_some_and(|b| *b != 0),
                None => false,
            });
        }
        Some(false)
    }

    /// The URI entries of the subjectAltName extension (empty when there is none).
    pub fn san_uris(extensions: &[u8]) -> Option<Vec<&str>> {
        let mut uris = Vec::new();
        let mut r = extensions;
        while !r.is_empty() {
            let (ext, rest) = expect(r, SEQUENCE)?;
            r = rest;
            let (oid, mut e) = expect(ext.body, OID)?;
            if oid.body != SUBJECT_ALT_NAME {
                continue;
            }
            if let Some((_critical, after)) = expect(e, BOOLEAN) {
                e = after;
            }
            let (value, _) = expect(e, 0x04)?;
            let (names, _) = expect(value.body, SEQUENCE)?;
            let mut n = names.body;
            while !n.is_empty() {
                let (name, rest) = read(n)?;
                n = rest;
                if name.tag == GENERAL_NAME_URI {
                    uris.push(std::str::from_utf8(name.body).ok()?);
                }
            }
        }
        Some(uris)
    }

    /// One attribute of a `Name`: OID arcs, string tag, value octets.
    pub type Attribute<'a> = (Vec<u64>, u8, &'a [u8]);

    /// The (OID arcs, string tag, value) of each attribute of a `Name`'s content. Multi-valued
    /// relative names are refused (`None`): they cannot be rebuilt in order.
    pub fn name_attributes(name_body: &[u8]) -> Option<Vec<Attribute<'_>>> {
        let mut attrs = Vec::new();
        let mut r = name_body;
        while !r.is_empty() {
            let (rdn, rest) = expect(r, SET)?;
            r = rest;
            let (atv, after) = expect(rdn.body, SEQUENCE)?;
            if !after.is_empty() {
                return None;
            }
            let (oid, v) = expect(atv.body, OID)?;
            let (value, _) = read(v)?;
            attrs.push((oid_arcs(oid.body)?, value.tag, value.body));
        }
        Some(attrs)
    }

    /// Decodes the content octets of an OBJECT IDENTIFIER.
    pub fn oid_arcs(body: &[u8]) -> Option<Vec<u64>> {
        let mut values = Vec::new();
        let mut acc: u64 = 0;
        let mut pending = false;
        for &b in body {
            if acc > (u64::MAX >> 7) {
                return None;
            }
            acc = (acc << 7) | u64::from(b & 0x7f);
            pending = b & 0x80 != 0;
            if !pending {
                values.push(acc);
                acc = 0;
            }
        }
        if pending || values.is_empty() {
            return None;
        }
        // The first sub-identifier packs the first two arcs (X.690 8.19.4).
        let first = values[0]; // non-empty: checked above
        let (a, b) = match first {
            0..=39 => (0, first),
            40..=79 => (1, first - 40),
            _ => (2, first - 80),
        };
        let mut arcs = vec![a, b];
        arcs.extend_from_slice(values.get(1..)?);
        Some(arcs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(pem: &str) -> CertificateDer<'static> {
        first_cert(pem, "test").expect("test PEM holds a certificate")
    }

    #[test]
    fn node_ids_are_validated() {
        for ok in ["a", "node-1", "eu_west.2", "A.b-C_d", "1.2.3.4"] {
            assert!(validate_node_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a:b", &"x".repeat(254)] {
            assert!(
                matches!(validate_node_id(bad), Err(CertError::InvalidNodeId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn dns_form_only_for_dns_names() {
        assert!(is_dns_name("node-1.example"));
        assert!(!is_dns_name("node_1"));
        assert!(!is_dns_name("1.2.3.4"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name("-a"));
    }

    #[test]
    fn node_cert_names_its_node_and_chains_to_the_ca() {
        let ca = generate_ca("test").unwrap();
        for id in ["node-a", "node_with_underscore", "10.0.0.1"] {
            let node = generate_node_cert(&ca, id, &["127.0.0.1".into()]).unwrap();
            let cert = der_of(&node.cert_pem);
            assert_eq!(node_id_from_cert(&cert).unwrap(), id);
            verify_against_ca(&der_of(&ca.cert_pem), &cert, id).unwrap();
        }
    }

    #[test]
    fn ca_certificate_names_no_node() {
        let ca = generate_ca("test").unwrap();
        assert!(matches!(
            node_id_from_cert(&der_of(&ca.cert_pem)),
            Err(CertError::NoNodeId)
        ));
    }

    #[test]
    fn mismatched_ca_key_is_refused() {
        let a = generate_ca("a").unwrap();
        let b = generate_ca("b").unwrap();
        let mixed = CaBundle {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem,
        };
        assert!(matches!(
            generate_node_cert(&mixed, "n", &[]),
            Err(CertError::CaKeyMismatch)
        ));
    }

    #[test]
    fn a_node_certificate_cannot_act_as_ca() {
        let ca = generate_ca("a").unwrap();
        let node = generate_node_cert(&ca, "n", &[]).unwrap();
        let fake_ca = CaBundle {
            cert_pem: node.cert_pem,
            key_pem: node.key_pem,
        };
        assert!(matches!(
            generate_node_cert(&fake_ca, "m", &[]),
            Err(CertError::CaNotReusable { .. })
        ));
        assert!(is_ca_cert(&der_of(&ca.cert_pem)).unwrap());
    }

    #[test]
    fn bad_inputs_give_errors() {
        let ca = generate_ca("a").unwrap();
        assert!(matches!(
            generate_node_cert(&ca, "n", &["not a name".into()]),
            Err(CertError::InvalidSan { .. })
        ));
        assert!(matches!(
            generate_node_cert_valid_for(&ca, "n", &[], 0),
            Err(CertError::InvalidValidity { .. })
        ));
        assert!(matches!(
            generate_ca(""),
            Err(CertError::InvalidCluster { .. })
        ));
        assert!(matches!(
            parse_pem_key(b"nothing here", "x"),
            Err(CertError::NoKey { .. })
        ));
        assert!(matches!(
            parse_pem_cert_chain(b"", "x"),
            Err(CertError::NoCertificate { .. })
        ));
    }

    #[test]
    fn der_reader_survives_garbage() {
        let ca = generate_ca("a").unwrap();
        let node = generate_node_cert(&ca, "n", &[]).unwrap();
        let good = der_of(&node.cert_pem).to_vec();
        // Every truncation and a sweep of single-byte corruptions must give Ok or Err, never
        // a panic.
        for len in 0..good.len() {
            let _ = node_id_from_cert(&CertificateDer::from(good[..len].to_vec()));
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = node_id_from_cert(&CertificateDer::from(bad));
        }
        assert_eq!(der::oid_arcs(&[0x55, 0x1d, 0x11]), Some(vec![2, 5, 29, 17]));
        assert_eq!(der::oid_arcs(&[0x80]), None);
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pipemesh-certs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn args(out: &Path, nodes: &[&str]) -> CertsArgs {
        CertsArgs {
            out: out.to_owned(),
            cluster: Some("test".into()),
            ca_cert: None,
            ca_key: None,
            extra_sans: Vec::new(),
            days: DEFAULT_NODE_VALID_DAYS,
            ca_days: DEFAULT_CA_VALID_DAYS,
            force: false,
            node_ids: nodes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn run_writes_files_with_private_keys_0600_and_refuses_overwrite() {
        let dir = scratch_dir("run");
        run(args(&dir, &["node-a", "node_b"])).unwrap();
        for (file, mode) in [
            ("ca.pem", 0o644),
            ("ca.key", 0o600),
            ("node-a.pem", 0o644),
            ("node-a.key", 0o600),
            ("node_b.key", 0o600),
        ] {
            let meta = fs::metadata(dir.join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o077, mode & 0o077, "{file}");
        }
        let before = fs::read(dir.join("ca.key")).unwrap();
        assert!(matches!(
            run(args(&dir, &["node-a"])),
            Err(CertError::Exists { .. })
        ));
        assert_eq!(fs::read(dir.join("ca.key")).unwrap(), before);

        // Reusing the CA from the same directory adds a node without touching ca.pem.
        let mut reuse = args(&dir, &["node-c"]);
        reuse.cluster = None;
        reuse.ca_cert = Some(dir.join("ca.pem"));
        reuse.ca_key = Some(dir.join("ca.key"));
        run(reuse).unwrap();
        let ca = load_pem_cert_chain(dir.join("ca.pem")).unwrap();
        let c = load_pem_cert_chain(dir.join("node-c.pem")).unwrap();
        verify_against_ca(&ca[0], &c[0], "node-c").unwrap();
        assert!(load_pem_key(dir.join("node-c.key")).is_ok());

        let mut forced = args(&dir, &["node-a"]);
        forced.force = true;
        run(forced).unwrap();
        assert_ne!(fs::read(dir.join("ca.key")).unwrap(), before);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn run_refuses_reserved_and_duplicate_ids_before_writing() {
        let dir = scratch_dir("reserved");
        assert!(matches!(
            run(args(&dir, &["ca"])),
            Err(CertError::InvalidNodeId { .. })
        ));
        assert!(matches!(
            run(args(&dir, &["a", "a"])),
            Err(CertError::InvalidNodeId { .. })
        ));
        assert!(!dir.exists());
    }

    #[test]
    fn command_line_rules() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            args: CertsArgs,
        }
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
        let ok = parse("certs --out d --cluster c a b").unwrap().args;
        assert_eq!(ok.node_ids, ["a", "b"]);
        assert_eq!(ok.days, DEFAULT_NODE_VALID_DAYS);
        assert!(parse("certs --out d --ca-cert x --ca-key y a").is_ok());
        // A new CA needs a cluster name; a reused CA needs both files; nodes are required.
        assert!(parse("certs --out d a").is_err());
        assert!(parse("certs --out d --ca-cert x a").is_err());
        assert!(parse("certs --out d --cluster c").is_err());
    }

    #[test]
    fn load_errors_name_the_file() {
        let err = load_pem_key("/nonexistent/pipemesh/node.key").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/pipemesh/node.key"),
            "{err}"
        );
    }
}
