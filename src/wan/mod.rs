//! The WAN emulator behind `pipemesh-wan` (see `simulations/README.md`): a user-space router
//! stage that reads IPv4 packets from a TUN device, classifies them by the regions of their
//! source and destination addresses, applies the directed link's impairments (delay, jitter,
//! loss, rate limit) and writes them back at their due time.
//!
//! Everything here is sans-IO: [`Emulator::on_packet`] takes `now` and a packet,
//! [`Emulator::poll_due`] hands back packets whose time has come, and
//! [`Emulator::command`] applies a control command. The TUN and socket glue lives in
//! `src/bin/pipemesh-wan.rs`.

pub mod link;
pub mod packet;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub use link::{Link, LinkParams, LinkStats, Verdict};
pub use packet::{parse_ipv4, Ipv4Header, ParseError};

/// An IPv4 prefix such as `10.77.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, "32"));
        let addr = a
            .parse()
            .map_err(|e| format!("bad address in {s:?}: {e}"))?;
        let prefix: u8 = p.parse().map_err(|e| format!("bad prefix in {s:?}: {e}"))?;
        if prefix > 32 {
            return Err(format!("prefix above 32 in {s:?}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// The emulator's configuration file (TOML).
///
/// ```toml
/// seed = 1
/// [regions]
/// eu = ["10.77.1.0/24"]
/// us = ["10.77.2.0/24"]
/// [default]            # every inter-region direction not listed under [links]
/// delay_ms = 10
/// [links."eu>us"]      # one direction; "eu<>us" sets both
/// delay_ms = 40
/// loss = 0.01
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub seed: Option<u64>,
    pub regions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub default: LinkParams,
    #[serde(default)]
    pub links: BTreeMap<String, LinkParams>,
    /// Cap on bytes held across all links, protecting memory; beyond it packets are dropped.
    #[serde(default)]
    pub max_held_bytes: Option<usize>,
}

/// Counters for packets that belong to no link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Not IPv4 (e.g. IPv6): passed through unimpaired.
    pub passed_non_ipv4: u64,
    /// IPv4 with an address outside every region, or both ends in one region: passed through.
    pub passed_unclassified: u64,
    /// Malformed IPv4 headers: dropped.
    pub dropped_malformed: u64,
    /// Dropped because `max_held_bytes` was reached.
    pub dropped_overflow: u64,
}

/// Where a packet offered to [`Emulator::on_packet`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Held until the given time (which may be `now`).
    Held(Instant),
    /// Dropped, with the reason.
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Loss,
    Queue,
    Malformed,
    Overflow,
}

struct Due {
    at: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The emulator: regions, one [`Link`] per ordered pair of distinct regions, and the
/// due-time queue of held packets.
pub struct Emulator {
    regions: Vec<(String, Vec<Cidr>)>,
    links: BTreeMap<(usize, usize), Link>,
    queue: BinaryHeap<Reverse<Due>>,
    rng: StdRng,
    seq: u64,
    held_bytes: usize,
    max_held_bytes: usize,
    pub counters: Counters,
}

impl Emulator {
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut regions = Vec::new();
        for (name, prefixes) in &config.regions {
            let cidrs = prefixes
                .iter()
                .map(|p| p.parse())
                .collect::<Result<Vec<Cidr>, _>>()?;
            regions.push((name.clone(), cidrs));
        }
        config.default.validate()?;
        let mut links = BTreeMap::new();
        for a in 0..regions.len() {
            for b in 0..regions.len() {
                if a != b {
                    links.insert((a, b), Link::new(config.default));
                }
            }
        }
        let mut emu = Emulator {
            regions,
            links,
            queue: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(config.seed.unwrap_or(1)),
            seq: 0,
            held_bytes: 0,
            max_held_bytes: config.max_held_bytes.unwrap_or(256 << 20),
            counters: Counters::default(),
        };
        for (key, params) in &config.links {
            params.validate()?;
            for pair in emu.resolve(key)? {
                emu.links
                    .get_mut(&pair)
                    .expect("pair exists")
                    .set_params(*params);
            }
        }
        Ok(emu)
    }

    fn region_index(&self, name: &str) -> Result<usize, String> {
        self.regions
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| format!("unknown region {name:?}"))
    }

    /// Resolves `a>b`, `a<>b` or `all` to directed pairs.
    fn resolve(&self, key: &str) -> Result<Vec<(usize, usize)>, String> {
        if key == "all" {
            return Ok(self.links.keys().copied().collect());
        }
        let (pair, both) = match key.split_once("<>") {
            Some(p) => (p, true),
            None => (
                key.split_once('>')
                    .ok_or_else(|| format!("link {key:?} is not a>b, a<>b or all"))?,
                false,
            ),
        };
        let a = self.region_index(pair.0.trim())?;
        let b = self.region_index(pair.1.trim())?;
        if a == b {
            return Err(format!("link {key:?} joins a region to itself"));
        }
        Ok(if both {
            vec![(a, b), (b, a)]
        } else {
            vec![(a, b)]
        })
    }

    fn region_of(&self, ip: Ipv4Addr) -> Option<usize> {
        self.regions
            .iter()
            .position(|(_, cidrs)| cidrs.iter().any(|c| c.contains(ip)))
    }

    pub fn link(&self, from: &str, to: &str) -> Option<&Link> {
        let a = self.region_index(from).ok()?;
        let b = self.region_index(to).ok()?;
        self.links.get(&(a, b))
    }

    /// Offers a packet read from the TUN device at `now`.
    pub fn on_packet(&mut self, now: Instant, packet: Vec<u8>) -> Outcome {
        let at = match parse_ipv4(&packet) {
            Err(ParseError::NotIpv4(_)) => {
                self.counters.passed_non_ipv4 += 1;
                now
            }
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return Outcome::Dropped(DropReason::Malformed);
            }
            Ok(h) => match (self.region_of(h.src), self.region_of(h.dst)) {
                (Some(a), Some(b)) if a != b => {
                    let link = self.links.get_mut(&(a, b)).expect("pair exists");
                    match link.on_packet(now, packet.len(), &mut self.rng) {
                        Verdict::DeliverAt(t) => t,
                        Verdict::DropLoss => return Outcome::Dropped(DropReason::Loss),
                        Verdict::DropQueue => return Outcome::Dropped(DropReason::Queue),
                    }
                }
                _ => {
                    self.counters.passed_unclassified += 1;
                    now
                }
            },
        };
        if self.held_bytes + packet.len() > self.max_held_bytes {
            self.counters.dropped_overflow += 1;
            return Outcome::Dropped(DropReason::Overflow);
        }
        self.held_bytes += packet.len();
        self.seq += 1;
        self.queue.push(Reverse(Due {
            at,
            seq: self.seq,
            packet,
        }));
        Outcome::Held(at)
    }

    /// When the next held packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|d| d.0.at)
    }

    /// Takes the next packet due at or before `now`.
    pub fn poll_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? > now {
            return None;
        }
        let d = self.queue.pop()?.0;
        self.held_bytes -= d.packet.len();
        Some(d.packet)
    }

    /// Packets currently held.
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// Statistics and current parameters as JSON.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut links = serde_json::Map::new();
        for ((a, b), l) in &self.links {
            links.insert(
                format!("{}>{}", self.regions[*a].0, self.regions[*b].0),
                serde_json::json!({ "params": l.params(), "stats": l.stats }),
            );
        }
        serde_json::json!({
            "links": links,
            "counters": self.counters,
            "held_packets": self.queue.len(),
            "held_bytes": self.held_bytes,
        })
    }

    /// Applies one control command and returns its reply:
    ///
    /// - `ping` → `pong`
    /// - `set <a>b|a<>b|all> key=value ...` with keys of [`LinkParams`] (`delay_ms`,
    ///   `jitter_ms`, `loss`, `rate_kbps`, `queue_bytes`, `reorder`); unnamed keys keep
    ///   their values → `ok`
    /// - `reset <a>b|a<>b|all>`: back to no impairment → `ok`
    /// - `stats`: [`Emulator::stats_json`]
    pub fn command(&mut self, line: &str) -> Result<String, String> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ping") => Ok("pong".into()),
            Some("stats") => Ok(self.stats_json().to_string()),
            Some(cmd @ ("set" | "reset")) => {
                let key = words.next().ok_or("missing link")?;
                let pairs = self.resolve(key)?;
                let mut updates = Vec::new();
                for w in words {
                    let (k, v) = w
                        .split_once('=')
                        .ok_or_else(|| format!("{w:?} is not key=value"))?;
                    updates.push((k, v));
                }
                if cmd == "reset" && !updates.is_empty() {
                    return Err("reset takes no values".into());
                }
                // Validate against the first pair, then apply to all (all-or-nothing).
                let mut new = Vec::new();
                for pair in &pairs {
                    let mut p = if cmd == "reset" {
                        LinkParams::default()
                    } else {
                        *self.links[pair].params()
                    };
                    for (k, v) in &updates {
                        apply_param(&mut p, k, v)?;
                    }
                    p.validate()?;
                    new.push((*pair, p));
                }
                for (pair, p) in new {
                    self.links
                        .get_mut(&pair)
                        .expect("pair exists")
                        .set_params(p);
                }
                Ok("ok".into())
            }
            Some(other) => Err(format!("unknown command {other:?}")),
            None => Err("empty command".into()),
        }
    }
}

fn apply_param(p: &mut LinkParams, key: &str, value: &str) -> Result<(), String> {
    let num = || -> Result<f64, String> {
        value
            .parse::<f64>()
            .map_err(|e| format!("{key}={value}: {e}"))
    };
    match key {
        "delay_ms" => p.delay_ms = num()?,
        "jitter_ms" => p.jitter_ms = num()?,
        "loss" => p.loss = num()?,
        "rate_kbps" => p.rate_kbps = num()?,
        "queue_bytes" => {
            p.queue_bytes = value.parse().map_err(|e| format!("{key}={value}: {e}"))?
        }
        "reorder" => p.reorder = value.parse().map_err(|e| format!("{key}={value}: {e}"))?,
        _ => return Err(format!("unknown parameter {key:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> Config {
        toml::from_str(
            r#"
            seed = 5
            [regions]
            eu = ["10.77.1.0/24"]
            us = ["10.77.2.0/24"]
            ap = ["10.77.3.0/24"]
            [default]
            delay_ms = 10
            [links."eu<>us"]
            delay_ms = 40
            [links."ap>eu"]
            loss = 1.0
            "#,
        )
        .unwrap()
    }

    fn udp(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
        let total = 28 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    const EU: [u8; 4] = [10, 77, 1, 11];
    const US: [u8; 4] = [10, 77, 2, 11];
    const AP: [u8; 4] = [10, 77, 3, 11];

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.77.1.0/24".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(10, 77, 1, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 77, 2, 1)));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!("10.0.0.1/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn classifies_by_region_pair() {
        let mut e = Emulator::new(&config()).unwrap();
        let now = Instant::now();
        let ms = |v| now + Duration::from_millis(v);
        assert_eq!(e.on_packet(now, udp(EU, US, 10)), Outcome::Held(ms(40)));
        assert_eq!(e.on_packet(now, udp(US, EU, 10)), Outcome::Held(ms(40)));
        assert_eq!(e.on_packet(now, udp(EU, AP, 10)), Outcome::Held(ms(10)));
        assert_eq!(
            e.on_packet(now, udp(AP, EU, 10)),
            Outcome::Dropped(DropReason::Loss)
        );
        // Same region and unknown addresses pass at once.
        assert_eq!(e.on_packet(now, udp(EU, EU, 10)), Outcome::Held(now));
        assert_eq!(
            e.on_packet(now, udp([1, 1, 1, 1], US, 10)),
            Outcome::Held(now)
        );
        assert_eq!(e.counters.passed_unclassified, 2);
        // IPv6 passes, garbage is dropped.
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        assert_eq!(e.on_packet(now, v6), Outcome::Held(now));
        assert_eq!(
            e.on_packet(now, vec![0x45, 0]),
            Outcome::Dropped(DropReason::Malformed)
        );
        assert_eq!(e.counters.passed_non_ipv4, 1);
        assert_eq!(e.counters.dropped_malformed, 1);
        assert_eq!(e.link("eu", "us").unwrap().stats.packets_out, 1);
        assert_eq!(e.link("ap", "eu").unwrap().stats.dropped_loss, 1);
    }

    #[test]
    fn due_queue_releases_in_time_order() {
        let mut e = Emulator::new(&config()).unwrap();
        let now = Instant::now();
        e.on_packet(now, udp(EU, US, 1)); // due +40
        e.on_packet(now, udp(EU, AP, 2)); // due +10
        e.on_packet(now, udp(EU, EU, 3)); // due now
        assert_eq!(e.held(), 3);
        assert_eq!(e.next_due(), Some(now));
        assert_eq!(e.poll_due(now).unwrap().len(), 31);
        assert!(e.poll_due(now).is_none());
        assert_eq!(e.next_due(), Some(now + Duration::from_millis(10)));
        let later = now + Duration::from_millis(50);
        assert_eq!(e.poll_due(later).unwrap().len(), 30);
        assert_eq!(e.poll_due(later).unwrap().len(), 29);
        assert!(e.poll_due(later).is_none());
        assert_eq!(e.next_due(), None);
        assert_eq!(e.stats_json()["held_bytes"], 0);
    }

    #[test]
    fn overflow_cap_drops() {
        let mut c = config();
        c.max_held_bytes = Some(100);
        let mut e = Emulator::new(&c).unwrap();
        let now = Instant::now();
        assert!(matches!(
            e.on_packet(now, udp(EU, US, 50)),
            Outcome::Held(_)
        ));
        assert_eq!(
            e.on_packet(now, udp(EU, US, 50)),
            Outcome::Dropped(DropReason::Overflow)
        );
        assert_eq!(e.counters.dropped_overflow, 1);
    }

    #[test]
    fn commands_change_links_at_runtime() {
        let mut e = Emulator::new(&config()).unwrap();
        assert_eq!(e.command("ping").unwrap(), "pong");
        e.command("set eu>us delay_ms=5 loss=0.5 rate_kbps=100")
            .unwrap();
        let p = *e.link("eu", "us").unwrap().params();
        assert_eq!((p.delay_ms, p.loss, p.rate_kbps), (5.0, 0.5, 100.0));
        assert_eq!(e.link("us", "eu").unwrap().params().delay_ms, 40.0);
        e.command("set all jitter_ms=2").unwrap();
        assert_eq!(e.link("ap", "us").unwrap().params().jitter_ms, 2.0);
        assert_eq!(e.link("ap", "us").unwrap().params().delay_ms, 10.0);
        e.command("reset us<>eu").unwrap();
        assert_eq!(*e.link("eu", "us").unwrap().params(), LinkParams::default());
        for bad in [
            "",
            "frob",
            "set",
            "set eu>eu delay_ms=1",
            "set eu>xx delay_ms=1",
            "set eu-us delay_ms=1",
            "set eu>us loss=2",
            "set eu>us delay_ms=abc",
            "set eu>us colour=red",
            "set eu>us delay_ms",
            "reset eu>us loss=0",
        ] {
            assert!(e.command(bad).is_err(), "{bad:?} accepted");
        }
        // A failed command changes nothing.
        assert!(e.command("set all delay_ms=7 loss=3").is_err());
        assert_eq!(e.link("ap", "us").unwrap().params().delay_ms, 10.0);
        let stats: serde_json::Value = serde_json::from_str(&e.command("stats").unwrap()).unwrap();
        assert_eq!(stats["links"]["ap>us"]["params"]["jitter_ms"], 2.0);
        assert_eq!(stats["links"].as_object().unwrap().len(), 6);
    }

    #[test]
    fn config_errors_are_reported() {
        let mut c = config();
        c.links.insert("eu>mars".into(), LinkParams::default());
        assert!(Emulator::new(&c).is_err());
        assert!(
            toml::from_str::<Config>("[regions]\neu=[\"1.0.0.0/8\"]\n[default]\ndelay=3\n")
                .is_err()
        );
    }
}
