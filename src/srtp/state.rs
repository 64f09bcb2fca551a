//! Per-SSRC counters: the outbound rollover counter, RFC 3711 Appendix A index estimation
//! and the 128-packet replay windows. Pure integer logic: every check is separate from its
//! commit so that a packet only changes state once it has authenticated.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::SrtpError;

/// Replay window width (packets).
pub const REPLAY_WINDOW: u64 = 128;

/// SSRCs are authenticated before they are inserted, and the maps are bounded, so a cheap
/// multiplicative hash is enough (no HashDoS exposure).
#[derive(Default)]
pub(crate) struct SsrcHasher(u64);

impl Hasher for SsrcHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by SSRC.
pub(crate) type SsrcMap<V> = HashMap<u32, V, BuildHasherDefault<SsrcHasher>>;

/// RFC 3711 Appendix A: the ROC guess `v` for `seq` given the highest seen `(roc, s_l)`.
/// May be `roc - 1` (negative when `roc` is 0) or `roc + 1`.
pub(crate) fn estimate_roc(roc: u32, s_l: u16, seq: u16) -> i64 {
    let roc = i64::from(roc);
    let (s_l, seq) = (i32::from(s_l), i32::from(seq));
    if s_l < 32768 {
        if seq - s_l > 32768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32768 > seq {
        roc + 1
    } else {
        roc
    }
}

/// Outbound SRTP: the highest index sent on one SSRC.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxRtp {
    pub roc: u32,
    pub s_l: u16,
}

impl TxRtp {
    /// The 48-bit index for `seq` and the state to commit once the packet is protected.
    pub(crate) fn next(state: Option<TxRtp>, seq: u16) -> Result<(u64, TxRtp), SrtpError> {
        let Some(st) = state else {
            return Ok((u64::from(seq), TxRtp { roc: 0, s_l: seq }));
        };
        let v = estimate_roc(st.roc, st.s_l, seq).max(0);
        let roc = u32::try_from(v).map_err(|_| SrtpError::IndexExhausted)?;
        let next = if roc > st.roc || (roc == st.roc && seq > st.s_l) {
            TxRtp { roc, s_l: seq }
        } else {
            st
        };
        Ok(((u64::from(roc) << 16) | u64::from(seq), next))
    }
}

/// A 128-wide sliding replay window over a monotonically growing index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Highest index accepted.
    pub highest: u64,
    /// Bit `i` set: `highest - i` was accepted.
    pub bits: u128,
}

impl Window {
    /// A window whose only accepted index is `index`.
    pub(crate) fn first(index: u64) -> Self {
        Window {
            highest: index,
            bits: 1,
        }
    }

    /// Whether `index` is new (not a replay and not older than the window).
    pub(crate) fn check(&self, index: u64) -> bool {
        if index > self.highest {
            return true;
        }
        let delta = self.highest - index;
        delta < REPLAY_WINDOW && self.bits & (1u128 << delta) == 0
    }

    /// Records `index` (which passed [`Window::check`]).
    pub(crate) fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.bits = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.highest = index;
        } else {
            self.bits |= 1u128 << (self.highest - index);
        }
    }
}

/// Inbound SRTP: RFC 3711 index estimation on top of the replay window (whose highest
/// index carries `ROC || s_l`).
pub(crate) fn rx_rtp_index(window: Option<&Window>, seq: u16) -> Result<u64, SrtpError> {
    let Some(w) = window else {
        // First packet of the SSRC: ROC 0 (RFC 3711 §3.3.1).
        return Ok(u64::from(seq));
    };
    let roc = (w.highest >> 16) as u32;
    let v = estimate_roc(roc, w.highest as u16, seq);
    if v < 0 {
        // Before the first rollover: older than anything we can accept.
        return Err(SrtpError::Replayed);
    }
    let v = u32::try_from(v).map_err(|_| SrtpError::IndexExhausted)?;
    Ok((u64::from(v) << 16) | u64::from(seq))
}
