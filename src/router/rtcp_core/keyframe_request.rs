//! Keyframe request coalescing for producer streams: many consumers may ask for a keyframe of
//! the same producer SSRC at once (joins, layer switches, their own PLIs); the publisher
//! should see one request, then at most one more per throttle window, and none once the
//! keyframe has arrived. Also owns the per-SSRC FIR command sequence numbers (RFC 5104).

use std::time::{Duration, Instant};

use crate::timing::KEYFRAME_REQUEST_THROTTLE;

/// Most producer SSRCs tracked by one manager; requests for further SSRCs are dropped.
pub const MAX_KEYFRAME_SSRCS: usize = 64;

/// Which message to send to the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFrameRequestKind {
    /// Picture Loss Indication (RFC 4585).
    Pli,
    /// Full Intra Request (RFC 5104).
    Fir,
}

/// A request to send to the publisher now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFrameRequest {
    /// Producer media SSRC to request a keyframe of.
    pub media_ssrc: u32,
    /// PLI or FIR.
    pub kind: KeyFrameRequestKind,
    /// FIR command sequence number to use (meaningful for FIR; increments per FIR sent).
    pub fir_seq: u8,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ssrc: u32,
    last_forwarded: Instant,
    pending: Option<KeyFrameRequestKind>,
    fir_seq: u8,
}

/// Throttles and coalesces keyframe requests per producer media SSRC.
#[derive(Debug, Clone)]
pub struct KeyFrameRequestManager {
    throttle: Duration,
    entries: Vec<Entry>,
}

impl Default for KeyFrameRequestManager {
    fn default() -> Self {
        Self::new(KEYFRAME_REQUEST_THROTTLE)
    }
}

impl KeyFrameRequestManager {
    /// A manager forwarding at most one request per `throttle` per SSRC.
    pub fn new(throttle: Duration) -> Self {
        Self {
            throttle,
            entries: Vec::with_capacity(4),
        }
    }

    fn forward(e: &mut Entry, now: Instant, kind: KeyFrameRequestKind) -> KeyFrameRequest {
        e.last_forwarded = now;
        e.pending = None;
        if kind == KeyFrameRequestKind::Fir {
            e.fir_seq = e.fir_seq.wrapping_add(1);
        }
        KeyFrameRequest {
            media_ssrc: e.ssrc,
            kind,
            fir_seq: e.fir_seq,
        }
    }

    /// A consumer (or the router) wants a keyframe of `media_ssrc`. Returns the request to
    /// send now if the SSRC is outside its throttle window; otherwise the request is held and
    /// comes out of [`Self::poll_request`] when the window ends (a FIR wins over a PLI).
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        media_ssrc: u32,
        kind: KeyFrameRequestKind,
    ) -> Option<KeyFrameRequest> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.ssrc == media_ssrc) {
            if now.saturating_duration_since(e.last_forwarded) >= self.throttle {
                return Some(Self::forward(e, now, kind));
            }
            e.pending = match (e.pending, kind) {
                (Some(KeyFrameRequestKind::Fir), _) | (_, KeyFrameRequestKind::Fir) => {
                    Some(KeyFrameRequestKind::Fir)
                }
                _ => Some(KeyFrameRequestKind::Pli),
            };
            return None;
        }
        if self.entries.len() >= MAX_KEYFRAME_SSRCS {
            return None;
        }
        self.entries.push(Entry {
            ssrc: media_ssrc,
            last_forwarded: now,
            pending: None,
            fir_seq: 0,
        });
        let e = self.entries.last_mut()?; // just pushed
        Some(Self::forward(e, now, kind))
    }

    /// A keyframe of `ssrc` arrived from the publisher: drop any held request.
    pub fn on_keyframe_received(&mut self, ssrc: u32) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.ssrc == ssrc) {
            e.pending = None;
        }
    }

    /// Returns one held request whose throttle window has ended; call until `None`.
    pub fn poll_request(&mut self, now: Instant) -> Option<KeyFrameRequest> {
        let throttle = self.throttle;
        let e = self.entries.iter_mut().find(|e| {
            e.pending.is_some() && now.saturating_duration_since(e.last_forwarded) >= throttle
        })?;
        let kind = e.pending?; // checked by `find`
        Some(Self::forward(e, now, kind))
    }

    /// When the next held request becomes due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.pending.is_some())
            .map(|e| e.last_forwarded + self.throttle)
            .min()
    }

    /// Forgets an SSRC (its producer closed).
    pub fn remove_ssrc(&mut self, ssrc: u32) {
        self.entries.retain(|e| e.ssrc != ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyFrameRequestKind::{Fir, Pli};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_forwards_then_coalesces_in_window() {
        let t0 = Instant::now();
        let mut m = KeyFrameRequestManager::default();
        let r = m.request_keyframe(t0, 5, Pli).unwrap();
        assert_eq!((r.media_ssrc, r.kind), (5, Pli));
        assert_eq!(m.poll_timeout(), None);
        for i in 1..10u32 {
            assert!(m.request_keyframe(t0 + MS * 10 * i, 5, Pli).is_none());
        }
        assert_eq!(m.poll_timeout(), Some(t0 + MS * 500));
        assert!(m.poll_request(t0 + MS * 499).is_none());
        let r = m.poll_request(t0 + MS * 500).unwrap();
        assert_eq!((r.media_ssrc, r.kind), (5, Pli));
        assert!(m.poll_request(t0 + MS * 500).is_none());
        assert_eq!(m.poll_timeout(), None);
        // The held request started a new window.
        assert!(m.request_keyframe(t0 + MS * 600, 5, Pli).is_none());
        assert!(m.request_keyframe(t0 + MS * 1000, 5, Pli).is_some());
    }

    #[test]
    fn keyframe_arrival_cancels_held_request() {
        let t0 = Instant::now();
        let mut m = KeyFrameRequestManager::default();
        m.request_keyframe(t0, 5, Pli);
        m.request_keyframe(t0 + MS, 5, Pli);
        m.on_keyframe_received(5);
        assert_eq!(m.poll_timeout(), None);
        assert!(m.poll_request(t0 + MS * 1000).is_none());
    }

    #[test]
    fn ssrcs_are_independent_and_fir_seq_increments() {
        let t0 = Instant::now();
        let mut m = KeyFrameRequestManager::default();
        assert_eq!(m.request_keyframe(t0, 1, Fir).unwrap().fir_seq, 1);
        assert!(m.request_keyframe(t0, 2, Pli).is_some());
        m.request_keyframe(t0 + MS, 1, Pli);
        m.request_keyframe(t0 + MS * 2, 1, Fir); // FIR wins over the held PLI
        let r = m.poll_request(t0 + MS * 500).unwrap();
        assert_eq!((r.media_ssrc, r.kind, r.fir_seq), (1, Fir, 2));
        // FIR sequence numbers wrap.
        let mut t = t0 + MS * 1000;
        let mut last = 0;
        for _ in 0..300 {
            last = m.request_keyframe(t, 3, Fir).unwrap().fir_seq;
            t += MS * 500;
        }
        assert_eq!(last, (300 % 256) as u8);
    }

    #[test]
    fn bounded_ssrc_count() {
        let t0 = Instant::now();
        let mut m = KeyFrameRequestManager::default();
        for s in 0..MAX_KEYFRAME_SSRCS as u32 {
            assert!(m.request_keyframe(t0, s, Pli).is_some());
        }
        assert!(m.request_keyframe(t0, 9999, Pli).is_none());
        m.remove_ssrc(0);
        assert!(m.request_keyframe(t0, 9999, Pli).is_some());
    }
}
