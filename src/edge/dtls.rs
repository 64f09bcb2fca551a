//! DTLS glue: runs the `dtls` crate's handshake for one transport behind a channel adapter and
//! hands back SRTP keys.
//!
//! The `dtls` crate wants an async `Conn` it can read from and write to. [`ChannelConn`] is
//! that Conn: records the worker demultiplexed to this transport arrive on a channel, and
//! records DTLS wants to send leave on another channel back to the worker, which alone owns
//! the sockets and knows the ICE-selected tuple. The remote certificate is checked against
//! the signaled fingerprint inside the handshake (before any keying material is exported).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtls::config::{ClientAuthType, Config as DtlsConfig, ExtendedMasterSecretType};
use dtls::conn::DTLSConn;
use dtls::crypto::Certificate;
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, Mutex};
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::conn::Conn;

/// Errors of the DTLS glue.
#[derive(Debug, Error)]
pub enum DtlsError {
    /// The node certificate could not be generated.
    #[error("cannot generate DTLS certificate: {0}")]
    Certificate(String),
    /// The signaled DTLS parameters are unusable.
    #[error("invalid dtlsParameters: {0}")]
    InvalidParameters(String),
    /// The handshake failed (includes a fingerprint mismatch).
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    /// The handshake did not complete in time.
    #[error("DTLS handshake timed out")]
    Timeout,
    /// The negotiated SRTP profile is not one we support.
    #[error("unsupported SRTP protection profile {0:?}")]
    UnsupportedProfile(String),
    /// Exporting SRTP keying material failed.
    #[error("SRTP key export failed: {0}")]
    KeyExport(String),
}

/// DTLS role, as signaled (`auto`, `client`, `server`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    /// Let the other side decide.
    Auto,
    /// Initiates the handshake.
    Client,
    /// Answers the handshake.
    Server,
}

/// A certificate fingerprint as signaled: `{algorithm: "sha-256", value: "AB:CD:..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash function name (`sha-1`, `sha-256`, `sha-384`, `sha-512`).
    pub algorithm: String,
    /// Colon-separated hex digest.
    pub value: String,
}

/// `dtlsParameters` as signaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtlsParameters {
    /// Role of the sender of these parameters.
    #[serde(default = "auto_role")]
    pub role: DtlsRole,
    /// Fingerprints of the sender's certificate.
    pub fingerprints: Vec<Fingerprint>,
}

fn auto_role() -> DtlsRole {
    DtlsRole::Auto
}

impl DtlsParameters {
    /// Parses and checks signaled parameters: at least one fingerprint with a known algorithm.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, DtlsError> {
        let p: DtlsParameters = serde_json::from_value(v.clone())
            .map_err(|e| DtlsError::InvalidParameters(e.to_string()))?;
        if !p
            .fingerprints
            .iter()
            .any(|f| digest_algorithm(&f.algorithm).is_some())
        {
            return Err(DtlsError::InvalidParameters(
                "no fingerprint with a supported algorithm (sha-1, sha-256, sha-384, sha-512)"
                    .into(),
            ));
        }
        Ok(p)
    }

    /// The role we take when the remote sent these parameters: the opposite of theirs, and
    /// client when they said `auto` (mediasoup does the same).
    pub fn local_role(&self) -> DtlsRole {
        match self.role {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server | DtlsRole::Auto => DtlsRole::Client,
        }
    }
}

fn digest_algorithm(name: &str) -> Option<&'static ring::digest::Algorithm> {
    match name.to_ascii_lowercase().as_str() {
        "sha-1" => Some(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
        "sha-256" => Some(&ring::digest::SHA256),
        "sha-384" => Some(&ring::digest::SHA384),
        "sha-512" => Some(&ring::digest::SHA512),
        _ => None,
    }
}

/// Colon-separated uppercase hex digest of `der` under `algorithm`.
pub fn fingerprint_of(der: &[u8], algorithm: &str) -> Option<String> {
    let alg = digest_algorithm(algorithm)?;
    let d = ring::digest::digest(alg, der);
    let mut s = String::with_capacity(d.as_ref().len() * 3);
    for (i, b) in d.as_ref().iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    Some(s)
}

/// Whether `der` matches one of the signaled fingerprints (known algorithms only).
pub fn matches_fingerprints(der: &[u8], fingerprints: &[Fingerprint]) -> bool {
    fingerprints.iter().any(|f| {
        fingerprint_of(der, &f.algorithm)
            .map(|mine| mine.eq_ignore_ascii_case(f.value.trim()))
            .unwrap_or(false)
    })
}

/// The node's DTLS identity: one self-signed certificate shared by all transports, as mediasoup.
#[derive(Clone)]
pub struct DtlsIdentity {
    certificate: Certificate,
    fingerprints: Vec<Fingerprint>,
}

impl DtlsIdentity {
    /// Generates a fresh ECDSA P-256 self-signed certificate.
    pub fn generate() -> Result<Self, DtlsError> {
        let certificate = Certificate::generate_self_signed(vec!["pipemesh".to_owned()])
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let der = certificate
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Certificate("empty chain".into()))?;
        let fingerprints = ["sha-256", "sha-384", "sha-512"]
            .iter()
            .filter_map(|a| {
                Some(Fingerprint {
                    algorithm: (*a).to_owned(),
                    value: fingerprint_of(der.as_ref(), a)?,
                })
            })
            .collect();
        Ok(Self {
            certificate,
            fingerprints,
        })
    }

    /// Fingerprints to signal in `dtlsParameters`.
    pub fn fingerprints(&self) -> &[Fingerprint] {
        &self.fingerprints
    }
}

/// SRTP material exported by a completed handshake.
#[derive(Clone, Debug)]
pub struct SrtpKeys {
    /// Negotiated profile.
    pub profile: ProtectionProfile,
    /// Key and salt we encrypt with.
    pub local_key: Vec<u8>,
    /// Salt we encrypt with.
    pub local_salt: Vec<u8>,
    /// Key the remote encrypts with.
    pub remote_key: Vec<u8>,
    /// Salt the remote encrypts with.
    pub remote_salt: Vec<u8>,
}

/// What the handshake task reports to its owner.
#[derive(Debug)]
pub enum DtlsEvent {
    /// A record to send on the transport's selected tuple.
    Transmit(Vec<u8>),
    /// Handshake done, fingerprint verified, keys exported.
    Connected(SrtpKeys),
    /// Handshake failed or the connection closed (alert / close_notify).
    Failed(String),
    /// The remote closed the DTLS session.
    Closed,
}

/// Adapter from channels to the `Conn` trait the `dtls` crate drives.
pub struct ChannelConn {
    incoming: Mutex<mpsc::Receiver<Vec<u8>>>,
    outgoing: mpsc::Sender<Vec<u8>>,
}

#[async_trait]
impl Conn for ChannelConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let mut rx = self.incoming.lock().await;
        match rx.recv().await {
            Some(pkt) => {
                let n = pkt.len().min(buf.len());
                buf[..n].copy_from_slice(&pkt[..n]);
                Ok(n)
            }
            None => Err(webrtc_util::Error::ErrClosedListener),
        }
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let n = self.recv(buf).await?;
        Ok((n, placeholder_addr()))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        // A full queue means the worker is overloaded: drop, DTLS retransmits.
        let _ = self.outgoing.try_send(buf.to_vec());
        Ok(buf.len())
    }
    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(placeholder_addr())
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

fn placeholder_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

/// Records queued towards one handshake before the worker drops more.
const DTLS_QUEUE: usize = 64;

/// Handle to a running DTLS session: feed it records; drop it to end the session.
pub struct DtlsSession {
    to_dtls: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl DtlsSession {
    /// Starts a handshake in `role` (Client or Server; Auto is treated as Server) that accepts
    /// only a peer certificate matching `remote`. Events go to `events` tagged by the caller.
    pub fn start<F>(
        identity: &DtlsIdentity,
        role: DtlsRole,
        remote: Vec<Fingerprint>,
        timeout: Duration,
        emit: F,
    ) -> Self
    where
        F: FnMut(DtlsEvent) + Send + 'static,
    {
        Self::start_with_profiles(identity, role, remote, timeout, None, emit)
    }

    /// [`Self::start`] offering only `profile` for SRTP (`None`: AEAD_AES_128_GCM first, then
    /// AES_CM_128_HMAC_SHA1_80), e.g. for a benchmark of one profile.
    pub fn start_with_profiles<F>(
        identity: &DtlsIdentity,
        role: DtlsRole,
        remote: Vec<Fingerprint>,
        timeout: Duration,
        profile: Option<crate::srtp::Profile>,
        mut emit: F,
    ) -> Self
    where
        F: FnMut(DtlsEvent) + Send + 'static,
    {
        let profiles = match profile {
            None => vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ],
            Some(crate::srtp::Profile::AeadAes128Gcm) => {
                vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm]
            }
            Some(crate::srtp::Profile::Aes128CmHmacSha1_80) => {
                vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]
            }
        };
        let (to_dtls, incoming) = mpsc::channel(DTLS_QUEUE);
        let (outgoing, mut out_rx) = mpsc::channel::<Vec<u8>>(DTLS_QUEUE);
        let conn = Arc::new(ChannelConn {
            incoming: Mutex::new(incoming),
            outgoing,
        });
        let is_client = role == DtlsRole::Client;
        let config = DtlsConfig {
            certificates: vec![identity.certificate.clone()],
            srtp_protection_profiles: profiles,
            extended_master_secret: ExtendedMasterSecretType::Require,
            client_auth: ClientAuthType::RequireAnyClientCert,
            insecure_skip_verify: true,
            server_name: "pipemesh".into(),
            verify_peer_certificate: Some(Arc::new(
                move |certs: &[Vec<u8>], _: &[CertificateDer<'static>]| {
                    let Some(leaf) = certs.first() else {
                        return Err(dtls::Error::Other("peer sent no certificate".into()));
                    };
                    if matches_fingerprints(leaf, &remote) {
                        Ok(())
                    } else {
                        Err(dtls::Error::Other(
                            "peer certificate does not match the signaled fingerprint".into(),
                        ))
                    }
                },
            )),
            ..Default::default()
        };
        let task = tokio::spawn(async move {
            let handshake = DTLSConn::new(conn, config, is_client, None);
            tokio::pin!(handshake);
            // Forward outgoing records while the handshake runs.
            let result = loop {
                tokio::select! {
                    r = &mut handshake => break r.map_err(|e| DtlsError::Handshake(e.to_string())),
                    Some(rec) = out_rx.recv() => emit(DtlsEvent::Transmit(rec)),
                    _ = tokio::time::sleep(timeout) => break Err(DtlsError::Timeout),
                }
            };
            let dtls = match result {
                Ok(c) => c,
                Err(e) => {
                    emit(DtlsEvent::Failed(e.to_string()));
                    return;
                }
            };
            match export_keys(&dtls, is_client).await {
                Ok(keys) => emit(DtlsEvent::Connected(keys)),
                Err(e) => {
                    emit(DtlsEvent::Failed(e.to_string()));
                    let _ = dtls.close().await;
                    return;
                }
            }
            // After the handshake: keep answering retransmitted flights and watch for close.
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    r = dtls.read(&mut buf, None) => match r {
                        Ok(_) => {} // application data is not used on WebRTC media transports
                        Err(_) => { emit(DtlsEvent::Closed); break; }
                    },
                    Some(rec) = out_rx.recv() => emit(DtlsEvent::Transmit(rec)),
                }
            }
        });
        Self { to_dtls, task }
    }

    /// Queues a DTLS record received on the selected tuple. Drops it when the queue is full.
    pub fn feed(&self, record: &[u8]) {
        let _ = self.to_dtls.try_send(record.to_vec());
    }
}

impl Drop for DtlsSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export_keys(conn: &DTLSConn, is_client: bool) -> Result<SrtpKeys, DtlsError> {
    let profile = match conn.selected_srtpprotection_profile() {
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            ProtectionProfile::Aes128CmHmacSha1_80
        }
        other => return Err(DtlsError::UnsupportedProfile(format!("{other:?}"))),
    };
    let mut cfg = webrtc_srtp::config::Config {
        profile,
        ..Default::default()
    };
    let state = conn.connection_state().await;
    cfg.extract_session_keys_from_dtls(state, is_client)
        .await
        .map_err(|e| DtlsError::KeyExport(e.to_string()))?;
    Ok(SrtpKeys {
        profile,
        local_key: cfg.keys.local_master_key,
        local_salt: cfg.keys.local_master_salt,
        remote_key: cfg.keys.remote_master_key,
        remote_salt: cfg.keys.remote_master_salt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_roles() {
        let p = DtlsParameters::from_json(&serde_json::json!({
            "role": "client",
            "fingerprints": [{"algorithm": "sha-256", "value": "AA:BB"}]
        }))
        .unwrap();
        assert_eq!(p.local_role(), DtlsRole::Server);
        let p = DtlsParameters::from_json(&serde_json::json!({
            "fingerprints": [{"algorithm": "sha-256", "value": "AA:BB"}]
        }))
        .unwrap();
        assert_eq!(p.role, DtlsRole::Auto);
        assert_eq!(p.local_role(), DtlsRole::Client);
        assert!(DtlsParameters::from_json(&serde_json::json!({
            "role": "server", "fingerprints": [{"algorithm": "md5", "value": "AA"}]
        }))
        .is_err());
        assert!(DtlsParameters::from_json(&serde_json::json!({"role": "boss"})).is_err());
    }

    #[test]
    fn fingerprint_matching() {
        let der = b"not really a certificate";
        let v = fingerprint_of(der, "sha-256").unwrap();
        assert_eq!(v.len(), 32 * 3 - 1);
        let good = [Fingerprint {
            algorithm: "SHA-256".into(),
            value: v.to_lowercase(),
        }];
        assert!(matches_fingerprints(der, &good));
        let bad = [Fingerprint {
            algorithm: "sha-256".into(),
            value: fingerprint_of(b"other", "sha-256").unwrap(),
        }];
        assert!(!matches_fingerprints(der, &bad));
    }

    /// Runs a real handshake between two sessions joined back to back by channels. Returns the
    /// keys each side exported; stops as soon as either side fails.
    async fn handshake(
        a: &DtlsIdentity,
        b: &DtlsIdentity,
        client_expects: Vec<Fingerprint>,
    ) -> (Option<SrtpKeys>, Option<SrtpKeys>) {
        handshake_offering(a, b, client_expects, None).await
    }

    /// [`handshake`] with the client offering only `profile`.
    async fn handshake_offering(
        a: &DtlsIdentity,
        b: &DtlsIdentity,
        client_expects: Vec<Fingerprint>,
        profile: Option<crate::srtp::Profile>,
    ) -> (Option<SrtpKeys>, Option<SrtpKeys>) {
        let (atx, mut arx) = mpsc::unbounded_channel();
        let (btx, mut brx) = mpsc::unbounded_channel();
        let t = Duration::from_secs(10);
        let client = DtlsSession::start_with_profiles(
            a,
            DtlsRole::Client,
            client_expects,
            t,
            profile,
            move |e| {
                let _ = atx.send(e);
            },
        );
        let server = DtlsSession::start(
            b,
            DtlsRole::Server,
            a.fingerprints().to_vec(),
            t,
            move |e| {
                let _ = btx.send(e);
            },
        );
        let (mut ck, mut sk) = (None, None);
        while ck.is_none() || sk.is_none() {
            tokio::select! {
                Some(e) = arx.recv() => match e {
                    DtlsEvent::Transmit(r) => server.feed(&r),
                    DtlsEvent::Connected(k) => ck = Some(k),
                    _ => break,
                },
                Some(e) = brx.recv() => match e {
                    DtlsEvent::Transmit(r) => client.feed(&r),
                    DtlsEvent::Connected(k) => sk = Some(k),
                    _ => break,
                },
            }
        }
        (ck, sk)
    }

    #[tokio::test]
    async fn handshake_agrees_on_keys() {
        let (a, b) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let (ck, sk) = handshake(&a, &b, b.fingerprints().to_vec()).await;
        let (ck, sk) = (ck.expect("client keys"), sk.expect("server keys"));
        assert_eq!(format!("{:?}", ck.profile), format!("{:?}", sk.profile));
        assert_eq!(ck.local_key, sk.remote_key);
        assert_eq!(ck.remote_salt, sk.local_salt);
        assert_ne!(ck.local_key, ck.remote_key);
    }

    #[tokio::test]
    async fn gcm_is_preferred_and_a_client_may_offer_only_aes_cm() {
        let (a, b) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let (ck, _) = handshake(&a, &b, b.fingerprints().to_vec()).await;
        let name = |p: ProtectionProfile| format!("{p:?}");
        assert_eq!(name(ck.expect("keys").profile), "AeadAes128Gcm");
        let only_cm = Some(crate::srtp::Profile::Aes128CmHmacSha1_80);
        let (ck, sk) = handshake_offering(&a, &b, b.fingerprints().to_vec(), only_cm).await;
        let (ck, sk) = (ck.expect("client keys"), sk.expect("server keys"));
        assert_eq!(name(ck.profile), "Aes128CmHmacSha1_80");
        assert_eq!(name(sk.profile), "Aes128CmHmacSha1_80");
        assert_eq!(ck.local_key, sk.remote_key);
    }

    #[tokio::test]
    async fn fingerprint_mismatch_fails_before_keys() {
        let (a, b) = (
            DtlsIdentity::generate().unwrap(),
            DtlsIdentity::generate().unwrap(),
        );
        let wrong = vec![Fingerprint {
            algorithm: "sha-256".into(),
            value: fingerprint_of(b"someone else", "sha-256").unwrap(),
        }];
        let (ck, _) = handshake(&a, &b, wrong).await;
        assert!(
            ck.is_none(),
            "handshake must fail on a fingerprint mismatch"
        );
    }
}
