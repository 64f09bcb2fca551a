//! The pipe's congestion controller: a fixed window.
//!
//! A pipe carries media whose rate the publishers' own congestion control already sets (the
//! browsers' bandwidth estimation against the edge node), like mediasoup's plain-RTP pipe
//! transports, which have no congestion control at all. QUIC's loss-based controllers are the
//! wrong tool for it: during an outage every datagram sent counts as in flight until a probe
//! timeout declares it lost, the window fills within a fraction of a second, and after the
//! network heals the sender stays silent until its (exponentially backed-off) probe timer fires,
//! which measured up to 2.5 s after a 3 s cut. Media should flow again the moment the path
//! does. So the window is a fixed bound on bytes in flight, large enough never to throttle what
//! a node forwards, small enough to bound memory; the datagram send buffer
//! ([`super::tls::TransportTuning::max_datagram_buffer`]) still drops the oldest media first
//! when a link truly cannot keep up.

use std::any::Any;
use std::sync::Arc;

use quinn::congestion::{Controller, ControllerFactory};
use quinn_proto::RttEstimator;

/// Default bytes in flight: about 1 s of 100 Mbit/s.
pub const DEFAULT_MEDIA_WINDOW: u64 = 12 << 20;

/// Builds [`FixedWindow`] controllers.
#[derive(Debug, Clone, Copy)]
pub struct FixedWindowConfig {
    /// Bytes that may be in flight.
    pub window: u64,
}

impl Default for FixedWindowConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_MEDIA_WINDOW,
        }
    }
}

impl ControllerFactory for FixedWindowConfig {
    fn build(self: Arc<Self>, _now: std::time::Instant, _mtu: u16) -> Box<dyn Controller> {
        Box::new(FixedWindow {
            window: self.window,
        })
    }
}

/// A congestion "controller" whose window never moves (see the module docs).
#[derive(Debug, Clone)]
pub struct FixedWindow {
    window: u64,
}

impl Controller for FixedWindow {
    fn on_ack(
        &mut self,
        _now: std::time::Instant,
        _sent: std::time::Instant,
        _bytes: u64,
        _app_limited: bool,
        _rtt: &RttEstimator,
    ) {
    }

    fn on_congestion_event(
        &mut self,
        _now: std::time::Instant,
        _sent: std::time::Instant,
        _is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
    }

    fn on_mtu_update(&mut self, _new_mtu: u16) {}

    fn window(&self) -> u64 {
        self.window
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_and_persistent_congestion_do_not_shrink_the_window() {
        let now = std::time::Instant::now();
        let mut c = Arc::new(FixedWindowConfig { window: 1 << 20 }).build(now, 1400);
        assert_eq!(c.window(), 1 << 20);
        assert_eq!(c.initial_window(), 1 << 20);
        c.on_congestion_event(now, now, true, 500_000);
        c.on_mtu_update(1200);
        assert_eq!(c.window(), 1 << 20);
        assert_eq!(c.clone_box().window(), 1 << 20);
    }
}
