//! Layer shedding toward remote nodes: a pipe link whose capacity falls withholds the upper
//! simulcast layers of what this node pipes on it (local producers and relayed ones alike),
//! before the lower ones. The controller is [`crate::pipe::shedding::LayerShedder`], one per
//! linked node, fed by the glue once a second ([`Worker::handle_pipe_link_sample`]); the
//! packet path ([`super::media::pipe_out`]) reads only the map of levels above 0.
//!
//! What the far node sees: each change of level is announced
//! ([`ControlMessage::ShedLayers`]), and the consumers of what this node pipes there limit
//! their layer selectors ([`crate::router::simulcast::SimulcastSelector::set_spatial_limit`])
//! at once: they target the best layer still sent and ask for a keyframe of it, instead of
//! showing a frozen picture until the withheld layer's inactivity timeout (which remains the
//! fallback: with a node that does not know the message, or downstream of a relay, which does
//! not pass it on). When a layer is restored this node asks the producer for a keyframe of it
//! at once (its publisher, or upstream for a relayed producer), so the far selectors, which
//! target the layer again when the limit lifts or on its first packet, switch up without
//! waiting for their own request to cross the link.
//!
//! NACKs: the retransmission buffer of a piped encoding is shared by every node it goes to, so
//! it holds packets that were withheld from a shedding node. A NACK from that node for an
//! encoding withheld now, or withheld until less than [`RTX_BUFFER_MAX_AGE`] ago (the far side
//! sees the sequence gap of the shed period when the layer resumes), is not answered: resending
//! seconds of a layer onto a link that just recovered would defeat the point.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::media::{limit_piped_layers, send_keyframe_requests};
use super::report::PipeLinkReport;
use super::{Output, Worker};
use crate::ids::NodeId;
use crate::pipe::shedding::{withheld, LayerShedder, LinkSample};
use crate::pipe::wire::ControlMessage;
use crate::timing::RTX_BUFFER_MAX_AGE;

/// Shedding state of one linked node.
#[derive(Debug, Default)]
struct LinkShed {
    ctl: LayerShedder,
    /// The level before the last restore, and when it happened.
    restored: Option<(u8, Instant)>,
}

/// Shedding state of every linked node.
#[derive(Debug, Default)]
pub(super) struct ShedState {
    links: HashMap<NodeId, LinkShed>,
    /// Levels above 0 only: what the packet path reads (empty when nothing is shed).
    levels: HashMap<NodeId, u8>,
    /// Far side: what each node says it withholds from this node (above 0 only).
    limited_by: HashMap<NodeId, u8>,
}

impl ShedState {
    /// Shed levels above 0, per node.
    pub(super) fn levels(&self) -> &HashMap<NodeId, u8> {
        &self.levels
    }

    /// The shed level toward `node` (0: every layer flows).
    pub(super) fn level(&self, node: &NodeId) -> u8 {
        self.levels.get(node).copied().unwrap_or(0)
    }

    /// Whether a NACK from `node` for `encoding` (of `encodings`) goes unanswered (see the
    /// module docs).
    pub(super) fn nack_withheld(
        &self,
        now: Instant,
        node: &NodeId,
        encoding: usize,
        encodings: usize,
    ) -> bool {
        if withheld(encoding, encodings, self.level(node)) {
            return true;
        }
        self.links
            .get(node)
            .and_then(|l| l.restored)
            .is_some_and(|(before, at)| {
                now.saturating_duration_since(at) < RTX_BUFFER_MAX_AGE
                    && withheld(encoding, encodings, before)
            })
    }

    /// Far side: the top layers `node` says it withholds from this node.
    pub(super) fn limited_by(&self, node: &NodeId) -> u8 {
        self.limited_by.get(node).copied().unwrap_or(0)
    }

    /// The link to `node` is gone: its next connection starts with every layer (origin side;
    /// the far side's limits are lifted by [`Worker::far_shed`]).
    pub(super) fn forget(&mut self, node: &NodeId) {
        self.links.remove(node);
        self.levels.remove(node);
    }
}

impl Worker {
    /// A sample of the pipe link to `node`, once per
    /// [`crate::timing::PIPE_RATE_SAMPLE_INTERVAL`]: QUIC loss over the link's rate window,
    /// its smoothed RTT and packet totals ([`LinkSample`]). Drives the shedding of upper
    /// simulcast layers toward `node` ([`crate::pipe::shedding`]). Returns the shed level
    /// toward `node` after the sample. Samples of a link that is not up are ignored.
    pub fn handle_pipe_link_sample(
        &mut self,
        now: Instant,
        node: &NodeId,
        sample: LinkSample,
    ) -> u8 {
        if !self.pipes.is_up(node) {
            return self.pipes.shed.level(node);
        }
        // The most encodings of anything piped to the node caps the level.
        let layers = self
            .rooms
            .values()
            .flat_map(|r| r.producers.values())
            .filter(|p| p.piped_to.contains(node))
            .map(|p| p.pipe_stream_ids.len())
            .max()
            .unwrap_or(0);
        let link = self.pipes.shed.links.entry(node.clone()).or_default();
        let before = link.ctl.level();
        link.ctl.set_layers(layers);
        link.ctl.on_sample(now, sample);
        let after = link.ctl.level();
        if after != before {
            tracing::info!(
                %node,
                level = after,
                previous = before,
                loss_percent = sample.loss_percent,
                rtt_ms = sample.rtt_us as f64 / 1000.0,
                "pipe link shed level changed"
            );
            self.set_shed_level(now, node, before, after);
            self.settle(now);
        }
        after
    }

    /// The shed level toward `node` (0: every layer flows).
    pub fn pipe_shed_level(&self, node: &NodeId) -> u8 {
        self.pipes.shed.level(node)
    }

    /// Per remote node, for operators (`/api/v1/links`): what
    /// [`Worker::pipe_stream_counts`] counts, and the layers shed toward it. Sorted by node.
    pub fn pipe_link_reports(&self) -> Vec<PipeLinkReport> {
        let mut out: BTreeMap<NodeId, PipeLinkReport> = self
            .pipe_stream_counts()
            .into_iter()
            .map(|(node, piped_out, piped_in)| {
                let r = PipeLinkReport {
                    node: node.clone(),
                    piped_out,
                    piped_in,
                    shed_layers: 0,
                };
                (node, r)
            })
            .collect();
        for (node, &level) in self.pipes.shed.levels() {
            out.entry(node.clone())
                .or_insert_with(|| PipeLinkReport {
                    node: node.clone(),
                    piped_out: 0,
                    piped_in: 0,
                    shed_layers: 0,
                })
                .shed_layers = level;
        }
        out.into_values().collect()
    }

    /// Far side: `node` withholds its top `layers` simulcast layers from this node
    /// ([`crate::pipe::wire::ControlMessage::ShedLayers`]): consumers of what it pipes here
    /// stop targeting them at once.
    pub(super) fn far_shed(&mut self, now: Instant, node: &NodeId, layers: u8) {
        tracing::debug!(%node, layers, "pipe link sheds layers toward this node");
        let shed = &mut self.pipes.shed;
        if layers == 0 {
            shed.limited_by.remove(node);
        } else {
            shed.limited_by.insert(node.clone(), layers);
        }
        let Worker {
            rooms,
            outputs,
            transports,
            ..
        } = self;
        for room in rooms.values_mut() {
            limit_piped_layers(room, now, node, layers, outputs, transports);
        }
    }

    fn set_shed_level(&mut self, now: Instant, node: &NodeId, before: u8, after: u8) {
        self.outputs.push_back(Output::PipeControl {
            node: node.clone(),
            msg: ControlMessage::ShedLayers { layers: after },
        });
        let shed = &mut self.pipes.shed;
        if after == 0 {
            shed.levels.remove(node);
        } else {
            shed.levels.insert(node.clone(), after);
        }
        if after >= before {
            return;
        }
        if let Some(l) = shed.links.get_mut(node) {
            l.restored = Some((before, now));
        }
        // Restored layers: a keyframe for each, so far consumers switch up at once.
        let Worker {
            rooms,
            outputs,
            transports,
            ..
        } = self;
        for p in rooms.values_mut().flat_map(|r| r.producers.values_mut()) {
            if !p.piped_to.contains(node) {
                continue;
            }
            let n = p.pipe_stream_ids.len();
            for e in 0..n {
                if withheld(e, n, before) && !withheld(e, n, after) {
                    let reqs = p.request_keyframe(now, Some(e));
                    send_keyframe_requests(p, reqs, outputs, transports);
                }
            }
        }
    }
}
