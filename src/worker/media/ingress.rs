//! The packet path: STUN to ICE, RTP from publishers fanned out to consumers, RTCP from
//! clients (reports, NACK, PLI/FIR).

use super::*;

/// Entry point for every packet on the shared port.
pub fn handle_packet(w: &mut Worker, now: Instant, tuple: Tuple, data: &[u8]) {
    match classify(data) {
        PacketClass::Stun => handle_stun(w, now, tuple, data),
        PacketClass::Unknown => {
            w.counters
                .unclassified_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        class => {
            let Some(id) = w.by_tuple.get(&tuple).cloned() else {
                w.counters
                    .unknown_tuple_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            };
            let Some(t) = w.transports.get_mut(&id) else {
                return;
            };
            // DTLS and media are accepted only from the ICE-selected tuple.
            if t.ice.selected_tuple() != Some(tuple) {
                w.counters
                    .unknown_tuple_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            match class {
                PacketClass::Dtls => w.outputs.push_back(Output::DtlsFeed {
                    transport: id,
                    data: data.to_vec(),
                }),
                PacketClass::Rtp => handle_rtp(w, now, &id, data),
                PacketClass::Rtcp => handle_rtcp(w, now, &id, data),
                _ => {}
            }
        }
    }
}

fn handle_stun(w: &mut Worker, now: Instant, tuple: Tuple, data: &[u8]) {
    let id = crate::edge::stun::local_ufrag_of_request(data)
        .and_then(|u| w.by_ufrag.get(u))
        .cloned();
    let Some(id) = id else {
        w.counters.stun_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Some(t) = w.transports.get_mut(&id) else {
        return;
    };
    let mut out = std::mem::take(&mut w.scratch);
    let refused = match t.ice.handle_stun_bytes(now, tuple, data, &mut out) {
        Ok(IceOutcome::Success) => false,
        Ok(_) => true,
        Err(e) => {
            tracing::trace!(transport = %id, error = %e, "STUN check dropped");
            true
        }
    };
    if refused {
        w.counters.stun_dropped.fetch_add(1, Ordering::Relaxed);
    }
    // Error responses (401, 487, ...) are sent too: libwebrtc learns from them.
    if !out.is_empty() {
        w.outputs.push_back(Output::Transmit {
            tuple,
            data: bytes::Bytes::copy_from_slice(&out),
        });
    }
    out.clear();
    w.scratch = out;
    w.after_ice(now, &id);
}

fn handle_rtp(w: &mut Worker, now: Instant, id: &TransportId, data: &[u8]) {
    let Worker {
        transports,
        rooms,
        outputs,
        counters,
        scratch,
        pipes,
        ..
    } = w;
    let Some(t) = transports.get_mut(id) else {
        return;
    };
    let Some(ctx) = t.srtp_in.as_mut() else {
        return;
    };
    let plain = match ctx.decrypt_rtp(data) {
        Ok(p) => p,
        Err(_) => {
            counters.srtp_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    scratch.clear();
    scratch.extend_from_slice(&plain);
    let Ok(view) = RtpView::parse(&scratch[..]) else {
        counters.rtp_malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.rtp_received.fetch_add(1, Ordering::Relaxed);
    let ssrc = view.ssrc();
    let sref = match t.ssrc_table.get(&ssrc) {
        Some(r) => r.clone(),
        None => match learn_ssrc(t, rooms, &view) {
            Some(r) => r,
            None => {
                counters.rtp_unknown_ssrc.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
    };
    if let Some(twcc) = t.twcc_in.as_mut() {
        if let Some(seq) = view.transport_wide_seq(twcc.ext_id) {
            twcc.recorder.on_packet(now, seq);
            if twcc.media_ssrc == 0 {
                twcc.media_ssrc = ssrc;
            }
        }
    }
    let Some(room) = rooms.get_mut(&t.room) else {
        return;
    };
    let shed = pipes.shed.levels();
    forward(
        room, transports, outputs, counters, shed, now, &sref, scratch,
    );
}

/// Binds an unknown SSRC to a producer encoding by its MID and RID header extensions
/// (rid-based simulcast, as Chrome sends by default).
fn learn_ssrc(
    t: &mut Transport,
    rooms: &mut std::collections::HashMap<crate::ids::RoomId, Room>,
    view: &RtpView<&[u8]>,
) -> Option<StreamRef> {
    let room = rooms.get(&t.room)?;
    for pid in &t.producers {
        let p = room.producers.get(pid)?;
        let ext = |uri: &str| {
            p.rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id)
        };
        let mid = ext(URI_MID).and_then(|i| view.sdes_str(i));
        if mid.is_none() || mid != p.rtp_parameters.mid.as_deref() {
            continue;
        }
        let (rid, rtx) = match ext(URI_RID).and_then(|i| view.sdes_str(i)) {
            Some(r) => (Some(r), false),
            None => (ext(URI_RRID).and_then(|i| view.sdes_str(i)), true),
        };
        let encoding = match rid {
            Some(rid) => p
                .streams
                .iter()
                .position(|s| s.rid.as_deref() == Some(rid))?,
            None if p.streams.len() == 1 && p.streams[0].ssrc.is_none() => 0,
            None => continue,
        };
        let r = StreamRef {
            producer: pid.clone(),
            encoding,
            rtx,
        };
        t.ssrc_table.insert(view.ssrc(), r.clone());
        return Some(r);
    }
    None
}

/// Producer ingress and fan-out of one decrypted packet held in `pkt` (from a client
/// transport or a pipe).
#[allow(clippy::too_many_arguments)]
pub(in crate::worker) fn forward(
    room: &mut Room,
    transports: &mut Transports,
    outputs: &mut Outputs,
    counters: &crate::worker::WorkerCounters,
    shed: &std::collections::HashMap<NodeId, u8>,
    now: Instant,
    sref: &StreamRef,
    pkt: &mut Vec<u8>,
) {
    let Some(p) = room.producers.get_mut(&sref.producer) else {
        return;
    };
    let Some(stream) = p.streams.get_mut(sref.encoding) else {
        return;
    };
    if sref.rtx {
        // RFC 4588: restore the original packet (seq from the OSN, media payload type).
        let Ok(view) = RtpView::parse(&pkt[..]) else {
            return;
        };
        let apt = p
            .rtx_apt
            .get(view.payload_type() as usize)
            .copied()
            .unwrap_or(0xFF);
        let Some(media_ssrc) = stream.ssrc else {
            return;
        };
        if apt == 0xFF {
            return;
        }
        let mut restored = vec![0u8; pkt.len()];
        match crate::router::rtx::rtx_decode(&pkt[..], apt, media_ssrc, &mut restored) {
            Ok(n) => {
                restored.truncate(n);
                *pkt = restored;
            }
            Err(_) => return,
        }
    }
    let Ok(mut view) = RtpView::parse(&mut pkt[..]) else {
        return;
    };
    if stream.ssrc.is_none() {
        stream.ssrc = Some(view.ssrc());
    }
    let seq = view.sequence_number();
    // After an outage longer than a receiver would wait for a retransmission (the stream
    // came back through a new relay, or the sender's network did), the gap is not repaired:
    // its packets are too old to play and the upstream's buffer keeps them for up to
    // RTX_BUFFER_MAX_AGE, so NACKing would only replay seconds of stale media in a burst.
    if stream
        .last_packet
        .is_some_and(|t| now.saturating_duration_since(t) > crate::timing::NACK_MAX_OUTAGE)
    {
        stream.nack.reset();
    }
    stream.last_packet = Some(now);
    stream
        .stats
        .on_packet(now, seq, view.timestamp(), p.clock_rate, view.len());
    let _ = stream.nack.on_packet(now, seq);
    let mapped_pt = p
        .pt_map
        .get(view.payload_type() as usize)
        .copied()
        .unwrap_or(0xFF);
    if mapped_pt == 0xFF {
        return;
    }
    view.set_payload_type(mapped_pt);
    view.remap_extension_ids(&p.ext_map);
    let is_key = p
        .video_codec
        .is_some_and(|c| keyframe::is_keyframe(c, view.payload()));
    if is_key {
        p.keyframes.on_keyframe_received(view.ssrc());
    }
    if p.paused {
        return;
    }
    let len = view.len();
    let payload_range = view.payload_offset()..view.payload_offset() + view.payload_len();
    let encoding = sref.encoding;
    let layer = match p
        .video_codec
        .and_then(|c| keyframe::layer_info(c, view.payload()))
    {
        Some(i) => LayerPacket {
            spatial: encoding as u8,
            temporal: i.temporal_id,
            keyframe: i.keyframe,
            layer_sync: i.layer_sync,
        },
        None => LayerPacket {
            spatial: encoding as u8,
            ..LayerPacket::default()
        },
    };
    if !p.piped_to.is_empty() {
        pipe_out(p, now, encoding, &pkt[..len], outputs, counters, shed);
    }
    // Borrow the fan-out list out of the producer for the loop (no per-packet allocation).
    let consumers = std::mem::take(&mut p.consumers);
    let mut want_keyframe: Vec<usize> = Vec::new();
    for cid in &consumers {
        let Some(c) = room.consumers.get_mut(cid) else {
            continue;
        };
        let Some(t) = transports.get_mut(&c.transport) else {
            continue;
        };
        if !c.is_active() || !t.is_connected() {
            continue;
        }
        if let Some(sel) = c.selector.as_mut() {
            let decision = sel.should_forward(now, &layer);
            match decision {
                Forward::Ignore => {}
                Forward::Drop => {
                    c.rewriter.drop_input(seq);
                    if let (Some(v), Some(payload)) =
                        (c.vp8.as_mut(), pkt.get(payload_range.clone()))
                    {
                        v.drop_packet(payload);
                    }
                }
                Forward::Switch => {
                    c.rewriter.request_sync();
                    if let Some(v) = c.vp8.as_mut() {
                        v.sync();
                    }
                }
                Forward::Forward => {}
            }
            while let Some(ev) = sel.poll_event() {
                match ev {
                    SimulcastEvent::RequestKeyFrame { spatial } => {
                        want_keyframe.push(spatial as usize)
                    }
                    SimulcastEvent::LayersChanged { spatial, temporal } => {
                        if let Some(peer) = room.peers.get(&c.peer) {
                            let data = match (spatial, temporal) {
                                (Some(s), Some(t)) => {
                                    json!({"consumerId": c.id, "spatialLayer": s, "temporalLayer": t})
                                }
                                _ => {
                                    json!({"consumerId": c.id, "spatialLayer": null, "temporalLayer": null})
                                }
                            };
                            outputs.push_back(Output::ToPeer {
                                session: peer.session,
                                msg: ToPeer::Notify {
                                    method: "consumerLayersChanged",
                                    data,
                                },
                            });
                        }
                    }
                }
            }
            if matches!(decision, Forward::Ignore | Forward::Drop) {
                continue;
            }
        }
        c.scratch.clear();
        c.scratch.extend_from_slice(&pkt[..len]);
        let Ok(mut out) = RtpView::parse(&mut c.scratch[..]) else {
            continue;
        };
        if let Some(v) = c.vp8.as_mut() {
            match v.rewrite(out.payload_mut()) {
                Ok(true) => {}
                _ => continue,
            }
        }
        let Some(rw) = c.rewriter.rewrite(now, &mut out, c.payload_type) else {
            continue;
        };
        // Only the extensions this consumer negotiated, with its own MID (the producer's MID
        // would steer the packet to the wrong m-section of a BUNDLEd receiver).
        match &c.mid {
            Some((id, mid)) if out.extension(*id).is_some_and(|v| v.len() == mid.len()) => {
                out.remap_extension_ids(&c.ext_filter);
                if let Some(v) = out.extension_mut(*id) {
                    v.copy_from_slice(mid);
                }
            }
            Some(_) => out.remap_extension_ids(&c.ext_filter_no_mid),
            None => out.remap_extension_ids(&c.ext_filter),
        }
        if let Some(ext) = c.twcc_ext {
            let s = t.next_twcc_seq();
            out.set_transport_wide_seq(ext, s);
        }
        if c.nack {
            let _ = c.buffer.insert(now, rw.seq, &c.scratch);
        }
        c.send.on_packet_sent(now, rw.timestamp, len);
        let Some(tuple) = t.ice.selected_tuple() else {
            continue;
        };
        let Some(ctx) = t.srtp_out.as_mut() else {
            continue;
        };
        if let Ok(enc) = ctx.encrypt_rtp(&c.scratch) {
            counters.rtp_sent.fetch_add(1, Ordering::Relaxed);
            outputs.push_back(Output::Transmit { tuple, data: enc });
        }
    }
    let Some(p) = room.producers.get_mut(&sref.producer) else {
        return;
    };
    p.consumers = consumers;
    if !want_keyframe.is_empty() {
        want_keyframe.sort_unstable();
        want_keyframe.dedup();
        {
            for e in want_keyframe {
                let reqs = p.request_keyframe(now, Some(e));
                send_keyframe_requests(p, reqs, outputs, transports);
            }
        }
    }
}

fn handle_rtcp(w: &mut Worker, now: Instant, id: &TransportId, data: &[u8]) {
    let ntp_origin = w.ntp_origin(now);
    let Worker {
        transports,
        rooms,
        outputs,
        counters,
        ..
    } = w;
    let Some(t) = transports.get_mut(id) else {
        return;
    };
    let Some(ctx) = t.srtp_in.as_mut() else {
        return;
    };
    let plain = match ctx.decrypt_rtcp(data) {
        Ok(p) => p,
        Err(_) => {
            counters.srtp_failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Ok(items) = parse_compound(&plain) else {
        counters.rtcp_malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let room_id = t.room.clone();
    let Some(room) = rooms.get_mut(&room_id) else {
        return;
    };
    let mut resend: Vec<u16> = Vec::new();
    for item in items {
        let feedback = match &item {
            RtcpItem::Nack { .. } => Some(Feedback::Nack),
            RtcpItem::Pli { .. } => Some(Feedback::Pli),
            RtcpItem::Fir { .. } => Some(Feedback::Fir),
            _ => None,
        };
        if let Some(f) = feedback {
            counters.media.rtcp_feedback(f, Direction::In, 1);
        }
        match item {
            RtcpItem::SenderReport { report, .. } => {
                let Some(t) = transports.get(id) else {
                    continue;
                };
                if let Some(r) = t.ssrc_table.get(&report.ssrc) {
                    if let Some(s) = room
                        .producers
                        .get_mut(&r.producer)
                        .and_then(|p| p.streams.get_mut(r.encoding))
                    {
                        s.stats
                            .on_sender_report(now, rtcp_core::ntp_middle_32(report.ntp_time));
                    }
                }
            }
            RtcpItem::ReceiverReport { blocks, .. } => {
                for b in blocks {
                    let cid = transports
                        .get(id)
                        .and_then(|t| t.consumer_by_ssrc.get(&b.ssrc))
                        .cloned();
                    if let Some(c) = cid.and_then(|cid| room.consumers.get_mut(&cid)) {
                        c.send.on_receiver_report(now, &b, ntp_now(ntp_origin, now));
                        if let Some(rtt) = c.send.rtt() {
                            c.buffer.set_rtt(rtt);
                        }
                    }
                }
            }
            RtcpItem::Nack {
                media_ssrc, items, ..
            } => {
                let cid = transports
                    .get(id)
                    .and_then(|t| t.consumer_by_ssrc.get(&media_ssrc))
                    .cloned();
                let Some(c) = cid.and_then(|cid| room.consumers.get_mut(&cid)) else {
                    continue;
                };
                c.buffer.handle_nack(now, items.pairs(), &mut resend);
                let Some(t) = transports.get_mut(id) else {
                    continue;
                };
                let Some(tuple) = t.ice.selected_tuple() else {
                    continue;
                };
                for seq in resend.iter().copied() {
                    let Some(orig) = c.buffer.get(now, seq) else {
                        continue;
                    };
                    let mut out = vec![0u8; orig.len() + 2];
                    let pkt: &[u8] = match c.rtx.as_mut() {
                        Some(enc) => match enc.encode(orig, &mut out) {
                            Ok(n) => &out[..n],
                            Err(_) => continue,
                        },
                        None => orig,
                    };
                    if let Some(ctx) = t.srtp_out.as_mut() {
                        if let Ok(enc) = ctx.encrypt_rtp(pkt) {
                            counters
                                .media
                                .retransmissions
                                .fetch_add(1, Ordering::Relaxed);
                            outputs.push_back(Output::Transmit { tuple, data: enc });
                        }
                    }
                }
            }
            RtcpItem::Pli { media_ssrc, .. } | RtcpItem::Fir { media_ssrc, .. } => {
                let cid = transports
                    .get(id)
                    .and_then(|t| t.consumer_by_ssrc.get(&media_ssrc))
                    .cloned();
                let Some(c) = cid.and_then(|cid| room.consumers.get(&cid)) else {
                    continue;
                };
                let enc = c.forwarded_encoding();
                let pid = c.producer.clone();
                if let Some(p) = room.producers.get_mut(&pid) {
                    let reqs = p.request_keyframe(now, enc);
                    send_keyframe_requests(p, reqs, outputs, transports);
                }
            }
            _ => {}
        }
    }
}
