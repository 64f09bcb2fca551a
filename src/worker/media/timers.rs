//! Periodic media work: receiver and sender reports, NACK retries, held keyframe requests,
//! simulcast layer timers, score notifications.

use super::*;

/// Periodic media work of one room.
pub fn room_timeout(
    room: &mut Room,
    now: Instant,
    ntp_origin: (Instant, u64),
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut seqs: Vec<u16> = Vec::new();
    let mut reported = false;
    for p in room.producers.values_mut() {
        buf.clear();
        if let Source::Pipe(_) = p.source {
            reported |= pipe_producer_timeout(p, now, &mut seqs, outputs);
            continue;
        }
        let mut feedback = FeedbackCount::default();
        // NACKs for missing packets.
        for s in p.streams.iter_mut() {
            let Some(ssrc) = s.ssrc else { continue };
            seqs.clear();
            s.nack.poll_nacks(now, None, &mut seqs);
            // Bounded so one compound packet stays well under the MTU.
            for chunk in seqs.chunks(64) {
                rtcp_core::write_nack(&mut buf, RTCP_SENDER_SSRC, ssrc, chunk);
            }
            feedback.nacks(seqs.chunks(64).len());
        }
        // Held keyframe requests whose throttle window ended.
        while let Some(r) = p.keyframes.poll_request(now) {
            feedback.keyframe_request(r.kind);
            match r.kind {
                KeyFrameRequestKind::Pli => {
                    rtcp_core::write_pli(&mut buf, RTCP_SENDER_SSRC, r.media_ssrc)
                }
                KeyFrameRequestKind::Fir => {
                    rtcp_core::write_fir(&mut buf, RTCP_SENDER_SSRC, r.media_ssrc, r.fir_seq)
                }
            }
        }
        if now >= p.next_report {
            p.next_report = now + RTCP_REPORT_INTERVAL;
            reported = true;
            let mut blocks = Vec::new();
            for s in p.streams.iter_mut() {
                if let Some(ssrc) = s.ssrc {
                    if let Some(b) = s.stats.report_block(now, ssrc) {
                        blocks.push(b);
                    }
                }
            }
            let mut rr = Vec::with_capacity(128);
            rtcp_core::write_receiver_reports(&mut rr, RTCP_SENDER_SSRC, &blocks);
            rr.extend_from_slice(&buf);
            buf = rr;
        }
        if let (false, Some(t)) = (buf.is_empty(), p.transport()) {
            // A compound packet must begin with a report (RFC 3550 6.1); reduced-size RTCP
            // (RFC 5506, negotiated by WebRTC) allows feedback alone.
            if send_rtcp(transports, t, &buf, outputs) {
                feedback.count_out(outputs);
            }
        }
    }
    // Scores move with RTCP reports: evaluate them on the same cadence.
    if reported {
        notify_scores(room, now, outputs);
    }
    simulcast_timeouts(room, now, outputs, transports);
    for c in room.consumers.values_mut() {
        if now < c.next_report {
            continue;
        }
        c.next_report =
            now + RTCP_REPORT_INTERVAL + Duration::from_millis(rand::rng().random_range(0..100));
        if c.send.packets_sent() == 0 {
            continue;
        }
        buf.clear();
        if let Some(sr) = c.send.sender_report(now, ntp_now(ntp_origin, now), c.ssrc) {
            let _ = rtcp_core::write_sender_report(&mut buf, &sr, &[]);
            send_rtcp(transports, &c.transport, &buf, outputs);
        }
    }
}

/// Periodic work of a piped producer (far side): NACKs go back over the pipe as RTCP
/// datagrams on the encoding's stream, held keyframe requests as control messages. Receiver
/// reports are not sent: the origin measures its publisher itself. Returns whether scores are
/// due for evaluation.
fn pipe_producer_timeout(
    p: &mut Producer,
    now: Instant,
    seqs: &mut Vec<u16>,
    outputs: &mut Outputs,
) -> bool {
    let Source::Pipe(pipe) = &p.source else {
        return false;
    };
    for (i, s) in p.streams.iter_mut().enumerate() {
        let Some(ssrc) = s.ssrc else { continue };
        seqs.clear();
        s.nack.poll_nacks(now, None, seqs);
        let Some(&sid) = pipe.stream_ids.get(i) else {
            continue;
        };
        if seqs.is_empty() {
            continue;
        }
        let mut rtcp = Vec::with_capacity(64);
        for chunk in seqs.chunks(64) {
            rtcp_core::write_nack(&mut rtcp, RTCP_SENDER_SSRC, ssrc, chunk);
        }
        let mut dg = Vec::with_capacity(rtcp.len() + 9);
        if write_datagram(DatagramKind::RtcpFromFar, sid, &rtcp, &mut dg).is_ok() {
            outputs.push_back(Output::PipeDatagram {
                node: pipe.node.clone(),
                data: dg.into(),
            });
            outputs.counters.media.pipe_feedback(
                PipeFeedback::Nack,
                Direction::Out,
                seqs.chunks(64).len() as u64,
            );
        }
    }
    while let Some(r) = p.keyframes.poll_request(now) {
        send_pipe_keyframe_request(p, pipe, Some(r.media_ssrc), outputs);
    }
    if now >= p.next_report {
        p.next_report = now + RTCP_REPORT_INTERVAL;
        return true;
    }
    false
}

/// Runs simulcast selectors' timers (layer inactivity, keyframe request retries).
fn simulcast_timeouts(
    room: &mut Room,
    now: Instant,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    let Room {
        producers,
        consumers,
        peers,
        ..
    } = room;
    for c in consumers.values_mut() {
        let Some(sel) = c.selector.as_mut() else {
            continue;
        };
        if sel.poll_timeout().is_none_or(|t| t > now) {
            continue;
        }
        sel.handle_timeout(now);
        selector_events(c, producers, peers, now, outputs, transports);
    }
}

/// Acts on what a consumer's layer selector asks: keyframe requests to the producer, layer
/// changes to the consuming peer.
fn selector_events(
    c: &mut Consumer,
    producers: &mut std::collections::HashMap<ProducerId, Producer>,
    peers: &std::collections::HashMap<PeerId, super::super::room::Peer>,
    now: Instant,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    let Some(sel) = c.selector.as_mut() else {
        return;
    };
    while let Some(ev) = sel.poll_event() {
        match ev {
            SimulcastEvent::RequestKeyFrame { spatial } => {
                if let Some(p) = producers.get_mut(&c.producer) {
                    let reqs = p.request_keyframe(now, Some(spatial as usize));
                    send_keyframe_requests(p, reqs, outputs, transports);
                }
            }
            SimulcastEvent::LayersChanged { spatial, temporal } => {
                if let Some(peer) = peers.get(&c.peer) {
                    outputs.push_back(Output::ToPeer {
                        session: peer.session,
                        msg: ToPeer::Notify {
                            method: "consumerLayersChanged",
                            data: json!({"consumerId": c.id, "spatialLayer": spatial, "temporalLayer": temporal}),
                        },
                    });
                }
            }
        }
    }
}

/// Far side: node `from` withholds the top `shed` simulcast layers of what it pipes here
/// ([`ControlMessage::ShedLayers`]). The simulcast consumers of the pipe producers it feeds
/// stop targeting those layers at once (0 lifts the limit).
pub(in crate::worker) fn limit_piped_layers(
    room: &mut Room,
    now: Instant,
    from: &NodeId,
    shed: u8,
    outputs: &mut Outputs,
    transports: &mut Transports,
) {
    let Room {
        producers,
        consumers,
        peers,
        ..
    } = room;
    for c in consumers.values_mut() {
        let Some(p) = producers.get(&c.producer) else {
            continue;
        };
        if !matches!(&p.source, Source::Pipe(pipe) if pipe.node == *from) {
            continue;
        }
        let n = p.streams_len();
        let Some(sel) = c.selector.as_mut() else {
            continue;
        };
        let limit = (shed > 0).then(|| {
            let allowed = n.saturating_sub(usize::from(shed)).max(1);
            u8::try_from(allowed - 1).unwrap_or(u8::MAX)
        });
        sel.set_spatial_limit(now, limit);
        selector_events(c, producers, peers, now, outputs, transports);
    }
}

/// Sends `producerScore` and `consumerScore` when scores changed since the last report.
fn notify_scores(room: &mut Room, now: Instant, outputs: &mut Outputs) {
    let Room {
        producers,
        consumers,
        peers,
        ..
    } = room;
    for p in producers.values_mut() {
        let scores = p.scores(now);
        let changed = scores != p.last_scores;
        if changed {
            for node in &p.piped_to {
                outputs.push_back(Output::PipeControl {
                    node: node.clone(),
                    msg: ControlMessage::ProducerScore {
                        producer_id: p.id.clone(),
                        scores: scores.clone(),
                    },
                });
            }
            if let Some(peer) = peers.get(&p.peer) {
                outputs.push_back(Output::ToPeer {
                    session: peer.session,
                    msg: ToPeer::Notify {
                        method: "producerScore",
                        data: json!({"producerId": p.id, "score": p.scores_json(&scores)}),
                    },
                });
            }
        }
        let producer_score = match p.consumers.first().and_then(|c| consumers.get(c)) {
            Some(c) if c.simulcast => c
                .current_encoding()
                .and_then(|e| scores.get(e))
                .copied()
                .unwrap_or(0),
            _ => scores.iter().copied().max().unwrap_or(0),
        };
        for cid in &p.consumers {
            let Some(c) = consumers.get_mut(cid) else {
                continue;
            };
            let own = if c.send.packets_sent() > 0 {
                c.send.score()
            } else {
                0
            };
            let pscore = if c.simulcast {
                c.current_encoding()
                    .and_then(|e| scores.get(e))
                    .copied()
                    .unwrap_or(producer_score)
            } else {
                producer_score
            };
            if c.last_score == Some((own, pscore)) && !changed {
                continue;
            }
            c.last_score = Some((own, pscore));
            if let Some(peer) = peers.get(&c.peer) {
                outputs.push_back(Output::ToPeer {
                    session: peer.session,
                    msg: ToPeer::Notify {
                        method: "consumerScore",
                        data: json!({"consumerId": c.id, "score": {"score": own, "producerScore": pscore, "producerScores": scores}}),
                    },
                });
            }
        }
        p.last_scores = scores;
    }
}
