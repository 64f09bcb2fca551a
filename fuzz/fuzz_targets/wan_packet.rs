//! The WAN emulator's IPv4 parser and core: arbitrary bytes as a packet (nothing may panic; an
//! accepted header lies within the buffer and agrees with its bytes), the same bytes offered to
//! an emulator with impairments (every held packet comes back out, unchanged in length) and
//! as a control command line (an error or a reply, never a panic).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pipemesh::wan::{parse_ipv4, Config, Emulator, Outcome};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_ipv4(data) {
        assert_eq!(data[0] >> 4, 4);
        assert!(20 <= h.header_len && h.header_len <= h.total_len && h.total_len <= data.len());
        assert_eq!(h.header_len, usize::from(data[0] & 0x0f) * 4);
        assert_eq!(h.src.octets(), data[12..16]);
        assert_eq!(h.dst.octets(), data[16..20]);
    }

    let config: Config = toml::from_str(
        r#"
        [regions]
        eu = ["10.77.1.0/24", "0.0.0.0/1"]
        us = ["10.77.2.0/24", "128.0.0.0/1"]
        [default]
        delay_ms = 5
        jitter_ms = 3
        loss = 0.3
        rate_kbps = 100
        queue_bytes = 3000
        "#,
    )
    .unwrap();
    let mut emu = Emulator::new(&config).unwrap();
    let _ = emu.command(&String::from_utf8_lossy(data));
    let now = Instant::now();
    let mut held = 0;
    for i in 0..4u64 {
        if let Outcome::Held(at) = emu.on_packet(now + Duration::from_millis(i), data.to_vec()) {
            assert!(at >= now);
            held += 1;
        }
    }
    let mut out = 0;
    while let Some(p) = emu.poll_due(now + Duration::from_secs(3600)) {
        assert_eq!(p.len(), data.len());
        out += 1;
    }
    assert_eq!(out, held);
    assert_eq!(emu.held(), 0);
});
