//! Layer selection for one simulcast consumer (mediasoup `SimulcastConsumer` semantics).
//!
//! [`SimulcastSelector`] owns the layer state of one consumer: which spatial layers
//! (simulcast encodings) of the producer are alive, the preferred layers set by the
//! subscriber, the optional bandwidth hint, the current layers being forwarded and the target
//! layers to move to. It decides per packet whether to forward ([`Forward`]), and reports
//! keyframe requests and layer changes through [`SimulcastSelector::poll_event`]. It does
//! not rewrite packets (see [`crate::router::seq::StreamRewriter`] and
//! [`crate::router::keyframe::Vp8Rewriter`]), send RTCP or read the clock.
//!
//! Rules:
//! * Spatial switches (up or down) happen only at a keyframe of the target layer; until then
//!   the current layer keeps flowing, and a keyframe request for the target is emitted
//!   (throttled per layer).
//! * Temporal up-switch happens at a packet whose temporal id is above the current one but
//!   not above the target *and* which is a layer sync point (VP8 Y bit, VP9 U bit) or a
//!   keyframe; without sync information the caller passes `layer_sync = false` and the
//!   up-switch waits for the next keyframe. Temporal down-switch happens at the first packet
//!   whose temporal id is at or below the target: frames are sent in order, so at that point
//!   the higher-layer frame in flight is complete.
//! * A spatial layer with no packet for `inactivity_timeout` is inactive. The target is the
//!   best active, affordable layer at or below the preferred one, else the lowest active one
//!   above it, else (nothing affordable) the lowest active layer.
//! * A spatial limit ([`SimulcastSelector::set_spatial_limit`]: the layers above it are
//!   withheld upstream, e.g. shed by a congested pipe link) keeps the target at or below it
//!   at once, without waiting for the inactivity timeout, and ignores stray packets of the
//!   withheld layers still in flight. Only when no layer within the limit is active does the
//!   target fall back to what is active above it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most spatial layers (simulcast encodings) a consumer handles.
pub const MAX_SPATIAL_LAYERS: usize = 4;

/// Settings of a [`SimulcastSelector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulcastConfig {
    /// A spatial layer without packets for this long is inactive.
    pub inactivity_timeout: Duration,
    /// Minimum interval between two keyframe requests for the same layer.
    pub keyframe_request_interval: Duration,
}

impl Default for SimulcastConfig {
    fn default() -> Self {
        Self {
            inactivity_timeout: Duration::from_secs(2),
            keyframe_request_interval: crate::timing::KEYFRAME_REQUEST_THROTTLE,
        }
    }
}

/// The layer facts of one incoming packet (see [`crate::router::keyframe::layer_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerPacket {
    /// Spatial layer = index of the simulcast encoding the packet belongs to.
    pub spatial: u8,
    /// Temporal layer id (0 if unknown).
    pub temporal: u8,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// Switching up to `temporal` at this packet is safe.
    pub layer_sync: bool,
}

/// The per-packet decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// A packet of a stream this consumer is not sending: ignore it entirely.
    Ignore,
    /// A packet of the current stream that is not sent (temporal filtering): tell the
    /// rewriters (`StreamRewriter::drop_input`, `Vp8Rewriter::drop_packet`) so the output
    /// numbering leaves no gap.
    Drop,
    /// Send it.
    Forward,
    /// This keyframe starts the new current stream: call `request_sync` / `sync` on the
    /// rewriters, then send it.
    Switch,
}

/// Something the consumer must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulcastEvent {
    /// Ask the producer for a keyframe on this spatial layer.
    RequestKeyFrame {
        /// Spatial layer (encoding index).
        spatial: u8,
    },
    /// The layers being forwarded changed (signal `consumerLayersChanged`); `None` when
    /// nothing is forwarded any more.
    LayersChanged {
        /// Current spatial layer.
        spatial: Option<u8>,
        /// Current temporal layer.
        temporal: Option<u8>,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Layer {
    last_packet: Option<Instant>,
    active: bool,
    bitrate: Option<u64>,
    last_keyframe_request: Option<Instant>,
}

/// The sans-IO layer selector of one simulcast consumer.
#[derive(Debug)]
pub struct SimulcastSelector {
    cfg: SimulcastConfig,
    num_spatial: u8,
    num_temporal: u8,
    preferred_spatial: u8,
    preferred_temporal: u8,
    available_bitrate: Option<u64>,
    layers: [Layer; MAX_SPATIAL_LAYERS],
    current_spatial: Option<u8>,
    current_temporal: Option<u8>,
    target_spatial: Option<u8>,
    target_temporal: u8,
    /// Highest spatial layer available upstream (`None`: all).
    spatial_limit: Option<u8>,
    events: VecDeque<SimulcastEvent>,
}

impl SimulcastSelector {
    /// A selector for a producer with `num_spatial` encodings (1..=[`MAX_SPATIAL_LAYERS`])
    /// of `num_temporal` temporal layers each (1..=8). Preferred layers default to the
    /// highest.
    pub fn new(cfg: SimulcastConfig, num_spatial: u8, num_temporal: u8) -> Self {
        let num_spatial = num_spatial.clamp(1, MAX_SPATIAL_LAYERS as u8);
        let num_temporal = num_temporal.clamp(1, 8);
        Self {
            cfg,
            num_spatial,
            num_temporal,
            preferred_spatial: num_spatial - 1,
            preferred_temporal: num_temporal - 1,
            available_bitrate: None,
            layers: [Layer::default(); MAX_SPATIAL_LAYERS],
            current_spatial: None,
            current_temporal: None,
            target_spatial: None,
            target_temporal: num_temporal - 1,
            spatial_limit: None,
            // Holds at most one request per layer plus one LayersChanged.
            events: VecDeque::with_capacity(MAX_SPATIAL_LAYERS + 1),
        }
    }

    /// Layers being forwarded: (spatial, temporal).
    pub fn current_layers(&self) -> Option<(u8, u8)> {
        Some((self.current_spatial?, self.current_temporal?))
    }

    /// Layers being moved to: (spatial, temporal).
    pub fn target_layers(&self) -> Option<(u8, u8)> {
        Some((self.target_spatial?, self.target_temporal))
    }

    /// Whether a spatial layer currently receives packets.
    pub fn is_layer_active(&self, spatial: u8) -> bool {
        self.layers.get(spatial as usize).is_some_and(|l| l.active)
    }

    /// The subscriber's preferred layers (clamped to what the producer has).
    pub fn set_preferred_layers(&mut self, now: Instant, spatial: u8, temporal: u8) {
        self.preferred_spatial = spatial.min(self.num_spatial - 1);
        self.preferred_temporal = temporal.min(self.num_temporal - 1);
        self.recompute(now);
    }

    /// Bitrate of one spatial layer (bits/s), as measured on the producer side.
    pub fn set_layer_bitrate(&mut self, now: Instant, spatial: u8, bps: Option<u64>) {
        if let Some(l) = self.layers.get_mut(spatial as usize) {
            l.bitrate = bps;
            self.recompute(now);
        }
    }

    /// The highest spatial layer available upstream (`None`: every layer); see the module
    /// docs. A change of limit retargets at once (keyframe request included); when the
    /// current layer is above a new limit and nothing within it is active, nothing is
    /// forwarded until a layer within it is.
    pub fn set_spatial_limit(&mut self, now: Instant, limit: Option<u8>) {
        if self.spatial_limit == limit {
            return;
        }
        self.spatial_limit = limit;
        self.recompute(now);
    }

    /// The highest spatial layer available upstream (`None`: every layer).
    pub fn spatial_limit(&self) -> Option<u8> {
        self.spatial_limit
    }

    /// Bandwidth available to this consumer (bits/s); `None` = unlimited.
    pub fn set_available_bitrate(&mut self, now: Instant, bps: Option<u64>) {
        self.available_bitrate = bps;
        self.recompute(now);
    }

    /// Records liveness of a spatial layer. [`should_forward`](Self::should_forward) calls
    /// this itself; call it directly only for packets that skip the decision.
    pub fn on_packet(&mut self, now: Instant, spatial: u8) {
        let Some(l) = self.layers[..self.num_spatial as usize].get_mut(spatial as usize) else {
            return;
        };
        l.last_packet = Some(now);
        if !l.active {
            l.active = true;
            self.recompute(now);
        }
    }

    /// Decides what to do with one incoming packet.
    pub fn should_forward(&mut self, now: Instant, pkt: &LayerPacket) -> Forward {
        if pkt.spatial >= self.num_spatial {
            return Forward::Ignore;
        }
        self.on_packet(now, pkt.spatial);
        let s = Some(pkt.spatial);
        if s == self.target_spatial && s != self.current_spatial {
            if pkt.keyframe {
                self.current_spatial = s;
                // Every temporal layer can decode from a keyframe: start at the target.
                // Every temporal layer decodes from a keyframe: start at the target.
                self.current_temporal = Some(self.target_temporal);
                self.layers_changed();
                return Forward::Switch;
            }
            self.request_keyframe(now, pkt.spatial);
        }
        if s != self.current_spatial {
            return Forward::Ignore;
        }
        let Some(cur_t) = self.current_temporal else {
            return Forward::Ignore;
        };
        let target_t = self.target_temporal;
        if pkt.temporal > cur_t {
            if pkt.temporal <= target_t && (pkt.layer_sync || pkt.keyframe) {
                self.current_temporal = Some(pkt.temporal);
                self.layers_changed();
                return Forward::Forward;
            }
            return Forward::Drop;
        }
        if target_t < cur_t && pkt.temporal <= target_t {
            self.current_temporal = Some(target_t);
            self.layers_changed();
        }
        Forward::Forward
    }

    /// Declares silent layers inactive and retries pending keyframe requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut changed = false;
        for l in &mut self.layers[..self.num_spatial as usize] {
            if let (true, Some(at)) = (l.active, l.last_packet) {
                if now.saturating_duration_since(at) >= self.cfg.inactivity_timeout {
                    l.active = false;
                    changed = true;
                }
            }
        }
        if changed {
            self.recompute(now);
            if self.target_spatial.is_none() && self.current_spatial.is_some() {
                self.current_spatial = None;
                self.current_temporal = None;
                self.layers_changed();
            }
        }
        if let Some(t) = self.target_spatial {
            if self.current_spatial != Some(t) {
                self.request_keyframe(now, t);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: a layer may expire or a
    /// keyframe request may be retried.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiries = self.layers[..self.num_spatial as usize]
            .iter()
            .filter(|l| l.active)
            .filter_map(|l| l.last_packet.map(|t| t + self.cfg.inactivity_timeout));
        let retry = self
            .target_spatial
            .filter(|&t| self.current_spatial != Some(t))
            .and_then(|t| self.layers[t as usize].last_keyframe_request)
            .map(|at| at + self.cfg.keyframe_request_interval);
        expiries.chain(retry).min()
    }

    /// Next event to act on.
    pub fn poll_event(&mut self) -> Option<SimulcastEvent> {
        self.events.pop_front()
    }

    fn choose_target(&self) -> Option<u8> {
        let n = self.num_spatial;
        let pref = self.preferred_spatial;
        let active = |s: u8| self.layers[s as usize].active;
        let affordable = |s: u8| match (self.available_bitrate, self.layers[s as usize].bitrate) {
            (Some(avail), Some(rate)) => rate <= avail,
            _ => true,
        };
        let within = |s: u8| self.spatial_limit.is_none_or(|l| s <= l);
        let pick = |ok: &dyn Fn(u8) -> bool| {
            (0..=pref)
                .rev()
                .find(|&s| ok(s) && active(s) && affordable(s))
                .or_else(|| (pref + 1..n).find(|&s| ok(s) && active(s) && affordable(s)))
                .or_else(|| (0..n).find(|&s| ok(s) && active(s)))
        };
        pick(&within).or_else(|| pick(&|_| true))
    }

    fn recompute(&mut self, now: Instant) {
        self.target_spatial = self.choose_target();
        self.target_temporal = self.preferred_temporal;
        if let Some(t) = self.target_spatial {
            if self.current_spatial != Some(t) {
                self.request_keyframe(now, t);
            }
        }
    }

    fn request_keyframe(&mut self, now: Instant, spatial: u8) {
        let interval = self.cfg.keyframe_request_interval;
        let l = &mut self.layers[spatial as usize];
        if l.last_keyframe_request
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        l.last_keyframe_request = Some(now);
        let ev = SimulcastEvent::RequestKeyFrame { spatial };
        if !self.events.contains(&ev) {
            self.events.push_back(ev);
        }
    }

    fn layers_changed(&mut self) {
        self.events
            .retain(|e| !matches!(e, SimulcastEvent::LayersChanged { .. }));
        self.events.push_back(SimulcastEvent::LayersChanged {
            spatial: self.current_spatial,
            temporal: self.current_temporal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn p(spatial: u8, temporal: u8, keyframe: bool, layer_sync: bool) -> LayerPacket {
        LayerPacket {
            spatial,
            temporal,
            keyframe,
            layer_sync,
        }
    }

    fn events(s: &mut SimulcastSelector) -> Vec<SimulcastEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn key_requests(ev: &[SimulcastEvent]) -> Vec<u8> {
        ev.iter()
            .filter_map(|e| match e {
                SimulcastEvent::RequestKeyFrame { spatial } => Some(*spatial),
                _ => None,
            })
            .collect()
    }

    /// Three layers alive, switched to (2, 2).
    fn running(t: Instant) -> SimulcastSelector {
        let mut s = SimulcastSelector::new(SimulcastConfig::default(), 3, 3);
        for l in 0..3 {
            s.should_forward(t, &p(l, 0, false, false));
        }
        assert_eq!(s.should_forward(t, &p(2, 0, true, false)), Forward::Switch);
        events(&mut s);
        s
    }

    #[test]
    fn startup_requests_keyframe_and_switches_on_it() {
        let t = Instant::now();
        let mut s = SimulcastSelector::new(SimulcastConfig::default(), 3, 3);
        assert_eq!(s.current_layers(), None);
        assert_eq!(s.should_forward(t, &p(0, 0, false, false)), Forward::Ignore);
        assert_eq!(s.should_forward(t, &p(1, 0, false, false)), Forward::Ignore);
        assert_eq!(s.should_forward(t, &p(2, 0, false, false)), Forward::Ignore);
        assert_eq!(key_requests(&events(&mut s)), vec![0, 1, 2]);
        assert_eq!(s.target_layers(), Some((2, 2)));
        // A keyframe of a non-target layer does not switch.
        assert_eq!(s.should_forward(t, &p(1, 0, true, false)), Forward::Ignore);
        assert_eq!(s.should_forward(t, &p(2, 0, true, false)), Forward::Switch);
        assert_eq!(
            events(&mut s),
            vec![SimulcastEvent::LayersChanged {
                spatial: Some(2),
                temporal: Some(2)
            }]
        );
        assert_eq!(
            s.should_forward(t, &p(2, 2, false, false)),
            Forward::Forward
        );
        assert_eq!(s.should_forward(t, &p(1, 0, false, false)), Forward::Ignore);
    }

    #[test]
    fn spatial_downswitch_waits_for_keyframe() {
        let t = Instant::now();
        let mut s = running(t);
        // Past the throttle of the start-up request for layer 0.
        let t2 = t + Duration::from_millis(600);
        s.set_preferred_layers(t2, 0, 2);
        assert_eq!(key_requests(&events(&mut s)), vec![0]);
        // Current layer keeps flowing until layer 0's keyframe.
        assert_eq!(
            s.should_forward(t2, &p(2, 0, false, false)),
            Forward::Forward
        );
        assert_eq!(
            s.should_forward(t2, &p(0, 0, false, false)),
            Forward::Ignore
        );
        assert_eq!(s.should_forward(t2, &p(0, 0, true, false)), Forward::Switch);
        assert_eq!(s.current_layers(), Some((0, 2)));
        assert_eq!(
            s.should_forward(t2, &p(2, 0, false, false)),
            Forward::Ignore
        );
    }

    #[test]
    fn temporal_down_and_up_switch() {
        let t = Instant::now();
        let mut s = running(t);
        s.set_preferred_layers(t, 2, 0);
        assert!(
            events(&mut s).is_empty(),
            "no keyframe needed for temporal change"
        );
        // In-flight higher-layer frame still goes out.
        assert_eq!(
            s.should_forward(t, &p(2, 2, false, false)),
            Forward::Forward
        );
        assert_eq!(s.current_layers(), Some((2, 2)));
        assert_eq!(
            s.should_forward(t, &p(2, 0, false, false)),
            Forward::Forward
        );
        assert_eq!(s.current_layers(), Some((2, 0)));
        assert_eq!(
            events(&mut s),
            vec![SimulcastEvent::LayersChanged {
                spatial: Some(2),
                temporal: Some(0)
            }]
        );
        assert_eq!(s.should_forward(t, &p(2, 1, false, true)), Forward::Drop);
        assert_eq!(s.should_forward(t, &p(2, 2, false, false)), Forward::Drop);
        // Up again: waits for a sync point.
        s.set_preferred_layers(t, 2, 2);
        assert_eq!(s.should_forward(t, &p(2, 2, false, false)), Forward::Drop);
        assert_eq!(s.should_forward(t, &p(2, 1, false, true)), Forward::Forward);
        assert_eq!(s.current_layers(), Some((2, 1)));
        assert_eq!(s.should_forward(t, &p(2, 2, false, false)), Forward::Drop);
        assert_eq!(s.should_forward(t, &p(2, 2, false, true)), Forward::Forward);
        assert_eq!(s.current_layers(), Some((2, 2)));
        // Two changes queued coalesce into the latest.
        assert_eq!(
            events(&mut s),
            vec![SimulcastEvent::LayersChanged {
                spatial: Some(2),
                temporal: Some(2)
            }]
        );
    }

    #[test]
    fn inactive_layer_falls_back_and_recovers() {
        let t = Instant::now();
        let mut s = running(t);
        // Layers 0 and 1 keep sending; 2 goes silent.
        let t1 = t + Duration::from_millis(1500);
        s.should_forward(t1, &p(0, 0, false, false));
        s.should_forward(t1, &p(1, 0, false, false));
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_secs(2)));
        s.handle_timeout(t + Duration::from_millis(1999));
        assert!(s.is_layer_active(2));
        let t2 = t + Duration::from_secs(2);
        s.handle_timeout(t2);
        assert!(!s.is_layer_active(2));
        assert_eq!(s.target_layers(), Some((1, 2)));
        assert_eq!(key_requests(&events(&mut s)), vec![1]);
        assert_eq!(s.should_forward(t2, &p(1, 0, true, false)), Forward::Switch);
        assert_eq!(s.current_layers(), Some((1, 2)));
        // Layer 2 comes back: target goes up again.
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(
            s.should_forward(t3, &p(2, 0, false, false)),
            Forward::Ignore
        );
        assert_eq!(s.target_layers(), Some((2, 2)));
        assert!(key_requests(&events(&mut s)).contains(&2));
    }

    #[test]
    fn spatial_limit_retargets_at_once_and_ignores_stray_packets_above_it() {
        let t = Instant::now();
        let mut s = running(t);
        assert_eq!(s.current_layers().map(|l| l.0), Some(2));
        events(&mut s);
        // Layer 2 is withheld upstream: target 1 now, not after the inactivity timeout.
        let t = t + 600 * MS;
        s.set_spatial_limit(t, Some(1));
        assert_eq!(s.spatial_limit(), Some(1));
        assert_eq!(s.target_layers().map(|l| l.0), Some(1));
        assert_eq!(key_requests(&events(&mut s)), vec![1]);
        // A packet of layer 2 still in flight does not pull the target back up.
        let t1 = t + 10 * MS;
        assert_eq!(
            s.should_forward(t1, &p(2, 0, false, false)),
            Forward::Forward
        );
        assert_eq!(s.target_layers().map(|l| l.0), Some(1));
        assert_eq!(s.should_forward(t1, &p(1, 0, true, false)), Forward::Switch);
        assert_eq!(s.current_layers().map(|l| l.0), Some(1));
        assert_eq!(s.should_forward(t1, &p(2, 0, true, false)), Forward::Ignore);
        // Down to layer 0.
        s.set_spatial_limit(t1, Some(0));
        assert_eq!(s.target_layers().map(|l| l.0), Some(0));
        // Lifted: layer 2, still active, is the target again.
        s.set_spatial_limit(t1, None);
        assert_eq!(s.target_layers().map(|l| l.0), Some(2));
        assert!(key_requests(&events(&mut s)).contains(&2));
        // Nothing active within the limit: what is active above it is better than nothing.
        let t = Instant::now();
        let mut s = SimulcastSelector::new(SimulcastConfig::default(), 3, 1);
        s.should_forward(t, &p(2, 0, false, false));
        s.set_spatial_limit(t, Some(1));
        assert_eq!(s.target_layers().map(|l| l.0), Some(2));
    }

    #[test]
    fn falls_back_to_higher_when_nothing_lower() {
        let t = Instant::now();
        let mut s = SimulcastSelector::new(SimulcastConfig::default(), 3, 1);
        s.set_preferred_layers(t, 0, 0);
        s.should_forward(t, &p(1, 0, false, false));
        s.should_forward(t, &p(2, 0, false, false));
        assert_eq!(s.target_layers(), Some((1, 0)));
    }

    #[test]
    fn everything_silent_reports_no_layers() {
        let t = Instant::now();
        let mut s = running(t);
        s.handle_timeout(t + Duration::from_secs(3));
        assert_eq!(s.current_layers(), None);
        assert_eq!(s.target_layers(), None);
        assert_eq!(
            events(&mut s),
            vec![SimulcastEvent::LayersChanged {
                spatial: None,
                temporal: None
            }]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn keyframe_requests_throttled_and_retried() {
        let t = Instant::now();
        let mut s = SimulcastSelector::new(SimulcastConfig::default(), 1, 1);
        s.should_forward(t, &p(0, 0, false, false));
        assert_eq!(key_requests(&events(&mut s)), vec![0]);
        for i in 1..10 {
            s.should_forward(t + i * 10 * MS, &p(0, 0, false, false));
        }
        assert!(events(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(t + Duration::from_millis(500)));
        s.handle_timeout(t + Duration::from_millis(500));
        assert_eq!(key_requests(&events(&mut s)), vec![0]);
        // Once switched, no more retries.
        let t1 = t + Duration::from_millis(600);
        assert_eq!(s.should_forward(t1, &p(0, 0, true, false)), Forward::Switch);
        s.handle_timeout(t + Duration::from_secs(1));
        assert!(key_requests(&events(&mut s)).is_empty());
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    }

    #[test]
    fn bitrate_hint_caps_target() {
        let t = Instant::now();
        let mut s = running(t);
        s.set_layer_bitrate(t, 0, Some(150_000));
        s.set_layer_bitrate(t, 1, Some(500_000));
        s.set_layer_bitrate(t, 2, Some(1_500_000));
        s.set_available_bitrate(t, Some(800_000));
        assert_eq!(s.target_layers(), Some((1, 2)));
        s.set_available_bitrate(t, Some(10_000));
        assert_eq!(
            s.target_layers(),
            Some((0, 2)),
            "nothing affordable: lowest"
        );
        s.set_available_bitrate(t, None);
        assert_eq!(s.target_layers(), Some((2, 2)));
    }

    #[test]
    fn hostile_layer_ids() {
        let t = Instant::now();
        let mut s = running(t);
        assert_eq!(s.should_forward(t, &p(3, 0, true, true)), Forward::Ignore);
        assert_eq!(
            s.should_forward(t, &p(255, 255, true, true)),
            Forward::Ignore
        );
        assert_eq!(s.should_forward(t, &p(2, 255, false, true)), Forward::Drop);
        s.on_packet(t, 200);
        s.set_layer_bitrate(t, 200, Some(1));
        s.set_preferred_layers(t, 200, 200);
        assert_eq!(s.target_layers(), Some((2, 2)));
        let mut big = SimulcastSelector::new(SimulcastConfig::default(), 200, 200);
        big.should_forward(t, &p(3, 7, true, true));
        assert_eq!(big.current_layers(), Some((3, 7)));
    }
}
