//! Per-packet SRTP cost, 1,200-byte RTP payload: `webrtc-srtp` 0.17 `Context::encrypt_rtp`
//! against [`pipemesh::srtp::SrtpContext`] (in place, and its `encrypt_rtp` drop-in that
//! returns `Bytes`), for AEAD_AES_128_GCM and AES_CM_128_HMAC_SHA1_80, plus our in-place
//! unprotect. A counting global allocator prints the allocations per packet of each path
//! before the timings.
//!
//! `cargo bench --bench srtp`. Under `cargo test --benches` the checks run and nothing is
//! timed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use pipemesh::bench::fanout::limit::{keys, packet};
use pipemesh::srtp::{Profile, SrtpContext};
use webrtc_srtp::context::Context;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded to the system allocator with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn ours(profile: Profile) -> SrtpContext {
    let (k, s) = keys(profile);
    SrtpContext::new(profile, &k, &s).expect("keys")
}

fn theirs(profile: Profile) -> Context {
    let (k, s) = keys(profile);
    Context::new(&k, &s, profile.into(), None, None).expect("keys")
}

fn name(profile: Profile) -> &'static str {
    match profile {
        Profile::AeadAes128Gcm => "aead_aes_128_gcm",
        Profile::Aes128CmHmacSha1_80 => "aes_cm_128_hmac_sha1_80",
    }
}

/// Allocations per call of `f` over `n` calls.
fn allocs_per(n: u64, mut f: impl FnMut(u16)) -> f64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..n {
        f(i as u16);
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

/// Checks both implementations agree and prints allocations per packet.
fn check(profile: Profile) {
    let mut a = ours(profile);
    let mut b = theirs(profile);
    let mut rx = ours(profile);
    for seq in 0..4 {
        let plain = packet(seq);
        let mine = a.encrypt_rtp(&plain).expect("ours");
        assert_eq!(mine, b.encrypt_rtp(&plain).expect("theirs"));
        assert_eq!(rx.decrypt_rtp(&mine).expect("round trip")[..], plain[..]);
    }
    let plain = packet(0);
    let mut buf = Vec::with_capacity(plain.len() + 64);
    let mut tx = ours(profile);
    // The first packet of an SSRC allocates its slot in the per-SSRC map: not counted.
    tx.protect_rtp(&mut plain.clone()).expect("protect");
    let in_place = allocs_per(1000, |seq| {
        buf.clear();
        buf.extend_from_slice(&plain);
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        tx.protect_rtp(&mut buf).expect("protect");
    });
    let mut tx = ours(profile);
    tx.protect_rtp(&mut plain.clone()).expect("protect");
    let dropin = allocs_per(1000, |seq| {
        let mut p = plain.clone();
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        black_box(tx.encrypt_rtp(&p).expect("encrypt"));
        // Do not count the clone.
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
    });
    let mut tx = theirs(profile);
    tx.encrypt_rtp(&plain).expect("encrypt");
    let theirs_allocs = allocs_per(1000, |seq| {
        let mut p = plain.clone();
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        black_box(tx.encrypt_rtp(&p).expect("encrypt"));
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
    });
    println!(
        "{}: allocations per packet: ours protect_rtp {in_place}, ours encrypt_rtp \
         {dropin}, webrtc-srtp encrypt_rtp {theirs_allocs}",
        name(profile)
    );
    assert_eq!(in_place, 0.0, "in-place protect must not allocate");
}

fn bench(c: &mut Criterion) {
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        check(profile);
        let mut g = c.benchmark_group(format!("srtp/{}", name(profile)));
        g.throughput(Throughput::Elements(1));
        let plain = packet(0);

        let mut ctx = theirs(profile);
        let mut seq = 0u16;
        g.bench_function("webrtc_srtp_encrypt_rtp", |b| {
            let mut p = plain.clone();
            b.iter(|| {
                seq = seq.wrapping_add(1);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(ctx.encrypt_rtp(black_box(&p)).expect("encrypt"))
            })
        });

        let mut ctx = ours(profile);
        let mut seq = 0u16;
        g.bench_function("ours_encrypt_rtp", |b| {
            let mut p = plain.clone();
            b.iter(|| {
                seq = seq.wrapping_add(1);
                p[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(ctx.encrypt_rtp(black_box(&p)).expect("encrypt"))
            })
        });

        let mut ctx = ours(profile);
        let mut seq = 0u16;
        let mut buf = Vec::with_capacity(plain.len() + 64);
        g.bench_function("ours_protect_rtp_in_place", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf.clear();
                buf.extend_from_slice(&plain);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                ctx.protect_rtp(black_box(&mut buf)).expect("protect");
            })
        });

        let mut tx = ours(profile);
        let mut rx = ours(profile);
        let mut seq = 0u16;
        let mut wire = Vec::with_capacity(plain.len() + 64);
        g.bench_function("ours_unprotect_rtp_in_place", |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    wire.clear();
                    wire.extend_from_slice(&plain);
                    wire[2..4].copy_from_slice(&seq.to_be_bytes());
                    tx.protect_rtp(&mut wire).expect("protect");
                    wire.clone()
                },
                |pkt| rx.unprotect_rtp(black_box(pkt)).expect("unprotect"),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
