//! The ICE-lite server of one WebRtcTransport, behaving like mediasoup's `RTC::IceServer`.
//!
//! This module owns, for one transport: the local ICE credentials, the set of remote tuples
//! that proved knowledge of them (valid tuples), which of those is selected for sending, the
//! ICE state, and consent freshness (RFC 7675) of the tuples. It answers Binding requests by
//! writing the response into a caller-provided buffer; sending it, routing packets to the right
//! transport and closing TCP connections is the glue's job. It never reads the clock: every
//! input carries `now`, and [`IceServer::poll_timeout`] says when to call
//! [`IceServer::handle_timeout`].
//!
//! Drive rule: after each `handle_*` call, send `out` if it is non-empty and drain
//! [`IceServer::poll_event`] until it returns `None`.
//!
//! Being ICE-lite, we are always the controlled agent and never send checks; the peer (Chrome via
//! mediasoup-client) nominates with USE-CANDIDATE (or NOMINATION when renomination is
//! negotiated). Like mediasoup, the first valid check selects its tuple even without
//! nomination, so media can flow before the peer nominates.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{self, IntegrityKey, StunErrorCode, StunMessage};

/// Most tuples kept per transport (as mediasoup); when full, the stalest unselected one is
/// forgotten.
pub const MAX_TUPLES: usize = 8;
/// Bound on undrained events; the oldest is dropped past it (a glue that drains after every call
/// never gets near it).
const MAX_EVENTS: usize = 64;
/// Length of a generated username fragment.
pub const UFRAG_LEN: usize = 16;
/// Length of a generated password.
pub const PASSWORD_LEN: usize = 32;
/// The `ice-char` set of RFC 8839.
const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The transport protocol of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Datagrams on the node's shared UDP port.
    Udp,
    /// An RFC 4571 framed TCP connection to the node's TCP port.
    Tcp,
}

/// A remote endpoint as the edge sees it: protocol and remote address (the local side is the
/// node's single UDP or TCP port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The peer's address (source of its packets).
    pub remote: SocketAddr,
}

/// ICE state, with mediasoup's names and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceState {
    /// No valid check received yet.
    New,
    /// A tuple is valid and selected, not nominated yet.
    Connected,
    /// The peer nominated a tuple.
    Completed,
    /// Consent expired or the last tuple went away.
    Disconnected,
}

impl IceState {
    /// The lowercase name mediasoup uses in `iceState` notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            IceState::New => "new",
            IceState::Connected => "connected",
            IceState::Completed => "completed",
            IceState::Disconnected => "disconnected",
        }
    }
}

/// Something the glue must react to; drained with [`IceServer::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// A new tuple proved it knows our credentials.
    TupleAdded(Tuple),
    /// A tuple is no longer valid (consent expired, evicted for a fresher one, or removed):
    /// the glue forgets its route and closes it if it is a TCP connection.
    TupleRemoved(Tuple),
    /// Media and DTLS must now be sent to this tuple.
    SelectedTupleChanged(Tuple),
    /// The ICE state changed.
    StateChanged(IceState),
    /// The selected tuple sent no valid check for the consent timeout; all tuples were dropped
    /// and the state is now Disconnected. The glue should stop sending.
    ConsentExpired,
}

/// What [`IceServer::handle_stun`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceOutcome {
    /// A valid Binding request: `out` holds the success response.
    Success,
    /// A rejected request: `out` holds an error response with this code (400, 401, 420, 487).
    /// No state changed.
    ErrorResponse(u16),
    /// Not a request (a response or an indication): nothing to send, no state changed.
    Ignored,
}

/// Why a STUN message was dropped without an answer. No state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceError {
    /// The bytes are not a well-formed STUN message.
    #[error("malformed STUN: {0}")]
    Parse(#[from] stun::StunError),
    /// A request without FINGERPRINT (RFC 8445 §7.2.2 makes it mandatory for checks).
    #[error("STUN request without FINGERPRINT")]
    MissingFingerprint,
    /// FINGERPRINT does not match: RFC 8489 says this is not STUN at all.
    #[error("STUN FINGERPRINT mismatch")]
    BadFingerprint,
}

/// Fresh local ICE credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The username fragment ([`UFRAG_LEN`] ice-chars).
    pub username_fragment: String,
    /// The password ([`PASSWORD_LEN`] ice-chars).
    pub password: String,
}

fn random_ice_string<R: rand::Rng + ?Sized>(rng: &mut R, len: usize) -> String {
    (0..len)
        .map(|_| {
            let i = rng.random_range(0..ICE_CHARS.len());
            char::from(ICE_CHARS[i]) // i < ICE_CHARS.len() by the range
        })
        .collect()
}

/// Random credentials from the ice-char set; the rng is a parameter so tests and simulations
/// stay deterministic (use a CSPRNG in production: the password guards the transport).
pub fn generate_credentials<R: rand::Rng + ?Sized>(rng: &mut R) -> IceCredentials {
    IceCredentials {
        username_fragment: random_ice_string(rng, UFRAG_LEN),
        password: random_ice_string(rng, PASSWORD_LEN),
    }
}

#[derive(Debug, Clone, Copy)]
struct TupleEntry {
    tuple: Tuple,
    /// Time of the last valid check from this tuple (consent).
    last_check: Instant,
}

/// The ICE-lite server state of one transport. See the module docs.
#[derive(Debug)]
pub struct IceServer {
    ufrag: String,
    password: String,
    key: IntegrityKey,
    consent_timeout: Duration,
    state: IceState,
    tuples: Vec<TupleEntry>,
    selected: Option<Tuple>,
    /// Highest NOMINATION value seen (renomination).
    remote_nomination: u32,
    events: VecDeque<IceEvent>,
}

impl IceServer {
    /// A server in state New with the given local credentials. `consent_timeout` is how long the
    /// selected tuple may go without a valid check (RFC 7675 uses 30 s).
    pub fn new(
        local_ufrag: impl Into<String>,
        local_password: impl Into<String>,
        consent_timeout: Duration,
    ) -> Self {
        let password = local_password.into();
        IceServer {
            ufrag: local_ufrag.into(),
            key: IntegrityKey::new(password.as_bytes()),
            password,
            consent_timeout,
            state: IceState::New,
            tuples: Vec::with_capacity(MAX_TUPLES),
            selected: None,
            remote_nomination: 0,
            events: VecDeque::with_capacity(8),
        }
    }

    /// Our username fragment.
    pub fn local_ufrag(&self) -> &str {
        &self.ufrag
    }

    /// Our password.
    pub fn local_password(&self) -> &str {
        &self.password
    }

    /// The current state.
    pub fn state(&self) -> IceState {
        self.state
    }

    /// The tuple media and DTLS are sent to, if any.
    pub fn selected_tuple(&self) -> Option<Tuple> {
        self.selected
    }

    /// True when `tuple` passed a valid check and still has consent: packets (DTLS, RTP, RTCP)
    /// from it may be accepted, as mediasoup does. The selected tuple is always valid.
    pub fn is_valid_tuple(&self, tuple: &Tuple) -> bool {
        self.tuples.iter().any(|e| e.tuple == *tuple)
    }

    /// True when `tuple` is the selected one.
    pub fn is_selected_tuple(&self, tuple: &Tuple) -> bool {
        self.selected.as_ref() == Some(tuple)
    }

    /// The valid tuples, in the order they were added.
    pub fn tuples(&self) -> impl Iterator<Item = Tuple> + '_ {
        self.tuples.iter().map(|e| e.tuple)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// Parses `bytes` and handles them like [`Self::handle_stun`].
    pub fn handle_stun_bytes(
        &mut self,
        now: Instant,
        tuple: Tuple,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<IceOutcome, IceError> {
        out.clear();
        let msg = StunMessage::parse(bytes)?;
        self.handle_stun(now, tuple, &msg, out)
    }

    /// Handles a STUN message received from `tuple`.
    ///
    /// `out` is cleared, then holds the response to send back to `tuple` when the outcome is
    /// [`IceOutcome::Success`] or [`IceOutcome::ErrorResponse`]. All checks (FINGERPRINT,
    /// USERNAME, MESSAGE-INTEGRITY, role) happen before any state change. Rejections:
    /// - missing or wrong FINGERPRINT: dropped (`Err`), since such bytes are not trusted STUN;
    /// - non-Binding request, or missing USERNAME / MESSAGE-INTEGRITY: 400;
    /// - unknown comprehension-required attribute: 420;
    /// - wrong ufrag or failed integrity: 401 without MESSAGE-INTEGRITY. We answer rather than
    ///   drop as RFC 8489 §9.1.3 and mediasoup do: libwebrtc treats 401 as recoverable and keeps
    ///   checking, it is no larger than the request (no amplification), and it makes stale
    ///   credentials (e.g. right after an ICE restart) visible in the peer's logs;
    /// - ICE-CONTROLLED: 487 (RFC 8445 §7.3.1.1: we are lite, hence controlled, and keep our
    ///   role; the peer must switch to controlling).
    pub fn handle_stun(
        &mut self,
        now: Instant,
        tuple: Tuple,
        msg: &StunMessage<'_>,
        out: &mut Vec<u8>,
    ) -> Result<IceOutcome, IceError> {
        out.clear();
        if msg.class() != stun::Class::Request {
            return Ok(IceOutcome::Ignored);
        }
        if !msg.has_fingerprint() {
            return Err(IceError::MissingFingerprint);
        }
        if !msg.verify_fingerprint() {
            return Err(IceError::BadFingerprint);
        }
        let txid = *msg.transaction_id();
        let reject = |out: &mut Vec<u8>, code: StunErrorCode, key: Option<&IntegrityKey>| {
            stun::write_binding_error(out, &txid, code, key);
            Ok(IceOutcome::ErrorResponse(code.code()))
        };
        if msg.method() != stun::METHOD_BINDING {
            return reject(out, StunErrorCode::BadRequest, None);
        }
        if let Some(t) = msg.unknown_comprehension_required() {
            return reject(out, StunErrorCode::UnknownAttribute(t), None);
        }
        let Some(username) = msg.username() else {
            return reject(out, StunErrorCode::BadRequest, None);
        };
        if !msg.has_integrity() {
            return reject(out, StunErrorCode::BadRequest, None);
        }
        let local_part = username.split_once(':').map(|(l, _)| l);
        if local_part != Some(self.ufrag.as_str()) || !msg.verify_integrity_with(&self.key) {
            return reject(out, StunErrorCode::Unauthorized, None);
        }
        if msg.ice_controlled().is_some() {
            return reject(out, StunErrorCode::RoleConflict, Some(&self.key));
        }

        stun::write_binding_success(out, &txid, tuple.remote, &self.key);
        let mut nominated = msg.use_candidate();
        if let Some(n) = msg.nomination() {
            if n > self.remote_nomination {
                self.remote_nomination = n;
                nominated = true;
            }
        }
        self.on_valid_check(now, tuple, nominated);
        Ok(IceOutcome::Success)
    }

    fn on_valid_check(&mut self, now: Instant, tuple: Tuple, nominated: bool) {
        match self.tuples.iter_mut().find(|e| e.tuple == tuple) {
            Some(entry) => entry.last_check = now,
            None => {
                if self.tuples.len() >= MAX_TUPLES {
                    self.evict_stalest_unselected();
                }
                self.tuples.push(TupleEntry {
                    tuple,
                    last_check: now,
                });
                self.emit(IceEvent::TupleAdded(tuple));
            }
        }
        match self.state {
            IceState::New | IceState::Disconnected => {
                self.select(tuple);
                self.set_state(if nominated {
                    IceState::Completed
                } else {
                    IceState::Connected
                });
            }
            IceState::Connected | IceState::Completed => {
                if nominated || self.selected.is_none() {
                    self.select(tuple);
                }
                if nominated {
                    self.set_state(IceState::Completed);
                }
            }
        }
    }

    fn evict_stalest_unselected(&mut self) {
        let selected = self.selected;
        let stalest = self
            .tuples
            .iter()
            .enumerate()
            .filter(|(_, e)| Some(e.tuple) != selected)
            .min_by_key(|(_, e)| e.last_check)
            .map(|(i, _)| i);
        if let Some(i) = stalest {
            let gone = self.tuples.remove(i).tuple;
            self.emit(IceEvent::TupleRemoved(gone));
        }
    }

    fn select(&mut self, tuple: Tuple) {
        if self.selected != Some(tuple) {
            self.selected = Some(tuple);
            self.emit(IceEvent::SelectedTupleChanged(tuple));
        }
    }

    fn set_state(&mut self, state: IceState) {
        if self.state != state {
            self.state = state;
            self.emit(IceEvent::StateChanged(state));
        }
    }

    fn emit(&mut self, event: IceEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// When [`Self::handle_timeout`] must next be called: the earliest consent deadline of a
    /// valid tuple. `None` when there is nothing to expire.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tuples
            .iter()
            .map(|e| e.last_check + self.consent_timeout)
            .min()
    }

    /// Expires consent. Tuples past their deadline are forgotten (each reported with
    /// [`IceEvent::TupleRemoved`]); if the selected tuple is past it, every tuple is forgotten,
    /// [`IceEvent::ConsentExpired`] is emitted and the state goes Disconnected. A later valid
    /// check reconnects.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.consent_timeout;
        let expired = |e: &TupleEntry| now.saturating_duration_since(e.last_check) >= timeout;
        let selected_expired = self
            .tuples
            .iter()
            .any(|e| Some(e.tuple) == self.selected && expired(e));
        let mut i = 0;
        while i < self.tuples.len() {
            if selected_expired || expired(&self.tuples[i]) {
                let gone = self.tuples.remove(i).tuple;
                self.emit(IceEvent::TupleRemoved(gone));
            } else {
                i += 1;
            }
        }
        if selected_expired {
            self.selected = None;
            self.emit(IceEvent::ConsentExpired);
            self.set_state(IceState::Disconnected);
        }
    }

    /// Forgets a tuple (e.g. its TCP connection closed). If it was selected, the valid tuple with
    /// the most recent check is selected instead; without one the state goes Disconnected.
    /// Returns whether the tuple was known.
    pub fn remove_tuple(&mut self, tuple: &Tuple) -> bool {
        let Some(i) = self.tuples.iter().position(|e| e.tuple == *tuple) else {
            return false;
        };
        self.tuples.remove(i);
        self.emit(IceEvent::TupleRemoved(*tuple));
        if self.selected.as_ref() == Some(tuple) {
            self.selected = None;
            let freshest = self
                .tuples
                .iter()
                .max_by_key(|e| e.last_check)
                .map(|e| e.tuple);
            match freshest {
                Some(t) => self.select(t),
                None => self.set_state(IceState::Disconnected),
            }
        }
        true
    }

    /// ICE restart: from now on only the new credentials are accepted. Tuples, selection and state
    /// are kept, so media keeps flowing on the selected tuple until the peer checks with the new
    /// credentials (or consent expires because it never does).
    pub fn restart(&mut self, new_ufrag: impl Into<String>, new_password: impl Into<String>) {
        self.ufrag = new_ufrag.into();
        self.password = new_password.into();
        self.key = IntegrityKey::new(self.password.as_bytes());
        self.remote_nomination = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::stun::{attr, BindingRequest, Class};
    use rand::SeedableRng;

    const UFRAG: &str = "srvUfrag";
    const PWD: &str = "srvPassword0123456789";
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn udp(port: u16) -> Tuple {
        Tuple {
            protocol: Protocol::Udp,
            remote: SocketAddr::from(([192, 0, 2, 1], port)),
        }
    }

    fn tcp(port: u16) -> Tuple {
        Tuple {
            protocol: Protocol::Tcp,
            remote: SocketAddr::from(([198, 51, 100, 7], port)),
        }
    }

    fn server() -> IceServer {
        IceServer::new(UFRAG, PWD, TIMEOUT)
    }

    /// A check as Chrome sends it, made with our own writer.
    fn check(ufrag: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
        let username = format!("{ufrag}:client");
        let req = BindingRequest {
            transaction_id: [0x42; 12],
            username: &username,
            priority: 0x6e00_1eff,
            tie_breaker: 77,
            use_candidate,
        };
        let mut out = Vec::new();
        stun::write_binding_request(&mut out, &req, &IntegrityKey::new(pwd.as_bytes())).unwrap();
        out
    }

    /// A request with arbitrary attributes, then MESSAGE-INTEGRITY (when `pwd` is given) and
    /// FINGERPRINT, built by hand so tests can send what our writers never would.
    fn raw_request(msg_type: u16, attrs: &[(u16, &[u8])], pwd: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&msg_type.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
        b.extend_from_slice(&[0x11; 12]);
        let put = |b: &mut Vec<u8>, t: u16, v: &[u8]| {
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&(v.len() as u16).to_be_bytes());
            b.extend_from_slice(v);
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
        };
        let set_len = |b: &mut Vec<u8>, n: usize| {
            b[2..4].copy_from_slice(&((n - 20) as u16).to_be_bytes());
        };
        for (t, v) in attrs {
            put(&mut b, *t, v);
        }
        if let Some(pwd) = pwd {
            let n = b.len() + 24;
            set_len(&mut b, n);
            let key =
                ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
            let tag = ring::hmac::sign(&key, &b);
            put(&mut b, attr::MESSAGE_INTEGRITY, tag.as_ref());
        }
        let n = b.len() + 8;
        set_len(&mut b, n);
        let crc = crc32fast::hash(&b) ^ 0x5354_554E;
        put(&mut b, attr::FINGERPRINT, &crc.to_be_bytes());
        b
    }

    fn events(ice: &mut IceServer) -> Vec<IceEvent> {
        std::iter::from_fn(|| ice.poll_event()).collect()
    }

    fn send(
        ice: &mut IceServer,
        now: Instant,
        t: Tuple,
        bytes: &[u8],
    ) -> Result<IceOutcome, IceError> {
        let mut out = Vec::new();
        let r = ice.handle_stun_bytes(now, t, bytes, &mut out);
        if let Ok(IceOutcome::Success | IceOutcome::ErrorResponse(_)) = r {
            assert!(!out.is_empty());
        } else {
            assert!(out.is_empty());
        }
        r
    }

    #[test]
    fn first_check_connects_and_answers() {
        let mut ice = server();
        let t0 = Instant::now();
        assert_eq!(ice.state(), IceState::New);
        assert_eq!(ice.poll_timeout(), None);
        let mut out = vec![1, 2, 3];
        let r = ice.handle_stun_bytes(t0, udp(5000), &check(UFRAG, PWD, false), &mut out);
        assert_eq!(r, Ok(IceOutcome::Success));
        let resp = StunMessage::parse(&out).unwrap();
        assert_eq!(resp.class(), Class::SuccessResponse);
        assert_eq!(resp.transaction_id(), &[0x42; 12]);
        assert_eq!(resp.xor_mapped_address(), Some(udp(5000).remote));
        assert!(resp.verify_integrity(PWD.as_bytes()));
        assert!(resp.verify_fingerprint());
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleAdded(udp(5000)),
                IceEvent::SelectedTupleChanged(udp(5000)),
                IceEvent::StateChanged(IceState::Connected),
            ]
        );
        assert_eq!(ice.selected_tuple(), Some(udp(5000)));
        assert!(ice.is_valid_tuple(&udp(5000)));
        assert!(ice.is_selected_tuple(&udp(5000)));
        assert!(!ice.is_valid_tuple(&udp(5001)));
        assert!(!ice.is_valid_tuple(&tcp(5000)));
        assert_eq!(ice.poll_timeout(), Some(t0 + TIMEOUT));

        // Nomination on the same tuple only completes.
        assert_eq!(
            send(&mut ice, t0, udp(5000), &check(UFRAG, PWD, true)),
            Ok(IceOutcome::Success)
        );
        assert_eq!(
            events(&mut ice),
            vec![IceEvent::StateChanged(IceState::Completed)]
        );
        // Repeated checks change nothing.
        send(&mut ice, t0, udp(5000), &check(UFRAG, PWD, true)).unwrap();
        assert!(events(&mut ice).is_empty());
    }

    #[test]
    fn first_check_with_use_candidate_completes_directly() {
        let mut ice = server();
        send(&mut ice, Instant::now(), udp(1), &check(UFRAG, PWD, true)).unwrap();
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleAdded(udp(1)),
                IceEvent::SelectedTupleChanged(udp(1)),
                IceEvent::StateChanged(IceState::Completed),
            ]
        );
    }

    #[test]
    fn nomination_switches_selected_tuple() {
        let mut ice = server();
        let t0 = Instant::now();
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, false)).unwrap();
        events(&mut ice);
        // Connected: an unnominated second tuple is valid but not selected.
        send(&mut ice, t0, tcp(2), &check(UFRAG, PWD, false)).unwrap();
        assert_eq!(events(&mut ice), vec![IceEvent::TupleAdded(tcp(2))]);
        assert_eq!(ice.selected_tuple(), Some(udp(1)));
        assert!(ice.is_valid_tuple(&tcp(2)));
        // Nominating it selects it.
        send(&mut ice, t0, tcp(2), &check(UFRAG, PWD, true)).unwrap();
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::SelectedTupleChanged(tcp(2)),
                IceEvent::StateChanged(IceState::Completed)
            ]
        );
        // Completed: renominating the first switches back, state stays.
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, true)).unwrap();
        assert_eq!(
            events(&mut ice),
            vec![IceEvent::SelectedTupleChanged(udp(1))]
        );
        assert_eq!(ice.state(), IceState::Completed);
    }

    #[test]
    fn nomination_attribute_renominates_only_upwards() {
        let mut ice = server();
        let t0 = Instant::now();
        let user = format!("{UFRAG}:c");
        let req = |n: u32| {
            raw_request(
                0x0001,
                &[
                    (attr::USERNAME, user.as_bytes()),
                    (attr::NOMINATION, &n.to_be_bytes()),
                ],
                Some(PWD),
            )
        };
        send(&mut ice, t0, udp(1), &req(5)).unwrap();
        assert_eq!(ice.state(), IceState::Completed);
        send(&mut ice, t0, udp(2), &req(5)).unwrap();
        assert_eq!(
            ice.selected_tuple(),
            Some(udp(1)),
            "same value is not a renomination"
        );
        send(&mut ice, t0, udp(2), &req(6)).unwrap();
        assert_eq!(ice.selected_tuple(), Some(udp(2)));
    }

    #[test]
    fn bad_credentials_change_nothing() {
        let mut ice = server();
        let t0 = Instant::now();
        for bytes in [
            check(UFRAG, "wrongpassword", true),
            check("otherUfrag", PWD, true),
            raw_request(0x0001, &[(attr::USERNAME, UFRAG.as_bytes())], Some(PWD)), // no ':'
        ] {
            let mut out = Vec::new();
            let r = ice.handle_stun_bytes(t0, udp(1), &bytes, &mut out);
            assert_eq!(r, Ok(IceOutcome::ErrorResponse(401)));
            let resp = StunMessage::parse(&out).unwrap();
            assert_eq!(resp.error_code().unwrap().code, 401);
            assert!(!resp.has_integrity());
            assert!(resp.verify_fingerprint());
        }
        // Missing USERNAME or MESSAGE-INTEGRITY: 400.
        let user = format!("{UFRAG}:c");
        for bytes in [
            raw_request(0x0001, &[(attr::USERNAME, user.as_bytes())], None),
            raw_request(0x0001, &[], Some(PWD)),
        ] {
            assert_eq!(
                send(&mut ice, t0, udp(1), &bytes),
                Ok(IceOutcome::ErrorResponse(400))
            );
        }
        assert_eq!(ice.state(), IceState::New);
        assert_eq!(ice.selected_tuple(), None);
        assert!(!ice.is_valid_tuple(&udp(1)));
        assert!(events(&mut ice).is_empty());
        assert_eq!(ice.poll_timeout(), None);
    }

    #[test]
    fn fingerprint_problems_are_dropped() {
        let mut ice = server();
        let t0 = Instant::now();
        let mut bytes = check(UFRAG, PWD, true);
        let n = bytes.len();
        bytes[n - 1] ^= 0xFF;
        assert_eq!(
            send(&mut ice, t0, udp(1), &bytes),
            Err(IceError::BadFingerprint)
        );
        // Strip FINGERPRINT and fix the length: still well-formed, but not acceptable.
        let mut bytes = check(UFRAG, PWD, true);
        bytes.truncate(n - 8);
        let len = (bytes.len() - 20) as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            send(&mut ice, t0, udp(1), &bytes),
            Err(IceError::MissingFingerprint)
        );
        assert!(matches!(
            send(&mut ice, t0, udp(1), b"\x00\x01garbage"),
            Err(IceError::Parse(_))
        ));
        assert_eq!(ice.state(), IceState::New);
        assert!(events(&mut ice).is_empty());
    }

    #[test]
    fn role_conflict_gets_487_and_no_state_change() {
        let mut ice = server();
        let user = format!("{UFRAG}:c");
        let bytes = raw_request(
            0x0001,
            &[
                (attr::USERNAME, user.as_bytes()),
                (attr::ICE_CONTROLLED, &7u64.to_be_bytes()),
                (attr::USE_CANDIDATE, &[]),
            ],
            Some(PWD),
        );
        let mut out = Vec::new();
        let r = ice.handle_stun_bytes(Instant::now(), udp(1), &bytes, &mut out);
        assert_eq!(r, Ok(IceOutcome::ErrorResponse(487)));
        let resp = StunMessage::parse(&out).unwrap();
        assert_eq!(resp.error_code().unwrap().code, 487);
        assert!(resp.verify_integrity(PWD.as_bytes()));
        assert!(resp.verify_fingerprint());
        assert_eq!(ice.state(), IceState::New);
        assert!(events(&mut ice).is_empty());
    }

    #[test]
    fn other_requests_are_rejected_responses_ignored() {
        let mut ice = server();
        let t0 = Instant::now();
        let user = format!("{UFRAG}:c");
        // Allocate (TURN method 0x003) request: 400.
        let alloc = raw_request(0x0003, &[(attr::USERNAME, user.as_bytes())], Some(PWD));
        assert_eq!(
            send(&mut ice, t0, udp(1), &alloc),
            Ok(IceOutcome::ErrorResponse(400))
        );
        // Unknown comprehension-required attribute: 420 naming it.
        let unknown = raw_request(
            0x0001,
            &[(attr::USERNAME, user.as_bytes()), (0x0077, &[1, 2, 3, 4])],
            Some(PWD),
        );
        let mut out = Vec::new();
        let r = ice.handle_stun_bytes(t0, udp(1), &unknown, &mut out);
        assert_eq!(r, Ok(IceOutcome::ErrorResponse(420)));
        assert_eq!(
            StunMessage::parse(&out).unwrap().error_code().unwrap().code,
            420
        );
        // A Binding success response or indication: ignored.
        let mut resp = Vec::new();
        stun::write_binding_success(&mut resp, &[0; 12], udp(1).remote, &IntegrityKey::new(b"x"));
        assert_eq!(send(&mut ice, t0, udp(1), &resp), Ok(IceOutcome::Ignored));
        let ind = raw_request(0x0011, &[], None);
        assert_eq!(send(&mut ice, t0, udp(1), &ind), Ok(IceOutcome::Ignored));
        assert_eq!(ice.state(), IceState::New);
        assert!(events(&mut ice).is_empty());
    }

    #[test]
    fn consent_expires_and_reconnects() {
        let mut ice = server();
        let t0 = Instant::now();
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, true)).unwrap();
        events(&mut ice);
        // A refresh at +20 s moves the deadline.
        send(
            &mut ice,
            t0 + Duration::from_secs(20),
            udp(1),
            &check(UFRAG, PWD, false),
        )
        .unwrap();
        let deadline = t0 + Duration::from_secs(50);
        assert_eq!(ice.poll_timeout(), Some(deadline));
        // A failed check does not refresh consent.
        send(
            &mut ice,
            t0 + Duration::from_secs(45),
            udp(1),
            &check(UFRAG, "bad", false),
        )
        .unwrap();
        assert_eq!(ice.poll_timeout(), Some(deadline));
        ice.handle_timeout(deadline - Duration::from_millis(1));
        assert!(events(&mut ice).is_empty());
        assert_eq!(ice.state(), IceState::Completed);
        ice.handle_timeout(deadline);
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleRemoved(udp(1)),
                IceEvent::ConsentExpired,
                IceEvent::StateChanged(IceState::Disconnected)
            ]
        );
        assert_eq!(ice.selected_tuple(), None);
        assert!(!ice.is_valid_tuple(&udp(1)));
        assert_eq!(ice.poll_timeout(), None);
        // A valid check brings it back.
        send(
            &mut ice,
            deadline + Duration::from_secs(1),
            udp(1),
            &check(UFRAG, PWD, false),
        )
        .unwrap();
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleAdded(udp(1)),
                IceEvent::SelectedTupleChanged(udp(1)),
                IceEvent::StateChanged(IceState::Connected),
            ]
        );
    }

    #[test]
    fn stale_unselected_tuples_are_pruned_silently() {
        let mut ice = server();
        let t0 = Instant::now();
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, true)).unwrap();
        send(&mut ice, t0, udp(2), &check(UFRAG, PWD, false)).unwrap();
        events(&mut ice);
        send(
            &mut ice,
            t0 + Duration::from_secs(25),
            udp(1),
            &check(UFRAG, PWD, false),
        )
        .unwrap();
        assert_eq!(
            ice.poll_timeout(),
            Some(t0 + TIMEOUT),
            "earliest deadline is udp(2)'s"
        );
        ice.handle_timeout(t0 + TIMEOUT);
        assert_eq!(events(&mut ice), vec![IceEvent::TupleRemoved(udp(2))]);
        assert!(!ice.is_valid_tuple(&udp(2)));
        assert!(ice.is_valid_tuple(&udp(1)));
        assert_eq!(ice.poll_timeout(), Some(t0 + Duration::from_secs(55)));
    }

    #[test]
    fn restart_rejects_old_credentials_and_keeps_media_flowing() {
        let mut ice = server();
        let t0 = Instant::now();
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, true)).unwrap();
        events(&mut ice);
        ice.restart("newUfrag", "newPassword");
        assert_eq!(ice.local_ufrag(), "newUfrag");
        assert_eq!(ice.local_password(), "newPassword");
        assert_eq!(ice.selected_tuple(), Some(udp(1)));
        assert_eq!(ice.state(), IceState::Completed);
        assert_eq!(
            send(&mut ice, t0, udp(1), &check(UFRAG, PWD, true)),
            Ok(IceOutcome::ErrorResponse(401))
        );
        // Old ufrag with the new password and vice versa are rejected too.
        assert_eq!(
            send(&mut ice, t0, udp(1), &check(UFRAG, "newPassword", true)),
            Ok(IceOutcome::ErrorResponse(401))
        );
        assert_eq!(
            send(&mut ice, t0, udp(1), &check("newUfrag", PWD, true)),
            Ok(IceOutcome::ErrorResponse(401))
        );
        assert!(ice.is_selected_tuple(&udp(1)));
        assert!(events(&mut ice).is_empty());
        // The peer comes back with the new credentials on a new tuple and nominates it.
        let mut out = Vec::new();
        let r = ice.handle_stun_bytes(
            t0,
            udp(9),
            &check("newUfrag", "newPassword", true),
            &mut out,
        );
        assert_eq!(r, Ok(IceOutcome::Success));
        assert!(StunMessage::parse(&out)
            .unwrap()
            .verify_integrity(b"newPassword"));
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleAdded(udp(9)),
                IceEvent::SelectedTupleChanged(udp(9))
            ]
        );
    }

    #[test]
    fn removing_tcp_tuples() {
        let mut ice = server();
        let t0 = Instant::now();
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, false)).unwrap();
        send(
            &mut ice,
            t0 + Duration::from_secs(1),
            tcp(2),
            &check(UFRAG, PWD, true),
        )
        .unwrap();
        events(&mut ice);
        assert!(!ice.remove_tuple(&tcp(3)));
        assert!(ice.remove_tuple(&tcp(2)));
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleRemoved(tcp(2)),
                IceEvent::SelectedTupleChanged(udp(1))
            ]
        );
        assert!(!ice.is_valid_tuple(&tcp(2)));
        assert!(!ice.remove_tuple(&tcp(2)));
        // Removing an unselected tuple only reports its removal.
        send(&mut ice, t0, tcp(4), &check(UFRAG, PWD, false)).unwrap();
        events(&mut ice);
        assert!(ice.remove_tuple(&tcp(4)));
        assert_eq!(events(&mut ice), vec![IceEvent::TupleRemoved(tcp(4))]);
        assert!(ice.remove_tuple(&udp(1)));
        assert_eq!(
            events(&mut ice),
            vec![
                IceEvent::TupleRemoved(udp(1)),
                IceEvent::StateChanged(IceState::Disconnected)
            ]
        );
        assert_eq!(ice.selected_tuple(), None);
        assert_eq!(ice.poll_timeout(), None);
    }

    #[test]
    fn tuple_count_is_bounded_and_keeps_selected() {
        let mut ice = server();
        let t0 = Instant::now();
        send(&mut ice, t0, udp(1), &check(UFRAG, PWD, true)).unwrap();
        for p in 2..=20u16 {
            let now = t0 + Duration::from_millis(u64::from(p));
            send(&mut ice, now, udp(p), &check(UFRAG, PWD, false)).unwrap();
        }
        assert_eq!(ice.tuples().count(), MAX_TUPLES);
        assert!(ice.is_selected_tuple(&udp(1)));
        assert!(ice.is_valid_tuple(&udp(20)));
        assert!(!ice.is_valid_tuple(&udp(2)), "stalest unselected evicted");
    }

    #[test]
    fn event_queue_is_bounded() {
        let mut ice = server();
        let t0 = Instant::now();
        for p in 0..200u16 {
            send(&mut ice, t0, udp(p), &check(UFRAG, PWD, true)).unwrap();
        }
        assert_eq!(events(&mut ice).len(), MAX_EVENTS);
    }

    #[test]
    fn credentials_are_random_ice_chars() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = generate_credentials(&mut rng);
        let b = generate_credentials(&mut rng);
        assert_ne!(a, b);
        assert_eq!(a.username_fragment.len(), UFRAG_LEN);
        assert_eq!(a.password.len(), PASSWORD_LEN);
        for c in a.username_fragment.bytes().chain(a.password.bytes()) {
            assert!(ICE_CHARS.contains(&c));
        }
        let again = generate_credentials(&mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(a, again, "deterministic for a given seed");
    }
}
