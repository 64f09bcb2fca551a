//! Tests of the pipe wire format.

use super::*;
use crate::router::rtp_parameters::{
    CodecParameters, ParameterValue, RtcpFeedback, RtpCodecParameters, RtpEncodingParameters,
    RtpEncodingParametersRtx, RtpHeaderExtensionParameters,
};

// ----- datagrams -----

fn dgram(kind: DatagramKind, stream_id: u64, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_datagram(kind, stream_id, packet, &mut out).expect("valid datagram");
    out
}

#[test]
fn datagram_varint_layouts_are_byte_exact() {
    let cases: &[(u64, &[u8])] = &[
        (0, &[0x00]),
        (37, &[0x25]),
        (63, &[0x3f]),
        (64, &[0x40, 0x40]),
        (15293, &[0x7b, 0xbd]),
        (16383, &[0x7f, 0xff]),
        (16384, &[0x80, 0x00, 0x40, 0x00]),
        (494_878_333, &[0x9d, 0x7f, 0x3e, 0x7d]),
        ((1 << 30) - 1, &[0xbf, 0xff, 0xff, 0xff]),
        (1 << 30, &[0xc0, 0, 0, 0, 0x40, 0, 0, 0]),
        (
            151_288_809_941_952_652,
            &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
        ),
        (MAX_STREAM_ID, &[0xff; 8]),
    ];
    for &(id, varint) in cases {
        let mut expected = vec![0x10];
        expected.extend_from_slice(varint);
        expected.extend_from_slice(&[0x80, 0x60]);
        let bytes = dgram(DatagramKind::Rtp, id, &[0x80, 0x60]);
        assert_eq!(bytes, expected, "stream id {id}");
        assert_eq!(datagram_header_len(id), Ok(1 + varint.len()));
        let d = parse_datagram(&bytes).expect("parses");
        assert_eq!(
            (d.kind, d.stream_id, d.packet),
            (DatagramKind::Rtp, id, &[0x80, 0x60][..])
        );
    }
}

#[test]
fn datagram_kinds_have_their_header_byte() {
    for (kind, byte) in [
        (DatagramKind::Rtp, 0x10),
        (DatagramKind::RtcpFromOrigin, 0x11),
        (DatagramKind::RtcpFromFar, 0x12),
        (DatagramKind::Probe, 0x13),
    ] {
        assert_eq!(dgram(kind, 5, &[0xaa]), [byte, 0x05, 0xaa]);
        assert_eq!(
            parse_datagram(&[byte, 0x05, 0xaa]).map(|d| d.kind),
            Ok(kind)
        );
    }
}

#[test]
fn header_encodes_into_a_slice_in_front_of_the_packet() {
    let mut buf = [0u8; 16];
    let n = encode_datagram_header(DatagramKind::RtcpFromFar, 300, &mut buf).expect("fits");
    assert_eq!(&buf[..n], &[0x12, 0x41, 0x2c]);
    buf[n] = 0x81;
    let d = parse_datagram(&buf[..n + 1]).expect("parses");
    assert_eq!((d.stream_id, d.packet), (300, &[0x81][..]));
    assert_eq!(
        encode_datagram_header(DatagramKind::Rtp, 1 << 30, &mut buf[..8]),
        Err(WireError::BufferTooSmall {
            needed: 9,
            available: 8
        })
    );
}

#[test]
fn non_minimal_varints_are_accepted() {
    // 5 written in 2, 4 and 8 bytes.
    for varint in [
        &[0x40, 0x05][..],
        &[0x80, 0, 0, 5],
        &[0xc0, 0, 0, 0, 0, 0, 0, 5],
    ] {
        let mut bytes = vec![0x10];
        bytes.extend_from_slice(varint);
        bytes.push(0x80);
        assert_eq!(parse_datagram(&bytes).map(|d| d.stream_id), Ok(5));
    }
}

#[test]
fn malformed_datagrams_are_refused() {
    use WireError::*;
    let cases: &[(&[u8], WireError)] = &[
        (&[], EmptyDatagram),
        (&[0x00, 0x01, 0x80], UnsupportedVersion { version: 0 }),
        (&[0x20, 0x01, 0x80], UnsupportedVersion { version: 2 }),
        (&[0xf0, 0x01, 0x80], UnsupportedVersion { version: 15 }),
        (&[0x14, 0x01, 0x80], UnknownKind { kind: 4 }),
        (&[0x1f, 0x01, 0x80], UnknownKind { kind: 15 }),
        (&[0x10], TruncatedVarint),
        (&[0x10, 0x40], TruncatedVarint),
        (&[0x10, 0x80, 0, 0], TruncatedVarint),
        (&[0x10, 0xc0, 0, 0, 0, 0, 0, 0], TruncatedVarint),
        (&[0x10, 0x05], EmptyPacket),
        (&[0x10, 0xc0, 0, 0, 0, 0, 0, 0, 5], EmptyPacket),
    ];
    for (bytes, err) in cases {
        assert_eq!(parse_datagram(bytes).as_ref(), Err(err), "{bytes:02x?}");
    }
}

#[test]
fn packet_length_limit_is_enforced_both_ways() {
    let mut bytes = vec![0x10, 0x01];
    bytes.resize(2 + DEFAULT_MAX_PACKET, 0x80);
    assert_eq!(parse_datagram(&bytes).map(|d| d.packet.len()), Ok(1400));
    bytes.push(0);
    assert_eq!(
        parse_datagram(&bytes),
        Err(WireError::PacketTooLarge {
            len: 1401,
            max: 1400
        })
    );
    assert_eq!(
        parse_datagram_with_max(&bytes, 1401).map(|d| d.packet.len()),
        Ok(1401)
    );
    assert_eq!(
        parse_datagram_with_max(&[0x10, 0x01, 1, 2, 3], 2),
        Err(WireError::PacketTooLarge { len: 3, max: 2 })
    );

    let mut out = vec![0xee];
    let big = vec![0u8; 1401];
    assert_eq!(
        write_datagram(DatagramKind::Rtp, 1, &big, &mut out),
        Err(WireError::PacketTooLarge {
            len: 1401,
            max: 1400
        })
    );
    assert_eq!(
        write_datagram(DatagramKind::Rtp, 1, &[], &mut out),
        Err(WireError::EmptyPacket)
    );
    assert_eq!(
        write_datagram(DatagramKind::Rtp, MAX_STREAM_ID + 1, &[1], &mut out),
        Err(WireError::StreamIdOutOfRange {
            stream_id: MAX_STREAM_ID + 1
        })
    );
    assert_eq!(out, [0xee], "out untouched on error");
    write_datagram_with_max(DatagramKind::Rtp, 1, &big, 1401, &mut out).expect("fits");
    assert_eq!(out.len(), 1 + 2 + 1401, "appended after existing bytes");
}

// ----- control messages -----

fn rtp_parameters() -> RtpParameters {
    let mut vp8 = CodecParameters::default();
    vp8.0.insert(
        "x-google-start-bitrate".into(),
        ParameterValue::Integer(1000),
    );
    vp8.0.insert("ratio".into(), ParameterValue::Float(1.5));
    vp8.0.insert(
        "profile-level-id".into(),
        ParameterValue::String("42e01f".into()),
    );
    let mut rtx = CodecParameters::default();
    rtx.0.insert("apt".into(), ParameterValue::Integer(96));
    RtpParameters {
        mid: Some("1".into()),
        codecs: vec![
            RtpCodecParameters {
                mime_type: "video/VP8".into(),
                payload_type: 96,
                clock_rate: 90000,
                channels: None,
                parameters: vp8,
                rtcp_feedback: vec![RtcpFeedback::new("nack", "pli")],
            },
            RtpCodecParameters {
                mime_type: "video/rtx".into(),
                payload_type: 97,
                clock_rate: 90000,
                channels: None,
                parameters: rtx,
                rtcp_feedback: vec![],
            },
        ],
        header_extensions: vec![RtpHeaderExtensionParameters {
            uri: "urn:ietf:params:rtp-hdrext:sdes:mid".into(),
            id: 1,
            encrypt: false,
            parameters: CodecParameters::default(),
        }],
        encodings: (0..3)
            .map(|i| RtpEncodingParameters {
                ssrc: Some(1000 + i),
                rid: Some(format!("r{i}")),
                rtx: Some(RtpEncodingParametersRtx { ssrc: 2000 + i }),
                scale_resolution_down_by: Some(f64::from(4 >> i)),
                ..Default::default()
            })
            .collect(),
        rtcp: Default::default(),
    }
}

fn peer(name: &str) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId::from(name),
        display_name: format!("{name} é"),
        device: r#"{"flag":"chrome","name":"Chrome","version":"120"}"#.into(),
        producers: vec![
            ProducerInfo {
                producer_id: ProducerId::from("p-audio"),
                kind: MediaKind::Audio,
                paused: false,
                rtp_parameters: Default::default(),
                app_data: "{}".into(),
            },
            ProducerInfo {
                producer_id: ProducerId::from("p-video"),
                kind: MediaKind::Video,
                paused: true,
                rtp_parameters: crate::router::rtp_parameters::RtpParameters {
                    mid: Some("1".into()),
                    ..Default::default()
                },
                app_data: r#"{"share":true}"#.into(),
            },
        ],
    }
}

/// One message of every type.
fn samples() -> Vec<ControlMessage> {
    use ControlMessage::*;
    let r = || RoomId::from("room-1");
    vec![
        Hello(super::Hello {
            protocol_version: PROTOCOL_VERSION,
            node_id: NodeId::from("node-a"),
            cluster: "prod".into(),
            software: "pipemesh 0.1.0".into(),
        }),
        HelloAck {
            protocol_version: 1,
            node_id: NodeId::from("node-b"),
        },
        Refuse {
            code: RefuseCode::WrongCluster,
            reason: "cluster".into(),
        },
        Goodbye {
            reason: "draining".into(),
        },
        Subscribe {
            request_id: 7,
            room_id: r(),
            producer_id: p(),
        },
        Subscribed {
            request_id: 7,
            producer_id: p(),
            stream_ids: vec![1, 2, MAX_STREAM_ID],
            kind: MediaKind::Video,
            rtp_parameters: rtp_parameters(),
            paused: true,
            scores: vec![10, 9, 0],
            path: vec![NodeId::from("n1"), NodeId::from("n3")],
        },
        SubscribeFailed {
            request_id: u64::MAX,
            producer_id: p(),
            reason: "no such producer".into(),
        },
        Unsubscribe { producer_id: p() },
        ProducerPaused { producer_id: p() },
        ProducerResumed { producer_id: p() },
        ProducerClosed { producer_id: p() },
        ProducerScore {
            producer_id: p(),
            scores: vec![3, 7],
        },
        KeyFrameRequest {
            producer_id: p(),
            encoding: Some(2),
        },
        ShedLayers { layers: 2 },
        PathChanged {
            producer_id: p(),
            path: vec![NodeId::from("a"), NodeId::from("b")],
        },
        Ping { nonce: 0 },
        Pong { nonce: u64::MAX },
        RoomWatch { room_id: r() },
        RoomUnwatch { room_id: r() },
        RoomPeers {
            room_id: r(),
            peers: vec![peer("alice"), peer("bob")],
        },
        PeerJoined {
            room_id: r(),
            peer: peer("carol"),
        },
        PeerLeft {
            room_id: r(),
            peer_id: PeerId::from("carol"),
        },
        ProducerAdded {
            room_id: r(),
            peer_id: PeerId::from("alice"),
            producer: peer("alice").producers[1].clone(),
        },
        ProducerRemoved {
            room_id: r(),
            peer_id: PeerId::from("alice"),
            producer_id: p(),
        },
    ]
}

fn frame(msg: &ControlMessage) -> Vec<u8> {
    let mut out = Vec::new();
    encode_control(msg, &mut out).expect("encodes");
    out
}

/// A frame around a hand-made body.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn every_message_round_trips() {
    let samples = samples();
    let mut names: Vec<_> = samples.iter().map(|m| m.type_name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), MESSAGE_TYPES.len(), "one sample per type");
    for msg in &samples {
        let bytes = frame(msg);
        let body = &bytes[4..];
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
            body.len()
        );
        assert_eq!(peek_type_name(body), Some(msg.type_name()));
        assert!(MESSAGE_TYPES.contains(&msg.type_name()));
        let mut dec = ControlDecoder::default();
        assert_eq!(dec.push(&bytes), bytes.len());
        assert_eq!(
            dec.next().as_ref(),
            Ok(&Some(msg.clone())),
            "{}",
            msg.type_name()
        );
        assert_eq!(dec.next(), Ok(None));
        assert_eq!(dec.buffered(), 0);
    }
    // The other shape of an optional field.
    let all = ControlMessage::KeyFrameRequest {
        producer_id: ProducerId::from("p"),
        encoding: None,
    };
    assert_eq!(decode_control_body(&frame(&all)[4..]), Ok(all));
}

#[test]
fn ping_frame_is_byte_exact_with_named_fields() {
    let bytes = frame(&ControlMessage::Ping { nonce: 7 });
    let mut expected = vec![0, 0, 0, 14, 0x81, 0xa4];
    expected.extend_from_slice(b"Ping");
    expected.extend_from_slice(&[0x81, 0xa5]);
    expected.extend_from_slice(b"nonce");
    expected.push(0x07);
    assert_eq!(bytes, expected);
}

/// A message type or field from a newer version, for forward-compatibility tests.
#[derive(Serialize)]
enum Future {
    Ping { nonce: u64, sent_at_us: u64 },
    Teleport { to: String },
    Refuse { code: String, reason: String },
}

fn future_body(msg: &Future) -> Vec<u8> {
    let mut out = Vec::new();
    rmp_serde::encode::write_named(&mut out, msg).expect("encodes");
    out
}

#[test]
fn unknown_fields_and_refusal_codes_from_newer_peers_decode() {
    let body = future_body(&Future::Ping {
        nonce: 9,
        sent_at_us: 123,
    });
    assert_eq!(
        decode_control_body(&body),
        Ok(ControlMessage::Ping { nonce: 9 })
    );
    let body = future_body(&Future::Refuse {
        code: "TooManyLinks".into(),
        reason: "x".into(),
    });
    assert_eq!(
        decode_control_body(&body),
        Ok(ControlMessage::Refuse {
            code: RefuseCode::Other,
            reason: "x".into()
        })
    );
}

#[test]
fn unknown_message_is_skipped_and_the_next_one_decodes() {
    let mut stream = raw_frame(&future_body(&Future::Teleport { to: "mars".into() }));
    stream.extend(raw_frame(&[0x81, 0xa4, b'P', b'i', b'n', b'g', 0xa1, b'x'])); // bad field
    stream.extend(raw_frame(&[])); // empty body
    stream.extend(raw_frame(&[0xc1])); // never-used MessagePack marker
    let mut trailing = frame(&ControlMessage::Pong { nonce: 1 })[4..].to_vec();
    trailing.push(0xc0);
    stream.extend(raw_frame(&trailing));
    stream.extend(frame(&ControlMessage::Ping { nonce: 42 }));

    let mut dec = ControlDecoder::default();
    assert_eq!(dec.push(&stream), stream.len());
    assert_eq!(
        dec.next(),
        Err(WireError::UnknownMessage {
            type_name: "Teleport".into()
        })
    );
    for expected_type in [Some("Ping"), None, None, Some("Pong")] {
        match dec.next() {
            Err(WireError::MalformedMessage { type_name, .. }) => {
                assert_eq!(type_name.as_deref(), expected_type);
            }
            other => panic!("expected a malformed message, got {other:?}"),
        }
    }
    assert_eq!(dec.next(), Ok(Some(ControlMessage::Ping { nonce: 42 })));
    assert_eq!(dec.next(), Ok(None));
    assert!(!dec.is_failed());
}

#[test]
fn long_unknown_type_names_are_cut() {
    let name = "é".repeat(40); // 80 bytes
    let mut body = vec![0x81, 0xd9, 80];
    body.extend_from_slice(name.as_bytes());
    body.push(0xc0);
    let Err(WireError::UnknownMessage { type_name }) = decode_control_body(&body) else {
        panic!("expected an unknown message");
    };
    assert_eq!(type_name, "é".repeat(32));
}

#[test]
fn frames_arriving_byte_by_byte_decode_once_complete() {
    let msgs = samples();
    let mut stream = Vec::new();
    for m in &msgs {
        encode_control(m, &mut stream).expect("encodes");
    }
    let mut dec = ControlDecoder::default();
    let mut got = Vec::new();
    for &b in &stream {
        assert_eq!(dec.push(&[b]), 1);
        while let Some(m) = dec.next().expect("valid stream") {
            got.push(m);
        }
    }
    assert_eq!(got, msgs);
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn oversize_length_is_fatal_and_sticky() {
    let mut dec = ControlDecoder::default();
    let len = (MAX_CONTROL_MESSAGE + 1) as u32;
    dec.push(&len.to_be_bytes());
    let fatal = WireError::FrameTooLarge {
        len: u64::from(len),
        max: MAX_CONTROL_MESSAGE,
    };
    assert_eq!(dec.next(), Err(fatal.clone()));
    assert!(!fatal.is_skippable());
    assert!(dec.is_failed());
    assert_eq!(dec.push(&frame(&ControlMessage::Ping { nonce: 1 })), 0);
    assert_eq!(dec.next(), Err(fatal));

    // A frame of exactly the maximum is waited for, not refused.
    let mut dec = ControlDecoder::new(16);
    dec.push(&[0, 0, 0, 16, 0x81]);
    assert_eq!(dec.next(), Ok(None));
    let mut dec = ControlDecoder::new(16);
    dec.push(&[0, 0, 0, 17]);
    assert!(matches!(
        dec.next(),
        Err(WireError::FrameTooLarge { len: 17, max: 16 })
    ));
}

#[test]
fn decoder_buffer_is_bounded() {
    let ping = frame(&ControlMessage::Ping { nonce: 5 }); // 18 bytes
    let stream: Vec<u8> = ping.iter().copied().cycle().take(18 * 10).collect();
    let mut dec = ControlDecoder::new(14);
    let mut rest = &stream[..];
    let mut count = 0;
    while !rest.is_empty() {
        let n = dec.push(rest);
        assert!(n > 0, "room after draining");
        assert!(dec.buffered() <= 18);
        rest = &rest[n..];
        while let Some(m) = dec.next().expect("valid") {
            assert_eq!(m, ControlMessage::Ping { nonce: 5 });
            count += 1;
        }
    }
    assert_eq!(count, 10);
}

#[test]
fn deep_nesting_is_refused_without_recursing() {
    // {"Ping": [[[[...]]]]} and {"Teleport": [[[[...]]]]}, 100k levels deep.
    for name in [&b"Ping"[..], b"Teleport"] {
        let mut body = vec![0x81, 0xa0 | name.len() as u8];
        body.extend_from_slice(name);
        body.resize(body.len() + 100_000, 0x91);
        let err = decode_control_body(&body).expect_err("malformed");
        assert!(err.is_skippable(), "{err}");
    }
    // An unknown field is skipped up to our depth limit, well below rmp-serde's 1024.
    let ping_with_extra = |depth: usize| {
        let mut body = vec![0x81, 0xa4, b'P', b'i', b'n', b'g', 0x82, 0xa5];
        body.extend_from_slice(b"nonce");
        body.extend_from_slice(&[0x01, 0xa1, b'x']);
        body.extend(std::iter::repeat_n(0x91, depth));
        body.push(0xc0);
        decode_control_body(&body)
    };
    assert_eq!(ping_with_extra(20), Ok(ControlMessage::Ping { nonce: 1 }));
    assert!(matches!(
        ping_with_extra(MAX_CONTROL_DEPTH),
        Err(WireError::MalformedMessage { .. })
    ));
}

#[test]
fn oversize_message_is_not_encoded() {
    let msg = ControlMessage::Goodbye {
        reason: "x".repeat(MAX_CONTROL_MESSAGE),
    };
    let mut out = vec![1, 2, 3];
    assert!(matches!(
        encode_control(&msg, &mut out),
        Err(WireError::MessageTooLarge {
            max: MAX_CONTROL_MESSAGE,
            ..
        })
    ));
    assert_eq!(out, [1, 2, 3]);
}

/// xorshift64*, so the "random" tests are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let seed = 0x5eed_f00d_91be;
    let mut rng = Rng(seed);
    let valid: Vec<Vec<u8>> = samples().iter().map(frame).collect();
    let (mut datagrams_ok, mut messages_ok, mut skipped) = (0, 0, 0);
    for _ in 0..20_000 {
        // Either pure noise or a valid frame with a few bytes flipped.
        let mut bytes = if rng.below(2) == 0 {
            (0..rng.below(64))
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>()
        } else {
            valid[rng.below(valid.len())].clone()
        };
        for _ in 0..rng.below(4) {
            if !bytes.is_empty() {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
        }
        if let Ok(d) = parse_datagram(&bytes) {
            datagrams_ok += 1;
            assert!(!d.packet.is_empty() && d.packet.len() <= DEFAULT_MAX_PACKET);
        }
        let mut dec = ControlDecoder::new(4096);
        let chunk = 1 + rng.below(16);
        'feed: for piece in bytes.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let n = dec.push(piece);
                piece = &piece[n..];
                loop {
                    match dec.next() {
                        Ok(Some(_)) => messages_ok += 1,
                        Ok(None) => break,
                        Err(e) if e.is_skippable() => skipped += 1,
                        Err(_) => break 'feed,
                    }
                }
                assert!(dec.buffered() <= 4 + 4096);
                if n == 0 {
                    break 'feed;
                }
            }
        }
    }
    // The mutations must reach every outcome, or this test proves little.
    assert!(datagrams_ok > 100, "seed {seed:#x}: {datagrams_ok}");
    assert!(messages_ok > 100, "seed {seed:#x}: {messages_ok}");
    assert!(skipped > 100, "seed {seed:#x}: {skipped}");
}

// ----- hello -----

fn hello(version: u16, node: &str, cluster: &str) -> super::Hello {
    super::Hello {
        protocol_version: version,
        node_id: NodeId::from(node),
        cluster: cluster.into(),
        software: "test".into(),
    }
}

#[test]
fn check_hello_decisions() {
    let check = |h: &super::Hello, expected: Option<&str>| {
        check_hello(PROTOCOL_VERSION, "prod", expected, h).map_err(|r| r.code)
    };
    assert_eq!(check(&hello(1, "b", "prod"), None), Ok(()));
    assert_eq!(check(&hello(1, "b", "prod"), Some("b")), Ok(()));
    assert_eq!(
        check(&hello(7, "b", "prod"), Some("b")),
        Ok(()),
        "newer speaks down"
    );
    assert_eq!(negotiated_version(PROTOCOL_VERSION, 7), PROTOCOL_VERSION);
    assert_eq!(
        check(&hello(0, "b", "prod"), None),
        Err(RefuseCode::BadHello)
    );
    assert_eq!(
        check(&hello(1, "", "prod"), None),
        Err(RefuseCode::BadHello)
    );
    assert_eq!(check(&hello(1, "b", ""), None), Err(RefuseCode::BadHello));
    assert_eq!(
        check(&hello(1, "b", "staging"), None),
        Err(RefuseCode::WrongCluster)
    );
    assert_eq!(
        check(&hello(1, "b", "prod"), Some("c")),
        Err(RefuseCode::WrongNodeId)
    );
    assert_eq!(
        check(&hello(1, "b", "Prod"), None),
        Err(RefuseCode::WrongCluster)
    );
    // Below the minimum once negotiated (only reachable with a local version under it).
    assert_eq!(
        check_hello(0, "prod", None, &hello(1, "b", "prod")).map_err(|r| r.code),
        Err(RefuseCode::UnsupportedVersion)
    );

    let refusal = check_hello(1, "prod", Some("c"), &hello(1, "b", "prod")).unwrap_err();
    assert!(refusal.reason.contains("\"b\"") && refusal.reason.contains("\"c\""));
    let msg = ControlMessage::from(refusal.clone());
    assert_eq!(decode_control_body(&frame(&msg)[4..]), Ok(msg));
    assert!(refusal.to_string().starts_with("WrongNodeId"));
}

/// `Subscribed` as builds before relaying wrote it (no `path`).
#[derive(Serialize)]
enum Before {
    Subscribed {
        request_id: u64,
        producer_id: ProducerId,
        stream_ids: Vec<u64>,
        kind: MediaKind,
        rtp_parameters: RtpParameters,
        paused: bool,
        scores: Vec<u8>,
    },
}

#[test]
fn subscribed_without_a_path_decodes_as_from_the_origin() {
    let mut body = Vec::new();
    rmp_serde::encode::write_named(
        &mut body,
        &Before::Subscribed {
            request_id: 3,
            producer_id: p(),
            stream_ids: vec![5],
            kind: MediaKind::Audio,
            rtp_parameters: RtpParameters::default(),
            paused: false,
            scores: vec![10],
        },
    )
    .expect("encodes");
    assert_eq!(
        decode_control_body(&body),
        Ok(ControlMessage::Subscribed {
            request_id: 3,
            producer_id: p(),
            stream_ids: vec![5],
            kind: MediaKind::Audio,
            rtp_parameters: RtpParameters::default(),
            paused: false,
            scores: vec![10],
            path: Vec::new(),
        })
    );
    // And a path survives the round trip.
    let msg = ControlMessage::Subscribed {
        request_id: 3,
        producer_id: p(),
        stream_ids: vec![5],
        kind: MediaKind::Audio,
        rtp_parameters: RtpParameters::default(),
        paused: false,
        scores: vec![10],
        path: vec![NodeId::from("n1"), NodeId::from("n3")],
    };
    let mut out = Vec::new();
    encode_control(&msg, &mut out).expect("encodes");
    assert_eq!(decode_control_body(&out[4..]), Ok(msg));
}

fn p() -> ProducerId {
    ProducerId::from("producer-1")
}
