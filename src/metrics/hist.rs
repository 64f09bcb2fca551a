//! A lock-free histogram for the hot path: fixed buckets of relaxed atomics, encoded at scrape
//! time through prometheus-client's histogram encoding.
//!
//! An observation is one bucket search over a handful of bounds and two relaxed `fetch_add`s
//! (its bucket and the sum): no lock, no allocation. The count is the sum of the buckets, so a
//! scrape always sees buckets and count agree; the sum is read separately and may be one
//! observation ahead or behind, which Prometheus tolerates (rates over scrapes are unaffected).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Observations in integer raw units (bytes, nanoseconds) in `N` buckets whose inclusive upper
/// bounds (`le`) are `bounds`, ascending, the last being [`u64::MAX`] (exported as `+Inf`).
/// Values are exported divided by `divisor` (1 for bytes, 1e9 for nanoseconds as seconds).
#[derive(Debug)]
pub struct AtomicHistogram<const N: usize> {
    bounds: &'static [u64; N],
    divisor: f64,
    counts: [AtomicU64; N],
    sum: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    /// An empty histogram. Panics (at compile time in a `const`) unless `bounds` ascend
    /// strictly and end with [`u64::MAX`].
    pub const fn new(bounds: &'static [u64; N], divisor: f64) -> Self {
        assert!(
            N > 0 && bounds[N - 1] == u64::MAX,
            "the last bound must be +Inf"
        );
        let mut i = 1;
        while i < N {
            assert!(bounds[i - 1] < bounds[i], "bounds must ascend strictly");
            i += 1;
        }
        Self {
            bounds,
            divisor,
            counts: [const { AtomicU64::new(0) }; N],
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation of `v` raw units.
    #[inline]
    pub fn observe(&self, v: u64) {
        // The last bound is u64::MAX, so the search always finds a bucket.
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(N - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observations so far, in raw units.
    pub fn sum_raw(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }
}

impl<const N: usize> EncodeMetric for AtomicHistogram<N> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut count = 0;
        let buckets: [(f64, u64); N] = std::array::from_fn(|i| {
            let c = self.counts[i].load(Ordering::Relaxed);
            count += c;
            let le = match self.bounds[i] {
                u64::MAX => f64::INFINITY,
                // Dividing exact integers rounds once: 5000 ns is 0.000005 s, not 5.000000000000001e-6.
                b => b as f64 / self.divisor,
            };
            (le, c)
        });
        let sum = self.sum_raw() as f64 / self.divisor;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::registry::{Registry, Unit};

    static BYTES: [u64; 4] = [100, 200, 1000, u64::MAX];
    static NANOS: [u64; 3] = [5_000, 250_000, u64::MAX];

    #[derive(Debug)]
    struct One(&'static str, Option<Unit>, AtomicHistogram<4>);

    impl Collector for One {
        fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let m = e.encode_descriptor(
                self.0,
                "A test histogram.",
                self.1.as_ref(),
                self.2.metric_type(),
            )?;
            self.2.encode(m)
        }
    }

    fn text(h: AtomicHistogram<4>, unit: Option<Unit>) -> String {
        let mut r = Registry::with_prefix("pipemesh");
        r.register_collector(Box::new(One("size", unit, h)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn buckets_are_inclusive_and_encoded_cumulatively() {
        let h = AtomicHistogram::new(&BYTES, 1.0);
        for v in [0, 100, 101, 200, 999, 1000, 1001, 5000] {
            h.observe(v);
        }
        assert_eq!(h.count(), 8);
        let out = text(h, Some(Unit::Bytes));
        let expected = "# HELP pipemesh_size_bytes A test histogram.\n\
            # TYPE pipemesh_size_bytes histogram\n\
            # UNIT pipemesh_size_bytes bytes\n\
            pipemesh_size_bytes_sum 8401.0\n\
            pipemesh_size_bytes_count 8\n\
            pipemesh_size_bytes_bucket{le=\"100.0\"} 2\n\
            pipemesh_size_bytes_bucket{le=\"200.0\"} 4\n\
            pipemesh_size_bytes_bucket{le=\"1000.0\"} 6\n\
            pipemesh_size_bytes_bucket{le=\"+Inf\"} 8\n\
            # EOF\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let out = text(AtomicHistogram::new(&BYTES, 1.0), None);
        assert!(out.contains("pipemesh_size_count 0\n"), "{out}");
        assert!(
            out.contains("pipemesh_size_bucket{le=\"+Inf\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("pipemesh_size_sum 0.0\n"), "{out}");
    }

    #[test]
    fn nanoseconds_export_as_exact_seconds() {
        let h = AtomicHistogram::new(&NANOS, 1e9);
        h.observe(4_000);
        h.observe(1_000_000);
        let mut buckets = Vec::new();
        let mut r = Registry::default();
        #[derive(Debug)]
        struct L(AtomicHistogram<3>);
        impl Collector for L {
            fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                let m = e.encode_descriptor(
                    "lat",
                    "Latency.",
                    Some(&Unit::Seconds),
                    self.0.metric_type(),
                )?;
                self.0.encode(m)
            }
        }
        r.register_collector(Box::new(L(h)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        for l in out.lines().filter(|l| l.starts_with("lat_seconds_bucket")) {
            buckets.push(l.to_owned());
        }
        assert_eq!(
            buckets,
            [
                "lat_seconds_bucket{le=\"0.000005\"} 1",
                "lat_seconds_bucket{le=\"0.00025\"} 1",
                "lat_seconds_bucket{le=\"+Inf\"} 2",
            ],
            "{out}"
        );
        assert!(out.contains("lat_seconds_sum 0.001004\n"), "{out}");
    }

    #[test]
    #[should_panic(expected = "ascend")]
    fn unordered_bounds_are_refused() {
        static BAD: [u64; 3] = [10, 5, u64::MAX];
        let _ = AtomicHistogram::new(&BAD, 1.0);
    }
}
