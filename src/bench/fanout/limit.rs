//! The machine's own ceiling for the fan-out benchmark's bytes, measured in this process: SRTP
//! protect alone and UDP send alone of 1,200-byte RTP payloads (see [`super`]).

use std::fmt;
use std::hint::black_box;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::summary::median;
use crate::srtp::{Profile, SrtpContext};

/// RTP payload bytes of the measured packets.
pub const PAYLOAD: usize = 1200;
/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 32;
/// SSRC of [`packet`]s.
pub const SSRC: u32 = 0x1234_5678;

/// One SRTP implementation and profile: packets per CPU-second.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectRate {
    /// `ours` or `webrtc-srtp`.
    pub implementation: &'static str,
    /// AEAD_AES_128_GCM (else AES_CM_128_HMAC_SHA1_80).
    pub gcm: bool,
    /// Packets per CPU-second of the measuring thread.
    pub per_core: f64,
}

/// One way of sending: packets per CPU-second and per wall-second.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRate {
    /// `send_to` or `sendmmsg×32`.
    pub method: &'static str,
    /// Datagrams per CPU-second of the sending thread.
    pub per_core: f64,
    /// Datagrams per wall-clock second.
    pub wall: f64,
}

/// The limit part's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitReport {
    /// Every SRTP implementation × profile.
    pub protect: Vec<ProtectRate>,
    /// Every send method.
    pub send: Vec<SendRate>,
    /// Size of the sent datagrams (a protected GCM packet).
    pub datagram_len: usize,
}

/// Fan-out ceiling, packets per core: each forwarded packet costs one protect and one send.
pub fn ceiling_pps(protect_per_core: f64, send_per_core: f64) -> f64 {
    if protect_per_core > 0.0 && send_per_core > 0.0 {
        1.0 / (1.0 / protect_per_core + 1.0 / send_per_core)
    } else {
        f64::NAN
    }
}

fn profile_name(gcm: bool) -> &'static str {
    if gcm {
        "AEAD_AES_128_GCM"
    } else {
        "AES_CM_128_HMAC_SHA1_80"
    }
}

impl LimitReport {
    /// From `(implementation, gcm, per_core)` and `(method, per_core, wall)` rows.
    pub fn from_rates(
        protect: &[(&'static str, bool, f64)],
        send: &[(&'static str, f64, f64)],
    ) -> Self {
        LimitReport {
            protect: protect
                .iter()
                .map(|&(implementation, gcm, per_core)| ProtectRate {
                    implementation,
                    gcm,
                    per_core,
                })
                .collect(),
            send: send
                .iter()
                .map(|&(method, per_core, wall)| SendRate {
                    method,
                    per_core,
                    wall,
                })
                .collect(),
            datagram_len: 0,
        }
    }

    /// The best send rate per core.
    pub fn best_send(&self) -> Option<&SendRate> {
        self.send
            .iter()
            .filter(|s| s.per_core.is_finite())
            .max_by(|a, b| a.per_core.total_cmp(&b.per_core))
    }

    /// Ceiling of a profile: our protect and the best send.
    pub fn ceiling(&self, gcm: bool) -> f64 {
        let protect = self
            .protect
            .iter()
            .find(|p| p.implementation == "ours" && p.gcm == gcm)
            .map_or(f64::NAN, |p| p.per_core);
        ceiling_pps(protect, self.best_send().map_or(f64::NAN, |s| s.per_core))
    }
}

impl fmt::Display for LimitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Limit (this machine, this run, one core; {PAYLOAD}-byte RTP payloads):"
        )?;
        for p in &self.protect {
            writeln!(
                f,
                "  SRTP protect  {:<12} {:<24} {:>10.0} pkt/s  ({:.2} µs/pkt)",
                p.implementation,
                profile_name(p.gcm),
                p.per_core,
                1e6 / p.per_core
            )?;
        }
        for s in &self.send {
            writeln!(
                f,
                "  UDP send      {:<12} {:<24} {:>10.0} pkt/s  ({:.2} µs/pkt CPU; wall {:.0} pkt/s)",
                s.method,
                format!("{} B loopback", self.datagram_len),
                s.per_core,
                1e6 / s.per_core,
                s.wall
            )?;
        }
        let best = self.best_send().map_or("none", |s| s.method);
        for gcm in [true, false] {
            writeln!(
                f,
                "  ceiling       {:<37} {:>10.0} pkt/s per core (our protect + {best})",
                profile_name(gcm),
                self.ceiling(gcm)
            )?;
        }
        Ok(())
    }
}

/// Measures everything: `packets` per run, `reps` runs each, medians.
pub fn measure(packets: u64, reps: usize) -> Result<LimitReport> {
    let mut protect = Vec::new();
    for gcm in [true, false] {
        let profile = if gcm {
            Profile::AeadAes128Gcm
        } else {
            Profile::Aes128CmHmacSha1_80
        };
        let ours = median_of(reps, || protect_ours(profile, packets))?;
        protect.push(("ours", gcm, ours));
        let theirs = median_of(reps, || protect_webrtc(profile, packets))?;
        protect.push(("webrtc-srtp", gcm, theirs));
    }
    let datagram_len = protected_len(Profile::AeadAes128Gcm)?;
    let mut send = Vec::new();
    for (method, batch) in [("send_to", 1), ("sendmmsg×32", BATCH)] {
        let mut cpu = Vec::new();
        let mut wall = Vec::new();
        for _ in 0..reps {
            let (c, w) = send_rate(datagram_len, packets, batch)
                .with_context(|| format!("measuring {method}"))?;
            cpu.push(c);
            wall.push(w);
        }
        send.push((method, median(&cpu), median(&wall)));
    }
    let mut r = LimitReport::from_rates(&protect, &send);
    r.datagram_len = datagram_len;
    Ok(r)
}

fn median_of(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let v = (0..reps).map(|_| f()).collect::<Result<Vec<_>>>()?;
    Ok(median(&v))
}

/// An RTP packet with the two one-byte header extensions the SFU sends (abs-send-time,
/// transport-cc) and [`PAYLOAD`] bytes (also `cargo bench --bench srtp`'s packet).
pub fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02, 0x32, 1, 2, 3, 0x51, 0, 7, 0]);
    p.extend((0..PAYLOAD).map(|i| i as u8));
    p
}

/// A fixed master key and salt of the right lengths for `profile`.
pub fn keys(profile: Profile) -> (Vec<u8>, Vec<u8>) {
    (
        (0..16).collect(),
        (100..100 + profile.salt_len() as u8).collect(),
    )
}

fn protected_len(profile: Profile) -> Result<usize> {
    let (k, s) = keys(profile);
    let mut ctx = SrtpContext::new(profile, &k, &s).context("SRTP keys")?;
    let mut p = packet(1);
    ctx.protect_rtp(&mut p).context("protect")?;
    Ok(p.len())
}

/// Thread CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Packets per thread CPU-second of `f` run `packets` times.
fn timed(packets: u64, mut f: impl FnMut(u64) -> Result<()>) -> Result<f64> {
    let c0 = thread_cpu();
    for i in 0..packets {
        f(i)?;
    }
    let cpu = thread_cpu().saturating_sub(c0).as_secs_f64();
    Ok(if cpu > 0.0 {
        packets as f64 / cpu
    } else {
        f64::NAN
    })
}

/// Our in-place protect; each packet is copied from a template first (as the SFU copies the
/// packet into each consumer's buffer).
fn protect_ours(profile: Profile, packets: u64) -> Result<f64> {
    let (k, s) = keys(profile);
    let mut ctx = SrtpContext::new(profile, &k, &s).context("SRTP keys")?;
    let template = packet(0);
    let mut buf = Vec::with_capacity(template.len() + 32);
    timed(packets, |i| {
        buf.clear();
        buf.extend_from_slice(&template);
        buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        ctx.protect_rtp(&mut buf).context("protect")?;
        black_box(&buf);
        Ok(())
    })
}

/// webrtc-srtp's `encrypt_rtp` (allocates the output).
fn protect_webrtc(profile: Profile, packets: u64) -> Result<f64> {
    let (k, s) = keys(profile);
    let mut ctx = webrtc_srtp::context::Context::new(&k, &s, profile.into(), None, None)
        .map_err(|e| anyhow::anyhow!("webrtc-srtp keys: {e}"))?;
    let mut template = packet(0);
    timed(packets, |i| {
        template[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        let out = ctx
            .encrypt_rtp(&template)
            .map_err(|e| anyhow::anyhow!("webrtc-srtp protect: {e}"))?;
        black_box(out);
        Ok(())
    })
}

/// Sends `packets` datagrams of `len` bytes to a sink on loopback that is never read, `batch`
/// per call (1: `send_to`, else `sendmmsg`). Returns (per CPU-second, per wall-second).
fn send_rate(len: usize, packets: u64, batch: usize) -> Result<(f64, f64)> {
    let sink = UdpSocket::bind("127.0.0.1:0").context("binding the sink")?;
    let dst = sink.local_addr()?;
    let sock = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    sock.set_nonblocking(true)?;
    let data = vec![0xA5u8; len];
    let bufs: Vec<&[u8]> = (0..batch).map(|_| &data[..]).collect();
    let calls = packets.div_ceil(batch as u64);
    let t0 = Instant::now();
    let c0 = thread_cpu();
    let mut sent = 0u64;
    for _ in 0..calls {
        let r = if batch == 1 {
            sock.send_to(&data, dst).map(|_| 1)
        } else {
            send_mmsg(&sock, dst, &bufs)
        };
        match r {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e).context("send"),
        }
    }
    let cpu = thread_cpu().saturating_sub(c0).as_secs_f64();
    let wall = t0.elapsed().as_secs_f64();
    drop(sink);
    let per = |secs: f64| {
        if secs > 0.0 {
            sent as f64 / secs
        } else {
            f64::NAN
        }
    };
    Ok((per(cpu), per(wall)))
}

/// `sendmmsg` of every buffer in `bufs` to the IPv4 address `dst`; returns how many were sent.
pub fn send_mmsg(sock: &UdpSocket, dst: SocketAddr, bufs: &[&[u8]]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(v4) = dst else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "send_mmsg: IPv4 only",
        ));
    };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = v4.port().to_be();
    addr.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
    let mut iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `msgs` holds `msgs.len()` initialised headers whose name and iovec pointers
    // point at `addr`, `iovs` and the caller's buffers, all alive for the call; the kernel only
    // reads the buffers and writes `msg_len`.
    let r = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_is_the_harmonic_combination() {
        assert!((ceiling_pps(1e6, 1e6) - 5e5).abs() < 1e-6);
        assert!((ceiling_pps(1e6, 4e5) - 1.0 / (1e-6 + 2.5e-6)).abs() < 1e-6);
        assert!(ceiling_pps(0.0, 1e6).is_nan());
    }

    #[test]
    fn best_send_and_missing_rows() {
        let r = LimitReport::from_rates(
            &[("ours", false, 4e5)],
            &[("send_to", 3e5, 3e5), ("sendmmsg×32", 6e5, 6e5)],
        );
        assert_eq!(r.best_send().unwrap().method, "sendmmsg×32");
        assert!((r.ceiling(false) - ceiling_pps(4e5, 6e5)).abs() < 1e-9);
        assert!(r.ceiling(true).is_nan());
        let text = r.to_string();
        assert!(text.contains("AES_CM_128_HMAC_SHA1_80"), "{text}");
        assert!(text.contains("sendmmsg×32"), "{text}");
    }

    #[test]
    fn sendmmsg_delivers_a_batch() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = [1u8; 10];
        let b = [2u8; 20];
        let n = send_mmsg(&sock, sink.local_addr().unwrap(), &[&a, &b]).unwrap();
        assert_eq!(n, 2);
        let mut buf = [0u8; 64];
        assert_eq!(sink.recv(&mut buf).unwrap(), 10);
        assert_eq!(sink.recv(&mut buf).unwrap(), 20);
        assert_eq!(buf[0], 2);
    }

    #[test]
    fn tiny_measurement_runs() {
        let r = measure(200, 1).unwrap();
        assert_eq!(r.protect.len(), 4);
        assert_eq!(r.send.len(), 2);
        assert!(r.datagram_len > PAYLOAD);
        assert!(r.protect.iter().all(|p| p.per_core > 0.0));
    }
}
