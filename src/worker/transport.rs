//! A WebRtcTransport's network state: ICE-lite server, DTLS progress, SRTP contexts, and the
//! tables that route its incoming RTP/RTCP to producers and consumers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use serde_json::{json, Value};

use crate::edge::dtls::{DtlsParameters, DtlsRole, Fingerprint, SrtpKeys};
use crate::edge::ice::{generate_credentials, IceServer};
use crate::ids::{ConsumerId, PeerId, ProducerId, RoomId, TransportId};
use crate::srtp::SrtpContext;

/// DTLS progress of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsState {
    /// `connectWebRtcTransport` not received yet.
    New,
    /// Handshake running.
    Connecting,
    /// Keys exported; SRTP ready.
    Connected,
}

/// One WebRtcTransport.
pub struct Transport {
    /// Id.
    pub id: TransportId,
    /// Owning room.
    pub room: RoomId,
    /// Owning peer.
    pub peer: PeerId,
    /// Created for producing.
    pub producing: bool,
    /// Created for consuming.
    pub consuming: bool,
    /// ICE-lite state.
    pub ice: IceServer,
    /// DTLS progress.
    pub dtls: DtlsState,
    /// Our DTLS role once connected.
    pub dtls_role: Option<DtlsRole>,
    /// Decrypts what the client sends.
    pub srtp_in: Option<SrtpContext>,
    /// Encrypts what we send.
    pub srtp_out: Option<SrtpContext>,
    /// Producers using this transport.
    pub producers: HashSet<ProducerId>,
    /// Consumers using this transport.
    pub consumers: HashSet<ConsumerId>,
    /// Incoming SSRC -> producer stream (learned from signaled SSRCs or from MID/RID).
    pub ssrc_table: HashMap<u32, crate::worker::media::StreamRef>,
    /// Outgoing SSRC (media or RTX) -> consumer, to route RTCP feedback from the client.
    pub consumer_by_ssrc: HashMap<u32, ConsumerId>,
    /// Transport-wide-cc sequence number for packets we send.
    pub twcc_out_seq: u16,
    /// Next MID assigned to a consumer on this transport (mediasoup does the same, so the
    /// client's m-sections and the MID carried in packets agree).
    pub next_mid_for_consumers: u32,
    /// CNAME given to producers that signal none.
    pub cname_for_producers: String,
    /// Receiver side of transport-wide-cc for what the client sends us.
    pub twcc_in: Option<crate::worker::media::TwccIn>,
}

impl Transport {
    /// A new transport with fresh ICE credentials.
    pub fn new(
        id: TransportId,
        room: RoomId,
        peer: PeerId,
        producing: bool,
        consuming: bool,
        consent_timeout: Duration,
        rng: &mut StdRng,
    ) -> Self {
        let creds = generate_credentials(rng);
        Self {
            id,
            room,
            peer,
            producing,
            consuming,
            ice: IceServer::new(creds.username_fragment, creds.password, consent_timeout),
            dtls: DtlsState::New,
            dtls_role: None,
            srtp_in: None,
            srtp_out: None,
            producers: HashSet::new(),
            consumers: HashSet::new(),
            ssrc_table: HashMap::new(),
            consumer_by_ssrc: HashMap::new(),
            twcc_out_seq: 0,
            twcc_in: None,
            next_mid_for_consumers: 0,
            cname_for_producers: {
                use rand::Rng;
                (0..16)
                    .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                    .collect()
            },
        }
    }

    /// `createWebRtcTransport`'s answer: id, iceParameters, iceCandidates, dtlsParameters.
    pub fn describe(
        &self,
        address: &str,
        port: u16,
        force_tcp: bool,
        fingerprints: &[Fingerprint],
    ) -> Value {
        let mut candidates = Vec::new();
        if !force_tcp {
            candidates.push(json!({
                "foundation": "udpcandidate", "priority": 1076302079u32, "ip": address, "address": address,
                "protocol": "udp", "port": port, "type": "host"
            }));
        }
        candidates.push(json!({
            "foundation": "tcpcandidate", "priority": 1076276479u32, "ip": address, "address": address,
            "protocol": "tcp", "port": port, "type": "host", "tcpType": "passive"
        }));
        json!({
            "id": self.id,
            "iceParameters": self.ice_parameters(),
            "iceCandidates": candidates,
            "dtlsParameters": { "role": "auto", "fingerprints": fingerprints },
            "sctpParameters": Value::Null,
        })
    }

    fn ice_parameters(&self) -> Value {
        json!({
            "usernameFragment": self.ice.local_ufrag(),
            "password": self.ice.local_password(),
            "iceLite": true,
        })
    }

    /// `connectWebRtcTransport`: decides our DTLS role. Refused when already connected.
    pub fn connect(&mut self, params: &DtlsParameters) -> Result<DtlsRole, String> {
        if self.dtls != DtlsState::New {
            return Err("transport already connected".into());
        }
        let role = params.local_role();
        self.dtls = DtlsState::Connecting;
        self.dtls_role = Some(role);
        Ok(role)
    }

    /// `restartIce`: new credentials; returns the new iceParameters.
    pub fn restart_ice(&mut self, rng: &mut StdRng) -> Value {
        let creds = generate_credentials(rng);
        self.ice.restart(creds.username_fragment, creds.password);
        self.ice_parameters()
    }

    /// The handshake completed: set up SRTP.
    pub fn on_dtls_connected(&mut self, keys: &SrtpKeys) -> Result<(), String> {
        let srtp_in = SrtpContext::from_webrtc(keys.profile, &keys.remote_key, &keys.remote_salt)
            .map_err(|e| e.to_string())?;
        let srtp_out = SrtpContext::from_webrtc(keys.profile, &keys.local_key, &keys.local_salt)
            .map_err(|e| e.to_string())?;
        self.srtp_in = Some(srtp_in);
        self.srtp_out = Some(srtp_out);
        self.dtls = DtlsState::Connected;
        Ok(())
    }

    /// Earliest ICE deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self
            .twcc_in
            .as_ref()
            .and_then(|t| t.recorder.poll_timeout());
        match (self.ice.poll_timeout(), t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether media can be sent: DTLS done and a tuple selected.
    pub fn is_connected(&self) -> bool {
        self.dtls == DtlsState::Connected && self.ice.selected_tuple().is_some()
    }

    /// Next transport-wide sequence number for an outgoing packet.
    pub fn next_twcc_seq(&mut self) -> u16 {
        let s = self.twcc_out_seq;
        self.twcc_out_seq = s.wrapping_add(1);
        s
    }
}
