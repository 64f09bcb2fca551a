//! `/metrics` of two real nodes linked by a pipe, scraped over real HTTP while bots send media
//! across the link: the text parses (strictly, in both exposition formats, with a parser of
//! the OpenMetrics 1.0 / Prometheus 0.0.4 grammar written here: every line's syntax, HELP/TYPE
//! /UNIT consistency, sample names matching their family's type, histogram buckets), and the
//! packet, byte and forwarding-latency figures rise while media flows.
//!
//! Alice publishes audio and video on node a over UDP; bob (UDP) and carol (TCP) consume them
//! on node b, so a takes RTP in over UDP and pipes it out, and b takes it in from the pipe and
//! sends it out over UDP and TCP. Every wait is on an event (packets received by a bot,
//! keyframe requests reaching alice), never on a bare sleep.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use common::*;
use pipemesh::router::rtp_parameters::MediaKind;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What Prometheus 2.x sends in `Accept` when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

// ---------------------------------------------------------------------------------------------
// A strict parser of the text exposition formats.

/// Which grammar to hold a text to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// OpenMetrics text 1.0.0: `# EOF` last, counters' samples are `<family>_total`, `# UNIT`.
    OpenMetrics,
    /// Prometheus text 0.0.4: a counter's TYPE names its sample (`..._total`), no `# EOF`.
    Prometheus,
}

/// One sample line.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A metric family: its descriptors and samples, in order.
#[derive(Clone, Debug, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    unit: Option<String>,
    samples: Vec<Sample>,
}

/// A parsed exposition: families by name.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The value of the sample `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// [`Self::value`], panicking with the family list when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name}{labels:?}; families: {:?}",
                self.families.keys().collect::<Vec<_>>()
            )
        })
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// A sample value: a decimal or exponent float, or `+Inf`, `-Inf`, `NaN`.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && s.chars().any(|c| c.is_ascii_digit());
    if !ok {
        return Err(format!("bad value {s:?}"));
    }
    s.parse().map_err(|e| format!("bad value {s:?}: {e}"))
}

/// `{a="x",b="y"}` (the braces included) into labels; the rest of the line after it.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must open with {")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in a label value")),
                },
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        rest = rest
            .strip_prefix(',')
            .ok_or("labels must be separated by ,")?;
    }
}

/// The family a sample belongs to, given the family whose descriptors came last.
fn sample_fits(format: Format, family: &str, kind: &str, sample: &str) -> bool {
    let suffix = |s: &str| sample.strip_prefix(family).is_some_and(|r| r == s);
    match (kind, format) {
        ("counter", Format::OpenMetrics) => suffix("_total") || suffix("_created"),
        ("counter", Format::Prometheus) => sample == family,
        ("gauge", _) | ("unknown", _) | ("untyped", _) => sample == family,
        ("histogram", Format::OpenMetrics) => {
            suffix("_bucket") || suffix("_sum") || suffix("_count") || suffix("_created")
        }
        ("histogram", Format::Prometheus) => {
            suffix("_bucket") || suffix("_sum") || suffix("_count")
        }
        _ => false,
    }
}

/// Parses `text` strictly in `format`. Every line must be a descriptor or a sample (no blank
/// lines, no stray comments); each family's descriptors come once, before its samples, which
/// are contiguous; sample names fit their family's type; no series appears twice; counters are
/// non-negative; histograms have increasing `le` buckets ending at `+Inf`, cumulative counts,
/// and `_count` equal to the `+Inf` bucket.
fn parse_exposition(text: &str, format: Format) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let body = text
        .strip_suffix('\n')
        .ok_or("text must end with a newline")?;
    let mut current: Option<String> = None;
    let mut closed: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    let mut eof = false;
    for (n, line) in body.split('\n').enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(err("text after # EOF".into()));
        }
        if line == "# EOF" {
            if format != Format::OpenMetrics {
                return Err(err("# EOF in the Prometheus format".into()));
            }
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest
                .split_once(' ')
                .ok_or_else(|| err("bare comment".into()))?;
            let (name, arg) = match keyword {
                "TYPE" | "UNIT" => rest
                    .split_once(' ')
                    .ok_or_else(|| err(format!("{keyword} without a value")))?,
                "HELP" => rest.split_once(' ').unwrap_or((rest, "")),
                _ => return Err(err(format!("unknown descriptor {keyword}"))),
            };
            if !is_metric_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(prev) = current.take() {
                    closed.insert(prev);
                }
                if closed.contains(name) || exp.families.contains_key(name) {
                    return Err(err(format!("family {name} described twice")));
                }
                current = Some(name.to_owned());
            }
            let fam = exp.families.entry(name.to_owned()).or_default();
            if !fam.samples.is_empty() {
                return Err(err("descriptor after samples".into()));
            }
            match keyword {
                "HELP" if fam.help.is_some() => return Err(err("HELP twice".into())),
                "HELP" => fam.help = Some(arg.to_owned()),
                "TYPE" if !fam.kind.is_empty() => return Err(err("TYPE twice".into())),
                "TYPE" => {
                    let known: &[&str] = match format {
                        Format::OpenMetrics => &[
                            "counter",
                            "gauge",
                            "histogram",
                            "gaugehistogram",
                            "stateset",
                            "info",
                            "summary",
                            "unknown",
                        ],
                        Format::Prometheus => {
                            &["counter", "gauge", "histogram", "summary", "untyped"]
                        }
                    };
                    if !known.contains(&arg) {
                        return Err(err(format!("unknown type {arg}")));
                    }
                    if format == Format::OpenMetrics && arg == "counter" && name.ends_with("_total")
                    {
                        return Err(err("an OpenMetrics counter family ends in _total".into()));
                    }
                    fam.kind = arg.to_owned();
                }
                "UNIT" if format == Format::Prometheus => {
                    return Err(err("# UNIT in the Prometheus format".into()))
                }
                "UNIT" if fam.unit.is_some() => return Err(err("UNIT twice".into())),
                _ => {
                    if !name.ends_with(&format!("_{arg}")) {
                        return Err(err(format!("family {name} does not end in its unit")));
                    }
                    fam.unit = Some(arg.to_owned());
                }
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(err("not a descriptor nor a sample".into()));
        }
        // A sample: name, optional labels, one space, value (no timestamps here).
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("one space before the value".into()))?;
        if value.contains(' ') {
            return Err(err("timestamps or exemplars are not expected".into()));
        }
        let value = parse_value(value).map_err(err)?;
        let fam_name = current
            .clone()
            .ok_or_else(|| err("sample before any TYPE".into()))?;
        let fam = exp
            .families
            .get_mut(&fam_name)
            .expect("current family exists");
        if fam.kind.is_empty() {
            return Err(err("sample of a family without TYPE".into()));
        }
        if !sample_fits(format, &fam_name, &fam.kind, name) {
            return Err(err(format!(
                "sample {name} does not belong to {} family {fam_name}",
                fam.kind
            )));
        }
        if fam.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        if name.ends_with("_bucket") && fam.kind == "histogram" && !labels.contains_key("le") {
            return Err(err("bucket without le".into()));
        }
        if !series.insert((name.to_owned(), labels.clone())) {
            return Err(err("series twice".into()));
        }
        fam.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    if format == Format::OpenMetrics && !eof {
        return Err("no # EOF".into());
    }
    for (name, fam) in &exp.families {
        if fam.kind.is_empty() || fam.help.is_none() {
            return Err(format!("family {name} lacks TYPE or HELP"));
        }
        if fam.kind == "histogram" {
            check_histogram(name, fam)?;
        }
    }
    Ok(exp)
}

/// Buckets per label set (without `le`): increasing bounds ending at `+Inf`, cumulative
/// counts, `_count` equal to the `+Inf` bucket, a `_sum`.
fn check_histogram(name: &str, fam: &Family) -> Result<(), String> {
    let mut by_set: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in fam.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut set = s.labels.clone();
        let le = parse_value(&set.remove("le").expect("checked"))?;
        by_set.entry(set).or_default().push((le, s.value));
    }
    for (set, buckets) in &by_set {
        let ordered = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let last = buckets.last().expect("at least one bucket");
        if !ordered || last.0 != f64::INFINITY {
            return Err(format!("{name}{set:?}: buckets {buckets:?}"));
        }
        let find = |suffix: &str| {
            fam.samples
                .iter()
                .find(|s| s.name == format!("{name}{suffix}") && &s.labels == set)
                .map(|s| s.value)
        };
        if find("_count") != Some(last.1) || find("_sum").is_none() {
            return Err(format!(
                "{name}{set:?}: _count or _sum does not match the buckets"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP x_seconds A.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
              x_seconds_sum 0.5\nx_seconds_count 2\nx_seconds_bucket{le=\"0.1\"} 1\n\
              x_seconds_bucket{le=\"+Inf\"} 2\n# HELP c C.\n# TYPE c counter\n\
              c_total{a=\"q\\\"\\\\\"} 3\n# EOF\n";
    let e = parse_exposition(ok, Format::OpenMetrics).expect("valid");
    assert_eq!(e.get("c_total", &[("a", "q\"\\")]), 3.0);
    for (bad, why) in [
        (ok.replace("# EOF\n", ""), "no EOF"),
        (ok.replace("c_total", "c_count"), "counter sample name"),
        (
            ok.replace("bucket{le=\"0.1\"} 1", "bucket{le=\"0.1\"} 3"),
            "not cumulative",
        ),
        (
            ok.replace("x_seconds_count 2", "x_seconds_count 5"),
            "count != +Inf",
        ),
        (ok.replace("# TYPE c counter\n", ""), "no TYPE"),
        (ok.replace(" 0.5\n", "  0.5\n"), "two spaces"),
        (ok.replace("{a=\"q", "{a=q"), "unquoted label"),
        (
            ok.replace("# UNIT x_seconds seconds", "# UNIT x_seconds bytes"),
            "unit",
        ),
        (format!("{ok}\n"), "blank line"),
        (ok.replace("c_total{a", "x_seconds_sum{a"), "interleaved"),
    ] {
        assert!(
            parse_exposition(&bad, Format::OpenMetrics).is_err(),
            "accepted ({why}):\n{bad}"
        );
    }
    let text = "# HELP c_total C.\n# TYPE c_total counter\nc_total 1\n";
    assert!(parse_exposition(text, Format::Prometheus).is_ok());
    assert!(parse_exposition(text, Format::OpenMetrics).is_err());
}

// ---------------------------------------------------------------------------------------------
// Scraping.

/// `GET /metrics` with `accept` (if any): the content type and the body.
async fn http_get_metrics(admin: SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin reachable");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request sent");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("response read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
    };
    assert!(
        header("transfer-encoding").is_none(),
        "a sized body is expected: {head}"
    );
    let len: usize = header("content-length")
        .expect("content-length")
        .parse()
        .expect("a length");
    assert_eq!(body.len(), len);
    (
        header("content-type").expect("content-type"),
        body.to_owned(),
    )
}

/// Scrapes `node` as Prometheus does (OpenMetrics) and parses the text strictly.
async fn scrape(node: &TestNode) -> (Exposition, String) {
    let (ct, text) = http_get_metrics(node.addrs.admin, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let exp = parse_exposition(&text, Format::OpenMetrics)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics: {e}\n{text}"));
    for f in exp.families.keys() {
        assert!(f.starts_with("pipemesh_"), "unprefixed family {f}");
    }
    (exp, text)
}

/// The labels of a traffic series.
fn tl<'a>(transport: &'a str, direction: &'a str) -> [(&'a str, &'a str); 2] {
    [("transport", transport), ("direction", direction)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_packet_counters_rise_while_media_flows() {
    bounded(async {
        let pair = linked_pair(PairOptions::default()).await;
        let alice = join(publisher(pair.a.bot("m", "alice"), true, true)).await;
        let mut bob = join(subscriber(pair.b.bot("m", "bob"))).await;
        let mut carol_opts = subscriber(pair.b.bot("m", "carol"));
        carol_opts.tcp = true;
        let mut carol = join(carol_opts).await;
        for s in [&mut bob, &mut carol] {
            s.wait_consumers(2, WAIT)
                .await
                .expect("alice's audio and video are consumed on b");
        }
        // Media flows: each subscriber has some of alice's video.
        let mut seen = Vec::new();
        for s in [&bob, &carol] {
            let t = s.recv_transport().expect("consuming transport");
            let video = consumer_of(s, "alice", MediaKind::Video);
            let n = wait_packets(&t, video.ssrc, 0, 10)
                .await
                .expect("video reaches b's subscribers");
            seen.push((t, video.ssrc, n));
        }

        let (a0, _) = scrape(&pair.a).await;
        let (b0, _) = scrape(&pair.b).await;
        // More media: 30 more video packets reach each subscriber.
        for (t, ssrc, n) in &seen {
            wait_packets(t, *ssrc, *n, 30)
                .await
                .expect("video keeps flowing");
        }
        let (a1, a_text) = scrape(&pair.a).await;
        let (b1, b_text) = scrape(&pair.b).await;

        let rises =
            |e0: &Exposition, e1: &Exposition, node: &str, name: &str, l: &[(&str, &str)]| {
                let (v0, v1) = (e0.get(name, l), e1.get(name, l));
                assert!(
                    v1 > v0,
                    "node {node}: {name}{l:?} did not rise: {v0} -> {v1}"
                );
                v1 - v0
            };
        // a: alice's RTP in over UDP, one copy out into the pipe.
        for name in ["pipemesh_packets_total", "pipemesh_bytes_total"] {
            rises(&a0, &a1, "a", name, &tl("udp", "in"));
            rises(&a0, &a1, "a", name, &tl("pipe", "out"));
            // b: that copy in from the pipe, out to bob over UDP and to carol over TCP.
            rises(&b0, &b1, "b", name, &tl("pipe", "in"));
            rises(&b0, &b1, "b", name, &tl("udp", "out"));
            rises(&b0, &b1, "b", name, &tl("tcp", "out"));
        }
        // The packet-size histogram is the same count, and bytes are its sum. Media flows
        // while the scrape reads the atomics, and the histogram is encoded after the counters:
        // it may be a few packets ahead, never behind.
        for (e, k, d) in [(&a1, "udp", "in"), (&b1, "pipe", "in"), (&b1, "tcp", "out")] {
            let packets = e.get("pipemesh_packets_total", &tl(k, d));
            let count = e.get("pipemesh_packet_size_bytes_count", &tl(k, d));
            assert!(
                count >= packets && count - packets <= 20.0,
                "{k} {d}: packet_size_bytes_count {count}, packets_total {packets}"
            );
            let bytes = e.get("pipemesh_bytes_total", &tl(k, d));
            let sum = e.get("pipemesh_packet_size_bytes_sum", &tl(k, d));
            assert!(
                sum >= bytes && sum - bytes <= 20.0 * 1500.0,
                "{k} {d}: packet_size_bytes_sum {sum}, bytes_total {bytes}"
            );
        }
        // Forwarding latency is observed for what a forwards from UDP and b from the pipe.
        let lat = "pipemesh_forwarding_latency_seconds_count";
        rises(&a0, &a1, "a", lat, &[("ingress", "udp")]);
        rises(&b0, &b1, "b", lat, &[("ingress", "pipe")]);
        let sum = a1.get(
            "pipemesh_forwarding_latency_seconds_sum",
            &[("ingress", "udp")],
        );
        let count = a1.get(lat, &[("ingress", "udp")]);
        assert!(
            sum > 0.0 && sum / count < 0.1,
            "mean forwarding latency on a: {sum} s over {count}"
        );

        // Signaling: join on both nodes, produce on a, all answered ok.
        let sig = "pipemesh_signaling_requests_total";
        let ok = |m| [("method", m), ("result", "ok")];
        assert!(a1.get(sig, &ok("join")) >= 1.0);
        assert!(a1.get(sig, &ok("produce")) >= 2.0, "audio and video");
        assert!(b1.get(sig, &ok("join")) >= 2.0, "bob and carol");
        assert!(
            b1.get(
                "pipemesh_signaling_request_duration_seconds_count",
                &[("method", "join")]
            ) >= 2.0
        );

        // State gauges.
        assert_eq!(a1.get("pipemesh_peers", &[]), 1.0);
        assert_eq!(a1.get("pipemesh_producers", &[]), 2.0);
        assert_eq!(b1.get("pipemesh_peers", &[]), 2.0);
        assert_eq!(b1.get("pipemesh_producers", &[]), 2.0, "alice's, piped in");
        assert_eq!(b1.get("pipemesh_consumers", &[]), 4.0);
        assert_eq!(b1.get("pipemesh_rooms", &[]), 1.0);

        // Pipe links, labelled by peer.
        assert_eq!(a1.get("pipemesh_pipe_link_up", &[("peer", "b")]), 1.0);
        assert!(a1.get("pipemesh_pipe_rtt_seconds", &[("peer", "b")]) > 0.0);
        let loss = a1.get("pipemesh_pipe_loss_ratio", &[("peer", "b")]);
        assert!((0.0..=1.0).contains(&loss));

        // Feedback families exist with every label set, on both nodes.
        for e in [&a1, &b1] {
            for d in ["in", "out"] {
                for t in ["nack", "pli", "fir"] {
                    e.get(
                        "pipemesh_rtcp_feedback_total",
                        &[("type", t), ("direction", d)],
                    );
                }
                for t in ["nack", "keyframe_request"] {
                    e.get(
                        "pipemesh_pipe_feedback_total",
                        &[("type", t), ("direction", d)],
                    );
                }
            }
            e.get("pipemesh_retransmissions_total", &[("path", "client")]);
            e.get("pipemesh_dropped_packets_total", &[("reason", "srtp")]);
        }
        // A keyframe request from bob travels b -> pipe -> a -> PLI to alice; wait until
        // alice has one more, then every hop has counted it.
        let alice_send = alice.send_transport().expect("sending transport");
        let before = alice_send.state().keyframe_requests;
        let video = consumer_of(&bob, "alice", MediaKind::Video);
        bob.signaling()
            .request("requestConsumerKeyFrame", json!({"consumerId": video.id}))
            .await
            .expect("requestConsumerKeyFrame");
        alice_send
            .wait_for("a keyframe request", WAIT, |s| s.keyframe_requests > before)
            .await
            .expect("the PLI reaches alice");
        let (a2, _) = scrape(&pair.a).await;
        let (b2, _) = scrape(&pair.b).await;
        let kfr = |d| [("type", "keyframe_request"), ("direction", d)];
        assert!(b2.get("pipemesh_pipe_feedback_total", &kfr("out")) >= 1.0);
        assert!(a2.get("pipemesh_pipe_feedback_total", &kfr("in")) >= 1.0);
        assert!(
            a2.get(
                "pipemesh_rtcp_feedback_total",
                &[("type", "pli"), ("direction", "out")]
            ) >= 1.0
        );
        assert!(b2.get(sig, &ok("requestConsumerKeyFrame")) >= 1.0);

        // An unknown method is refused and counted as other: no new series per method name.
        let r = bob
            .signaling()
            .request_raw("noSuchMethod", json!({}))
            .await
            .expect("answered");
        assert_eq!(r.map_err(|e| e.0), Err(405));
        let (b3, _) = scrape(&pair.b).await;
        assert_eq!(b3.get(sig, &[("method", "other"), ("result", "4xx")]), 1.0);
        assert!(!b3
            .families
            .values()
            .flat_map(|f| &f.samples)
            .any(|s| s.labels.values().any(|v| v == "noSuchMethod")));

        // Without Accept (curl): the Prometheus text format, just as strict.
        let (ct, text) = http_get_metrics(pair.b.addrs.admin, None).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        let plain = parse_exposition(&text, Format::Prometheus)
            .unwrap_or_else(|e| panic!("/metrics is not valid text 0.0.4: {e}\n{text}"));
        assert!(plain.get("pipemesh_packets_total", &tl("pipe", "in")) > 0.0);
        assert!(plain.families.contains_key("pipemesh_packets_total"));
        // The historical flat names are still there, as the older tests read them.
        let flat: HashMap<String, u64> = parse_metrics(&text);
        assert!(flat["rtp_sent_total"] > 0);

        let excerpt = |t: &str| {
            t.lines()
                .filter(|l| {
                    [
                        "pipemesh_packets_total{",
                        "pipemesh_forwarding_latency_seconds_count{",
                        "pipemesh_signaling_requests_total{method=\"join\"",
                        "pipemesh_pipe_rtt_seconds{",
                    ]
                    .iter()
                    .any(|p| l.starts_with(p))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        eprintln!("--- a /metrics (excerpt)\n{}", excerpt(&a_text));
        eprintln!("--- b /metrics (excerpt)\n{}", excerpt(&b_text));

        alice.close().await;
        bob.close().await;
        carol.close().await;
        pair.stop().await;
    })
    .await;
}
