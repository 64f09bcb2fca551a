//! Layer shedding: a pipe link whose capacity falls withholds the upper simulcast layers it
//! carries before the lower ones, instead of letting the link drop packets of every layer at
//! random.
//!
//! [`LayerShedder`] is the per-link controller. It is sans-IO: the glue samples the link every
//! [`crate::timing::PIPE_RATE_SAMPLE_INTERVAL`] (loss over the last rate window and quinn's
//! smoothed RTT, see [`crate::pipe::endpoint::LinkStats`]) and the worker feeds each sample to
//! [`LayerShedder::on_sample`], which answers with the new *shed level* when it changes. The
//! level is the number of top layers withheld toward that node: 0 forwards every layer; at
//! level `L` an encoding `e` of a producer with `n` encodings is withheld when
//! `e >= max(1, n - L)` ([`withheld`]), so the lowest layer, audio and single-encoding
//! producers always flow.
//!
//! Rules, and why:
//! * **Congested** sample: loss over the window at or above
//!   [`ShedConfig::loss_threshold_percent`] (4 %), or queueing delay at or above the delay
//!   threshold. Random WAN loss of a percent or so is not congestion (NACK and RTX repair it),
//!   and shedding on it would cost quality for nothing; a link that is really over capacity
//!   loses far more once its queue overflows. Queueing delay is the RTT minus the smallest RTT
//!   seen over [`ShedConfig::base_rtt_window`] (60 s): a growing queue shows as RTT inflation
//!   before it overflows into loss, so it is the earlier signal. Its threshold is
//!   [`ShedConfig::queue_delay_threshold`] (100 ms) or
//!   [`ShedConfig::queue_delay_base_fraction`] of the base RTT, whichever is larger: a long
//!   path has more RTT jitter, and 100 ms on top of 400 ms is not the same alarm as on 2 ms.
//!   The base RTT is a windowed minimum so that a route change to a longer path is learnt
//!   within the window instead of reading as congestion forever.
//! * **Shed** one more layer per congested sample, but at most one step per
//!   [`ShedConfig::shed_step_interval`] (2 s): the effect of withholding a layer needs time to
//!   show in the link's figures (the queue drains, the loss window moves on) before judging
//!   whether another layer must go. The loss window (5 s) outlives that step, so while layers
//!   are shed the loss that counts is the loss over the packets sent since the second sample
//!   after the last change of level (what was queued before a change still drains, and is
//!   dropped, for up to a queue's length after it; from the link's running totals, once [`ShedConfig::fresh_loss_min_packets`] were
//!   sent; until then the loss is unknown: only the delay can shed further, and the link is
//!   clean only if the window is): a shed that cured the loss is not followed by another because the window
//!   still remembers the loss from before it, nor a relapse after a restore by a second shed
//!   on the restore's own loss. The first shed judges the window: a whole window of packets
//!   keeps random loss from tripping it. The level is capped at `layers - 1`
//!   ([`LayerShedder::set_layers`]: the most encodings of any producer piped on the link) and
//!   at [`ShedConfig::max_level`], so the lowest layer is never withheld.
//! * **Restore** one layer after the link has been clean for the restore wait
//!   ([`ShedConfig::restore_after`], 8 s) since the last change. A clean sample has loss below
//!   [`ShedConfig::loss_clean_percent`] (2 %) (over the window and since the last change)
//!   and queueing delay below half the delay
//!   threshold; samples between clean and congested hold the level and restart the clean
//!   streak (hysteresis: a link hovering near the threshold does not flap).
//! * **Backoff**: restoring is a probe (more traffic on a link that was short of capacity).
//!   When congestion returns within [`ShedConfig::relapse_window`] (5 s) of a restore, the
//!   probe failed: the restore wait doubles, up to [`ShedConfig::restore_after_max`] (60 s).
//!   After [`ShedConfig::backoff_reset_after`] (60 s) clean since the last change, the wait
//!   returns to its initial value (the bottleneck has gone), as a bandwidth estimator probes.
//! * Hostile samples: a loss that is NaN or negative counts as no loss, above 100 as 100; an RTT
//!   of 0 (link down, no estimate) carries no delay information.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables of a [`LayerShedder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShedConfig {
    /// Loss over the rate window (percent) at or above which a sample is congested.
    pub loss_threshold_percent: f64,
    /// Loss (percent) below which a sample may count as clean.
    pub loss_clean_percent: f64,
    /// Queueing delay at or above which a sample is congested (the floor of the threshold).
    pub queue_delay_threshold: Duration,
    /// The delay threshold is at least this fraction of the base RTT.
    pub queue_delay_base_fraction: f64,
    /// The base RTT is the smallest RTT seen over this window.
    pub base_rtt_window: Duration,
    /// At most one shed step per this interval.
    pub shed_step_interval: Duration,
    /// Initial clean time before a layer is restored.
    pub restore_after: Duration,
    /// Longest the restore wait grows to.
    pub restore_after_max: Duration,
    /// Congestion this soon after a restore doubles the restore wait.
    pub relapse_window: Duration,
    /// Clean this long since the last change resets the restore wait.
    pub backoff_reset_after: Duration,
    /// Most layers withheld on a link, whatever the producers have.
    pub max_level: u8,
    /// Packets sent since the last change of level from which the loss since that change
    /// replaces the window's figure (see the module docs).
    pub fresh_loss_min_packets: u64,
}

impl Default for ShedConfig {
    fn default() -> Self {
        Self {
            loss_threshold_percent: 4.0,
            loss_clean_percent: 2.0,
            queue_delay_threshold: Duration::from_millis(100),
            queue_delay_base_fraction: 0.5,
            base_rtt_window: Duration::from_secs(60),
            shed_step_interval: Duration::from_secs(2),
            restore_after: Duration::from_secs(8),
            restore_after_max: Duration::from_secs(60),
            relapse_window: Duration::from_secs(5),
            backoff_reset_after: Duration::from_secs(60),
            max_level: 2,
            fresh_loss_min_packets: 200,
        }
    }
}

/// What the link looked like at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkSample {
    /// Loss over the link's rate window, in percent.
    pub loss_percent: f64,
    /// Smoothed RTT in microseconds; 0 when unknown.
    pub rtt_us: u64,
    /// Packets sent on the link so far (a running total; 0 when unknown).
    pub sent_packets: u64,
    /// Of those, packets declared lost so far.
    pub lost_packets: u64,
}

/// Whether encoding `encoding` of a producer with `encodings` encodings is withheld at shed
/// level `level`. The lowest encoding is never withheld, so neither is audio.
pub fn withheld(encoding: usize, encodings: usize, level: u8) -> bool {
    level > 0 && encoding >= encodings.saturating_sub(usize::from(level)).max(1)
}

/// Most base-RTT candidates kept (samples arrive once a second; this bounds memory if they
/// arrive faster).
const MAX_RTT_HISTORY: usize = 256;

/// How one sample is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Congested,
    Hold,
    Clean,
}

/// The per-link shedding controller (see the module docs).
#[derive(Debug, Clone)]
pub struct LayerShedder {
    cfg: ShedConfig,
    level: u8,
    /// Cap from the producers on the link: `layers - 1`.
    layer_cap: u8,
    /// Candidates for the windowed minimum RTT: (when, rtt_us), rtt ascending.
    rtt_min: VecDeque<(Instant, u64)>,
    last_shed: Option<Instant>,
    last_change: Option<Instant>,
    last_restore: Option<Instant>,
    clean_since: Option<Instant>,
    restore_wait: Duration,
    /// Packet totals (sent, lost) at the second sample after the last change of level.
    baseline: Option<(u64, u64)>,
    /// Samples until the baseline is taken (set by a change of level).
    rebase_in: u8,
}

impl Default for LayerShedder {
    fn default() -> Self {
        Self::new(ShedConfig::default())
    }
}

impl LayerShedder {
    /// A controller at level 0, for links carrying up to three layers until told otherwise.
    pub fn new(cfg: ShedConfig) -> Self {
        Self {
            level: 0,
            layer_cap: cfg.max_level,
            rtt_min: VecDeque::new(),
            last_shed: None,
            last_change: None,
            last_restore: None,
            clean_since: None,
            restore_wait: cfg.restore_after,
            baseline: None,
            rebase_in: 0,
            cfg,
        }
    }

    /// The current shed level.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The current restore wait (grows with failed restores).
    pub fn restore_wait(&self) -> Duration {
        self.restore_wait
    }

    /// The smallest RTT seen over the base window, in microseconds.
    pub fn base_rtt_us(&self) -> Option<u64> {
        self.rtt_min.front().map(|&(_, r)| r)
    }

    /// The most encodings of any producer piped on the link. Returns the new level when the
    /// cap lowers it (fewer layers to shed).
    pub fn set_layers(&mut self, layers: usize) -> Option<u8> {
        let cap = u8::try_from(layers.saturating_sub(1)).unwrap_or(u8::MAX);
        self.layer_cap = cap;
        let max = self.cap();
        if self.level > max {
            self.level = max;
            return Some(max);
        }
        None
    }

    fn cap(&self) -> u8 {
        self.layer_cap.min(self.cfg.max_level)
    }

    /// One sample of the link; the new level when it changed.
    pub fn on_sample(&mut self, now: Instant, sample: LinkSample) -> Option<u8> {
        let verdict = self.judge(now, sample);
        match verdict {
            Verdict::Congested => {
                self.clean_since = None;
                let cap = self.cap();
                let step_ok = self.last_shed.is_none_or(|t| {
                    now.saturating_duration_since(t) >= self.cfg.shed_step_interval
                });
                if self.level >= cap || !step_ok {
                    return None;
                }
                if self
                    .last_restore
                    .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.relapse_window)
                {
                    self.restore_wait = (self.restore_wait * 2).min(self.cfg.restore_after_max);
                    // One relapse doubles once.
                    self.last_restore = None;
                }
                self.level += 1;
                self.last_shed = Some(now);
                self.changed(now, sample);
                Some(self.level)
            }
            Verdict::Hold => {
                self.clean_since = None;
                None
            }
            Verdict::Clean => {
                let since = *self.clean_since.get_or_insert(now);
                let clean_from = match self.last_change {
                    Some(c) => since.max(c),
                    None => since,
                };
                let clean_for = now.saturating_duration_since(clean_from);
                if self.level > 0 && clean_for >= self.restore_wait {
                    self.level -= 1;
                    self.last_restore = Some(now);
                    self.changed(now, sample);
                    return Some(self.level);
                }
                if clean_for >= self.cfg.backoff_reset_after {
                    self.restore_wait = self.cfg.restore_after;
                }
                None
            }
        }
    }

    fn changed(&mut self, now: Instant, _sample: LinkSample) {
        self.last_change = Some(now);
        // Counted from the second sample after it: what was queued before the change is still
        // being sent (and dropped) for a moment after it, up to the queue's length.
        self.baseline = None;
        self.rebase_in = 2;
    }

    /// Loss (percent) over the packets sent since the last change of level, once there are
    /// enough of them.
    fn fresh_loss(&self, sample: LinkSample) -> Option<f64> {
        let (sent0, lost0) = self.baseline?;
        let sent = sample.sent_packets.checked_sub(sent0)?;
        let lost = sample.lost_packets.checked_sub(lost0)?;
        if sent < self.cfg.fresh_loss_min_packets.max(1) {
            return None;
        }
        Some((lost as f64 / sent as f64 * 100.0).min(100.0))
    }

    fn judge(&mut self, now: Instant, sample: LinkSample) -> Verdict {
        let window = if sample.loss_percent.is_nan() {
            0.0
        } else {
            sample.loss_percent.clamp(0.0, 100.0)
        };
        // While shedding, the window still holds the loss from before the last change for a
        // few seconds: the loss since the change says whether it worked.
        // Until enough packets went since the change, the loss is not known: the delay alone
        // can shed further, and only a window without loss is clean (a relapse after a
        // restore would otherwise shed a second layer on the restore's own loss).
        if self.rebase_in > 0 {
            self.rebase_in -= 1;
            // Without counters (none sent yet) the window alone judges.
            if self.rebase_in == 0 && sample.sent_packets > 0 {
                self.baseline = Some((sample.sent_packets, sample.lost_packets));
            }
        }
        if self
            .baseline
            .is_some_and(|(sent, lost)| sample.sent_packets < sent || sample.lost_packets < lost)
        {
            // The link's totals went backwards (they should not): count afresh from here.
            self.baseline = Some((sample.sent_packets, sample.lost_packets));
        }
        let loss = match (self.level > 0, self.fresh_loss(sample)) {
            (true, Some(fresh)) => fresh,
            // (Samples without counters have only the window.)
            (true, None)
                if sample.sent_packets > 0 && (self.baseline.is_some() || self.rebase_in > 0) =>
            {
                0.0
            }
            _ => window,
        };
        let mut delay_congested = false;
        let mut delay_clean = true;
        if sample.rtt_us > 0 {
            self.record_rtt(now, sample.rtt_us);
            let base = self.base_rtt_us().unwrap_or(sample.rtt_us);
            let queue = sample.rtt_us.saturating_sub(base);
            let floor = self.cfg.queue_delay_threshold.as_micros() as f64;
            let relative = base as f64 * self.cfg.queue_delay_base_fraction;
            let threshold = if relative.is_finite() {
                floor.max(relative)
            } else {
                floor
            };
            delay_congested = queue as f64 >= threshold;
            delay_clean = (queue as f64) < threshold / 2.0;
        }
        if loss >= self.cfg.loss_threshold_percent || delay_congested {
            Verdict::Congested
        } else if loss.max(window) < self.cfg.loss_clean_percent && delay_clean {
            Verdict::Clean
        } else {
            Verdict::Hold
        }
    }

    fn record_rtt(&mut self, now: Instant, rtt_us: u64) {
        while self
            .rtt_min
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > self.cfg.base_rtt_window)
        {
            self.rtt_min.pop_front();
        }
        while self.rtt_min.back().is_some_and(|&(_, r)| r >= rtt_us) {
            self.rtt_min.pop_back();
        }
        if self.rtt_min.len() >= MAX_RTT_HISTORY {
            self.rtt_min.pop_front();
        }
        self.rtt_min.push_back((now, rtt_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn loss(p: f64) -> LinkSample {
        LinkSample {
            loss_percent: p,
            rtt_us: 20_000,
            ..LinkSample::default()
        }
    }

    /// Feeds `sample` once a second for `secs` seconds from `*t` (advanced); the changes as
    /// (seconds since `start`, level).
    fn run(
        s: &mut LayerShedder,
        start: Instant,
        t: &mut Instant,
        secs: u64,
        sample: LinkSample,
    ) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        for _ in 0..secs {
            *t += S;
            if let Some(l) = s.on_sample(*t, sample) {
                out.push(((*t - start).as_secs(), l));
            }
        }
        out
    }

    #[test]
    fn withheld_keeps_the_lowest_layer_and_audio() {
        // Three encodings.
        assert!(!withheld(2, 3, 0));
        assert!(withheld(2, 3, 1) && !withheld(1, 3, 1) && !withheld(0, 3, 1));
        assert!(withheld(2, 3, 2) && withheld(1, 3, 2) && !withheld(0, 3, 2));
        assert!(withheld(1, 3, 9) && !withheld(0, 3, 9));
        // Two encodings: level 2 is as level 1.
        assert!(withheld(1, 2, 1) && withheld(1, 2, 2) && !withheld(0, 2, 2));
        // Audio and single encodings are never withheld.
        for l in 0..=u8::MAX {
            assert!(!withheld(0, 1, l));
            assert!(!withheld(0, 0, l));
        }
    }

    #[test]
    fn one_percent_loss_never_sheds() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        assert!(run(&mut s, start, &mut t, 600, loss(1.0)).is_empty());
        // Nor does loss just under the threshold, nor RTT jitter well under 100 ms.
        assert!(run(&mut s, start, &mut t, 60, loss(3.9)).is_empty());
        for i in 0..60u64 {
            t += S;
            let sample = LinkSample {
                loss_percent: 1.0,
                rtt_us: 20_000 + (i % 5) * 15_000,
                ..LinkSample::default()
            };
            assert_eq!(s.on_sample(t, sample), None);
        }
        assert_eq!(s.level(), 0);
    }

    #[test]
    fn sustained_loss_sheds_step_by_step_to_the_cap() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        run(&mut s, start, &mut t, 10, loss(0.0));
        let changes = run(&mut s, start, &mut t, 30, loss(10.0));
        // First congested sample at 11 s, the next step 2 s later, then capped at 2.
        assert_eq!(changes, vec![(11, 1), (13, 2)]);
        assert_eq!(s.level(), 2);
    }

    #[test]
    fn a_shed_that_cured_the_loss_is_not_followed_by_another() {
        let mut t = Instant::now();
        // 500 packets a second; `lost` of them lost after the shed at 1 s.
        let run_counted = |lost_per_s: u64, t: &mut Instant| {
            let mut s = LayerShedder::default();
            let (mut sent, mut lost) = (10_000u64, 0u64);
            let mut changes = Vec::new();
            for i in 1..=10u64 {
                *t += S;
                sent += 500;
                // 10 % lost until the first shed, then `lost_per_s`.
                lost += if s.level() == 0 { 50 } else { lost_per_s };
                // The window (5 s) still shows the loss from before the shed.
                let window = if i <= 5 { 10.0 } else { 0.0 };
                let sample = LinkSample {
                    loss_percent: window,
                    rtt_us: 20_000,
                    sent_packets: sent,
                    lost_packets: lost,
                };
                if let Some(l) = s.on_sample(*t, sample) {
                    changes.push((i, l));
                }
            }
            changes
        };
        // Cured: no loss since the shed, so the window's memory does not shed again.
        assert_eq!(run_counted(0, &mut t), vec![(1, 1)]);
        // Not cured: 10 % since the shed, counted from the second sample after it (the first
        // second drains what was queued), the second layer goes 3 s later.
        assert_eq!(run_counted(50, &mut t), vec![(1, 1), (4, 2)]);
        // Too few packets since the shed to judge: the window's old loss does not shed
        // again (only the delay could), and the link is not clean either.
        let mut s = LayerShedder::default();
        let few = |loss_percent: f64, sent: u64, rtt_us: u64| LinkSample {
            loss_percent,
            rtt_us,
            sent_packets: sent,
            lost_packets: 0,
        };
        t += S;
        assert_eq!(s.on_sample(t, few(10.0, 100, 20_000)), Some(1));
        t += 2 * S;
        assert_eq!(s.on_sample(t, few(10.0, 150, 20_000)), None);
        t += 2 * S;
        assert_eq!(s.on_sample(t, few(10.0, 190, 400_000)), Some(2), "delay");
        // Counters going backwards (a reset) re-base the count: unknown, then judged again.
        let mut s = LayerShedder::default();
        t += S;
        assert_eq!(s.on_sample(t, few(10.0, 10_000, 20_000)), Some(1));
        t += 2 * S;
        assert_eq!(s.on_sample(t, few(10.0, 5, 20_000)), None);
        // Clean since the re-base (once 200 packets went): the layer comes back after the
        // restore wait, and nothing is shed meanwhile.
        let mut changes = Vec::new();
        for i in 1..=20u64 {
            t += S;
            if let Some(l) = s.on_sample(t, few(0.0, 5 + 100 * i, 20_000)) {
                changes.push((i, l));
            }
        }
        assert_eq!(changes, [(9, 0)]);
    }

    #[test]
    fn cap_follows_the_layers_on_the_link() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        assert_eq!(s.set_layers(2), None);
        let changes = run(&mut s, start, &mut t, 10, loss(10.0));
        assert_eq!(changes, vec![(1, 1)]);
        // Only audio (or single encodings) left: nothing to shed.
        assert_eq!(s.set_layers(1), Some(0));
        assert!(run(&mut s, start, &mut t, 10, loss(10.0)).is_empty());
        // Simulcast again: shedding resumes.
        assert_eq!(s.set_layers(3), None);
        assert_eq!(
            run(&mut s, start, &mut t, 3, loss(10.0)),
            vec![(21, 1), (23, 2)]
        );
        // A config cap below the layers wins.
        let mut s = LayerShedder::new(ShedConfig {
            max_level: 1,
            ..ShedConfig::default()
        });
        s.set_layers(4);
        assert_eq!(run(&mut s, start, &mut t, 10, loss(10.0)).len(), 1);
        assert_eq!(s.level(), 1);
    }

    #[test]
    fn rtt_inflation_sheds() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        let rtt = |ms: u64| LinkSample {
            loss_percent: 0.0,
            rtt_us: ms * 1000,
            ..LinkSample::default()
        };
        run(&mut s, start, &mut t, 10, rtt(30));
        assert_eq!(s.base_rtt_us(), Some(30_000));
        // 90 ms of queue: under the threshold (hold, no shed).
        assert!(run(&mut s, start, &mut t, 5, rtt(120)).is_empty());
        // 150 ms of queue: congested.
        assert_eq!(
            run(&mut s, start, &mut t, 3, rtt(180)),
            vec![(16, 1), (18, 2)]
        );
        // On a long path the threshold is relative: 150 ms on a 400 ms base is not congestion.
        let mut s = LayerShedder::default();
        run(&mut s, start, &mut t, 10, rtt(400));
        assert!(run(&mut s, start, &mut t, 10, rtt(550)).is_empty());
        assert_eq!(run(&mut s, start, &mut t, 1, rtt(610)).len(), 1);
    }

    #[test]
    fn base_rtt_is_a_windowed_minimum() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        let rtt = |ms: u64| LinkSample {
            loss_percent: 0.0,
            rtt_us: ms * 1000,
            ..LinkSample::default()
        };
        run(&mut s, start, &mut t, 5, rtt(10));
        // A route change to a longer path: congestion for a while, then learnt.
        let changes = run(&mut s, start, &mut t, 120, rtt(200));
        assert_eq!(changes.first(), Some(&(6, 1)));
        assert_eq!(s.base_rtt_us(), Some(200_000));
        assert_eq!(s.level(), 0, "restored once the new base RTT is learnt");
    }

    #[test]
    fn recovery_restores_one_layer_at_a_time() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        run(&mut s, start, &mut t, 4, loss(10.0));
        assert_eq!(s.level(), 2); // at 1 s and 3 s
                                  // The 5 s loss window still shows loss for a while: hold, then clean.
        assert!(run(&mut s, start, &mut t, 2, loss(3.0)).is_empty());
        let changes = run(&mut s, start, &mut t, 30, loss(0.5));
        // Clean from 7 s: one layer at 15 s, the next 8 s later.
        assert_eq!(changes, vec![(15, 1), (23, 0)]);
    }

    #[test]
    fn failed_restores_back_off_and_a_long_clean_period_resets() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        assert_eq!(run(&mut s, start, &mut t, 1, loss(10.0)), vec![(1, 1)]);
        assert_eq!(s.restore_wait(), Duration::from_secs(8));
        // Clean from 2 s: restored at 10 s; congestion 2 s later doubles the wait.
        assert_eq!(run(&mut s, start, &mut t, 9, loss(0.0)), vec![(10, 0)]);
        assert!(run(&mut s, start, &mut t, 1, loss(0.0)).is_empty());
        assert_eq!(run(&mut s, start, &mut t, 1, loss(10.0)), vec![(12, 1)]);
        assert_eq!(s.restore_wait(), Duration::from_secs(16));
        // Clean from 13 s: restored 16 s later, and the probe fails again.
        assert_eq!(run(&mut s, start, &mut t, 17, loss(0.0)), vec![(29, 0)]);
        assert_eq!(run(&mut s, start, &mut t, 1, loss(10.0)), vec![(30, 1)]);
        assert_eq!(s.restore_wait(), Duration::from_secs(32));
        // Congestion long after a restore is not a failed probe: no doubling.
        assert_eq!(run(&mut s, start, &mut t, 33, loss(0.0)), vec![(63, 0)]);
        assert!(run(&mut s, start, &mut t, 10, loss(0.0)).is_empty());
        assert_eq!(run(&mut s, start, &mut t, 1, loss(10.0)), vec![(74, 1)]);
        assert_eq!(s.restore_wait(), Duration::from_secs(32));
        // Failed probes again: capped at 60 s.
        for _ in 0..3 {
            let mut waited = 0;
            loop {
                t += S;
                waited += 1;
                if s.on_sample(t, loss(0.0)).is_some() {
                    break;
                }
                assert!(waited <= 61, "restored within the capped wait");
            }
            assert_eq!(s.level(), 0);
            t += S;
            assert_eq!(s.on_sample(t, loss(10.0)), Some(1));
        }
        assert_eq!(s.restore_wait(), Duration::from_secs(60));
        // Restored after 60 s clean; 60 s more clean since that change resets the wait.
        assert_eq!(run(&mut s, start, &mut t, 61, loss(0.0)).len(), 1);
        assert_eq!(s.level(), 0);
        assert_eq!(s.restore_wait(), Duration::from_secs(60));
        run(&mut s, start, &mut t, 60, loss(0.0));
        assert_eq!(s.restore_wait(), Duration::from_secs(8));
    }

    #[test]
    fn hold_zone_neither_sheds_nor_restores() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        run(&mut s, start, &mut t, 1, loss(10.0));
        assert!(run(&mut s, start, &mut t, 60, loss(3.0)).is_empty());
        assert_eq!(s.level(), 1);
    }

    #[test]
    fn hostile_samples_do_not_panic() {
        let start = Instant::now();
        let mut t = start;
        let mut s = LayerShedder::default();
        let hostile = [
            LinkSample {
                loss_percent: f64::NAN,
                rtt_us: 0,
                ..LinkSample::default()
            },
            LinkSample {
                loss_percent: f64::INFINITY,
                rtt_us: u64::MAX,
                ..LinkSample::default()
            },
            LinkSample {
                loss_percent: f64::NEG_INFINITY,
                rtt_us: 1,
                ..LinkSample::default()
            },
            LinkSample {
                loss_percent: -5.0,
                rtt_us: u64::MAX,
                ..LinkSample::default()
            },
            LinkSample {
                loss_percent: 1e300,
                rtt_us: 0,
                ..LinkSample::default()
            },
        ];
        for _ in 0..100 {
            for h in hostile {
                t += Duration::from_millis(1);
                let _ = s.on_sample(t, h);
                assert!(s.level() <= 2);
            }
        }
        // NaN loss and no RTT is no information: nothing is shed for it.
        let mut s = LayerShedder::default();
        for _ in 0..30 {
            t += S;
            assert_eq!(
                s.on_sample(
                    t,
                    LinkSample {
                        loss_percent: f64::NAN,
                        ..LinkSample::default()
                    }
                ),
                None
            );
        }
        // Samples out of order (time going back) are harmless.
        let mut s = LayerShedder::default();
        s.on_sample(t, loss(10.0));
        s.on_sample(t - 10 * S, loss(10.0));
        s.on_sample(start, loss(0.0));
        assert!(s.level() <= 2);
        // Zero layers, huge layer counts.
        assert_eq!(s.set_layers(0), Some(0));
        assert_eq!(s.set_layers(usize::MAX), None);
    }
}
