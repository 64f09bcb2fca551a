//! Smoke test of the emulated WAN (`simulations/netns.sh` + `pipemesh-wan`): brings up the
//! namespaces with a per-run suffix, then measures through the emulator a UDP round trip with
//! 40 ms each way, a 20% loss rate, a rate limit's throughput and a TCP transfer; and brings up
//! `simulations/cluster.sh` (etcd and nine nodes) and sends a bot's media from eu to us across
//! it. Needs root, /dev/net/tun and etcd (CI runs as root and installs etcd-server); fails,
//! rather than skips, without them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NETNS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/simulations/netns.sh");
const CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/simulations/cluster.sh");

/// The topology of one test run (`netns.sh`, or `cluster.sh` on top of it), named with a
/// per-run suffix; `down` on drop, also when the test fails.
struct Topology {
    script: &'static str,
    suffix: String,
    run_dir: PathBuf,
    cluster_dir: PathBuf,
}

impl Topology {
    /// `tag` keeps the tests of one process apart.
    fn up(script: &'static str, tag: &str) -> Topology {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "wan_emulator needs root (network namespaces, TUN device); run the tests as root"
        );
        assert!(
            Path::new("/dev/net/tun").exists(),
            "wan_emulator needs /dev/net/tun"
        );
        let id = std::process::id();
        let t = Topology {
            script,
            suffix: format!("-{tag}{id}"),
            run_dir: PathBuf::from(format!("/tmp/pm-wan-{tag}{id}")),
            cluster_dir: PathBuf::from(format!("/tmp/pm-sim-{tag}{id}")),
        };
        let out = t.script("up");
        assert!(
            out.status.success(),
            "{script} up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(script)
            .env("PM_SUFFIX", &self.suffix)
            .env("PM_RUN_DIR", &self.run_dir)
            .env("PM_CLUSTER_DIR", &self.cluster_dir)
            .env("PM_WAN_BIN", env!("CARGO_BIN_EXE_pipemesh-wan"))
            .env("PIPEMESH_BIN", env!("CARGO_BIN_EXE_pipemesh"))
            .env_remove("PM_WAN_CONFIG");
        c
    }

    fn script(&self, arg: &str) -> std::process::Output {
        self.command(self.script)
            .arg(arg)
            .output()
            .expect("running the simulations script")
    }

    fn ns(&self, region: &str) -> String {
        format!("pm-{region}{}", self.suffix)
    }

    /// One control command; panics on an error reply.
    fn ctl(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.run_dir.join("control.sock")).expect("control socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        writeln!(s, "{line}").unwrap();
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).unwrap();
        let reply = reply.trim_end();
        match reply.strip_prefix("ok") {
            Some(rest) => rest.trim_start().to_string(),
            None => panic!("{line:?} -> {reply:?}"),
        }
    }

    fn link_stats(&self, link: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ctl("stats")).unwrap();
        v["links"][link]["stats"].clone()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!(
                "{} down failed: {}",
                self.script,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.cluster_dir);
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a namespace file we hold open; affects this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

fn bind(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A receiver in `ns` on `addr` counting data packets (first byte b'D') until one starting
/// with b'E' arrives: (packets, payload bytes, first and last arrival).
fn receiver(
    t: &Topology,
    addr: &'static str,
    done: Arc<AtomicBool>,
) -> JoinHandle<(u64, u64, Option<Instant>, Option<Instant>)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = in_ns(&t.ns("us"), move || {
        let s = bind(addr);
        ready_tx.send(()).unwrap();
        let (mut n, mut bytes, mut first, mut last) = (0, 0, None, None);
        let mut buf = [0u8; 2048];
        loop {
            let len = s.recv(&mut buf).expect("receiver timed out");
            let now = Instant::now();
            match buf[0] {
                b'D' => {
                    n += 1;
                    bytes += len as u64;
                    first.get_or_insert(now);
                    last = Some(now);
                }
                b'E' => break,
                _ => {}
            }
        }
        done.store(true, Ordering::SeqCst);
        (n, bytes, first, last)
    });
    ready_rx.recv().expect("receiver bound");
    h
}

/// Sends an end marker until the receiver has seen one (markers may be lost or dropped).
fn send_end(s: &UdpSocket, to: &str, done: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "end marker never arrived");
        s.send_to(b"E", to).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn wan_emulator_delay_loss_rate_and_tcp() {
    let t = Topology::up(NETNS, "t");

    // 1. Round trip eu -> us -> eu with 40 ms each way and no jitter.
    t.ctl("set eu<>us delay_ms=40 jitter_ms=0");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let echo = in_ns(&t.ns("us"), move || {
        let s = bind("10.77.2.11:9000");
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let (len, from) = s.recv_from(&mut buf).expect("echo timed out");
            if &buf[..len] == b"quit" {
                break;
            }
            s.send_to(&buf[..len], from).unwrap();
        }
    });
    ready_rx.recv().expect("echo bound");
    let rtts = in_ns(&t.ns("eu"), || {
        let s = bind("10.77.1.11:0");
        let mut rtts = Vec::new();
        let mut buf = [0u8; 2048];
        for i in 0u32..20 {
            let start = Instant::now();
            s.send_to(&i.to_be_bytes(), "10.77.2.11:9000").unwrap();
            let len = s.recv(&mut buf).expect("no echo");
            assert_eq!(&buf[..len], &i.to_be_bytes());
            rtts.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        s.send_to(b"quit", "10.77.2.11:9000").unwrap();
        rtts
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    let mut sorted = rtts.clone();
    sorted.sort_by(f64::total_cmp);
    let (min, median) = (sorted[0], sorted[sorted.len() / 2]);
    eprintln!(
        "RTT with 2 x 40 ms: min {min:.2} ms, median {median:.2} ms, max {:.2} ms",
        sorted[19]
    );
    assert!(min >= 80.0, "RTT {min} ms below the emulated 80 ms");
    // The fastest round trip shows the emulator's own overhead; the median allows for a busy
    // machine (the tests run in parallel on few cores).
    assert!(min < 90.0, "RTT {min} ms too far above 80 ms: {rtts:?}");
    assert!(
        median < 110.0,
        "median RTT {median} ms too far above 80 ms: {rtts:?}"
    );

    // 2. 20% loss eu -> us over 2000 packets.
    t.ctl("set eu>us loss=0.2");
    let before = t.link_stats("eu>us");
    let done = Arc::new(AtomicBool::new(false));
    let rx = receiver(&t, "10.77.2.12:9001", done.clone());
    const N: u64 = 2000;
    in_ns(&t.ns("eu"), move || {
        let s = bind("10.77.1.12:0");
        for i in 0..N {
            s.send_to(b"D-loss-probe-payload", "10.77.2.12:9001")
                .unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        send_end(&s, "10.77.2.12:9001", &done);
    })
    .join()
    .unwrap();
    let (received, _, _, _) = rx.join().unwrap();
    let after = t.link_stats("eu>us");
    let lost = N - received;
    let rate = lost as f64 / N as f64;
    let emu_dropped =
        after["dropped_loss"].as_u64().unwrap() - before["dropped_loss"].as_u64().unwrap();
    eprintln!(
        "loss 20%: {lost} of {N} lost ({:.1}%), emulator dropped {emu_dropped} (incl. end markers)",
        rate * 100.0
    );
    // Binomial standard deviation ~0.9%; five of them either side.
    assert!((0.155..=0.245).contains(&rate), "loss rate {rate}");
    assert!(
        emu_dropped >= lost,
        "more lost ({lost}) than the emulator dropped ({emu_dropped})"
    );

    // 3. Rate limit 4000 kbit/s (500 kB/s) eu -> us, offered about twice that.
    t.ctl("set eu>us loss=0 rate_kbps=4000 queue_bytes=32768");
    let before = t.link_stats("eu>us");
    let done = Arc::new(AtomicBool::new(false));
    let rx = receiver(&t, "10.77.2.13:9002", done.clone());
    const PAYLOAD: usize = 1172; // 1200-byte IP packets
    in_ns(&t.ns("eu"), move || {
        let s = bind("10.77.1.13:0");
        let mut pkt = vec![b'D'; PAYLOAD];
        pkt[1] = b'-';
        let start = Instant::now();
        let gap = Duration::from_micros(1200); // 1 MB/s offered
        for i in 0..850u32 {
            let at = start + gap * i;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            s.send_to(&pkt, "10.77.2.13:9002").unwrap();
        }
        send_end(&s, "10.77.2.13:9002", &done);
    })
    .join()
    .unwrap();
    let (n, bytes, first, last) = rx.join().unwrap();
    let after = t.link_stats("eu>us");
    let span = (last.unwrap() - first.unwrap()).as_secs_f64();
    // IP bytes after the first packet over the time they took.
    let ip_bytes = (bytes + 28 * n) - (PAYLOAD as u64 + 28);
    let throughput = ip_bytes as f64 / span;
    let queue_drops =
        after["dropped_queue"].as_u64().unwrap() - before["dropped_queue"].as_u64().unwrap();
    eprintln!(
        "rate 4000 kbit/s: {n} packets in {span:.3} s = {:.0} kbit/s, {queue_drops} queue drops",
        throughput * 8.0 / 1000.0
    );
    assert!(
        (throughput - 500_000.0).abs() < 50_000.0,
        "throughput {throughput} B/s, configured 500000"
    );
    assert!(
        queue_drops > 100,
        "only {queue_drops} queue drops at twice the rate"
    );

    // 4. TCP through the emulator: the handshake takes a round trip, 1 MB arrives intact.
    t.ctl("reset all");
    t.ctl("set eu<>us delay_ms=40");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_ns(&t.ns("us"), move || {
        let l = TcpListener::bind("10.77.2.11:9003").unwrap();
        ready_tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut data = Vec::new();
        c.read_to_end(&mut data).unwrap();
        data
    });
    ready_rx.recv().unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let connect_ms = in_ns(&t.ns("eu"), move || {
        let addr: SocketAddr = "10.77.2.11:9003".parse().unwrap();
        let start = Instant::now();
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        c.write_all(&sent).unwrap();
        ms
    })
    .join()
    .unwrap();
    let got = server.join().unwrap();
    eprintln!("TCP: connect {connect_ms:.1} ms, {} bytes", got.len());
    assert!(
        connect_ms >= 80.0,
        "TCP connect {connect_ms} ms without the WAN delay"
    );
    assert!(got == payload, "TCP data corrupted ({} bytes)", got.len());
}

/// Kills a child process (a bot) on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_of_nine_nodes_carries_media_across_the_wan() {
    // `up` returns once every node is ready and `pipemesh nodes` lists nine serving.
    let t = Topology::up(CLUSTER, "c");
    let out = t
        .command(CLUSTER)
        .args(["nodes", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = nodes
        .get("nodes")
        .unwrap_or(&nodes)
        .as_array()
        .expect("node list");
    let mut regions: Vec<String> = list
        .iter()
        .map(|n| n["region"].as_str().unwrap_or_default().to_string())
        .collect();
    regions.sort();
    assert_eq!(
        regions,
        ["ap", "ap", "ap", "eu", "eu", "eu", "us", "us", "us"]
    );

    // A publisher on eu1 and a consumer on us2, 40 ms apart.
    t.ctl("set all delay_ms=40");
    let _alice = Child(
        t.command(CLUSTER)
            .args(["bot", "eu", "1", "--room", "wan", "--peer-id", "alice"])
            .args(["--consume=false", "--duration", "60"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = t
        .command(CLUSTER)
        .args(["bot", "us", "2", "--room", "wan", "--peer-id", "bob"])
        .args(["--produce", "none", "--duration", "4"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bob failed: {text}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("summary"))
        .unwrap_or_else(|| panic!("no summary from bob: {text}"));
    eprintln!("bob (us2) from alice (eu1): {summary}");
    let field = |name: &str| -> f64 {
        let v = summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {summary}"));
        v.trim_end_matches("ms")
            .split('(')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("pkts=") > 100.0, "{summary}");
    assert!(
        field("p50=") >= 40.0,
        "one-way delay below the WAN's 40 ms: {summary}"
    );
    let all: serde_json::Value = serde_json::from_str(&t.ctl("stats")).unwrap();
    assert!(all["tun_tx_dropped"].is_u64(), "no tun_tx_dropped in {all}");
    let eu_us = t.link_stats("eu>us");
    assert!(
        eu_us["bytes_out"].as_u64().unwrap() > 100_000,
        "eu>us: {eu_us}"
    );
}
