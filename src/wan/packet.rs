//! IPv4 header parsing for the WAN emulator: just enough to classify a packet by its
//! source and destination addresses. Never panics on any input.

use std::net::Ipv4Addr;

/// What the emulator needs from an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Total length from the header (header + payload), in bytes.
    pub total_len: usize,
    /// Header length in bytes (IHL * 4).
    pub header_len: usize,
    pub protocol: u8,
}

/// Why a buffer is not a usable IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Empty buffer.
    Empty,
    /// The version nibble is not 4 (e.g. 6 for IPv6); carries the version.
    NotIpv4(u8),
    /// Shorter than the 20-byte minimum header or than the header length it declares.
    Truncated,
    /// IHL below 5.
    BadHeaderLength,
    /// Total length below the header length or above the buffer length.
    BadTotalLength,
}

/// Parses and validates the IPv4 header at the start of `buf`.
///
/// Validates version, IHL (>= 5 and within the buffer) and total length (>= header length
/// and <= buffer length; trailing bytes beyond total length are tolerated, as link layers may
/// pad). The header checksum is not verified: the kernel gave us the packet.
pub fn parse_ipv4(buf: &[u8]) -> Result<Ipv4Header, ParseError> {
    let first = *buf.first().ok_or(ParseError::Empty)?;
    let version = first >> 4;
    if version != 4 {
        return Err(ParseError::NotIpv4(version));
    }
    if buf.len() < 20 {
        return Err(ParseError::Truncated);
    }
    let ihl = usize::from(first & 0x0f);
    if ihl < 5 {
        return Err(ParseError::BadHeaderLength);
    }
    let header_len = ihl * 4;
    if buf.len() < header_len {
        return Err(ParseError::Truncated);
    }
    let total_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if total_len < header_len || total_len > buf.len() {
        return Err(ParseError::BadTotalLength);
    }
    Ok(Ipv4Header {
        src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
        total_len,
        header_len,
        protocol: buf[9],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
        let total = 20 + 8 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn parses_a_udp_packet() {
        let p = udp_packet([10, 77, 1, 11], [10, 77, 2, 12], 100);
        let h = parse_ipv4(&p).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(10, 77, 1, 11));
        assert_eq!(h.dst, Ipv4Addr::new(10, 77, 2, 12));
        assert_eq!(h.total_len, 128);
        assert_eq!(h.header_len, 20);
        assert_eq!(h.protocol, 17);
    }

    #[test]
    fn tolerates_trailing_padding() {
        let mut p = udp_packet([1, 1, 1, 1], [2, 2, 2, 2], 0);
        p.extend_from_slice(&[0; 6]);
        assert_eq!(parse_ipv4(&p).unwrap().total_len, 28);
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(parse_ipv4(&[]), Err(ParseError::Empty));
        assert_eq!(parse_ipv4(&[0x60; 40]), Err(ParseError::NotIpv4(6)));
        assert_eq!(parse_ipv4(&[0x45; 19]), Err(ParseError::Truncated));
        let mut p = udp_packet([1, 1, 1, 1], [2, 2, 2, 2], 10);
        p[0] = 0x44;
        assert_eq!(parse_ipv4(&p), Err(ParseError::BadHeaderLength));
        p[0] = 0x4f; // 60-byte header in a 38-byte buffer
        assert_eq!(parse_ipv4(&p), Err(ParseError::Truncated));
        p[0] = 0x45;
        p[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse_ipv4(&p), Err(ParseError::BadTotalLength));
        p[2..4].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(parse_ipv4(&p), Err(ParseError::BadTotalLength));
    }

    #[test]
    fn options_are_skipped_by_header_len() {
        let mut p = udp_packet([1, 1, 1, 1], [2, 2, 2, 2], 10);
        p[0] = 0x46;
        assert_eq!(parse_ipv4(&p).unwrap().header_len, 24);
    }
}
