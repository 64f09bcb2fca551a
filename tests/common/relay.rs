//! A user-space UDP relay for one client, to put faults on the path between two nodes.
//!
//! The relay listens on `127.0.0.1:0`. The first address that sends to it becomes its client;
//! datagrams from the client go to the upstream address from a second socket of the relay, and
//! datagrams from the upstream address come back to the client from the listening socket, so
//! each end sees the relay as its peer. Datagrams from any other address are counted as
//! foreign and dropped.
//!
//! Faults, controlled by the test while the relay runs:
//! - [`Relay::cut`] drops every datagram both ways (counted) until [`Relay::heal`]; datagrams
//!   already delayed when the cut starts are dropped too, as on a dead path.
//! - [`Relay::set_delay`] delays each datagram by a fixed one-way time (both directions, order
//!   kept).
//!
//! Every datagram goes through [`Relay::verdict`] and then a per-direction queue drained by a
//! sender task that holds it until its due time; further faults (loss, jitter, bandwidth caps)
//! belong in those two places. The tasks stop when the [`Relay`] is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Datagrams queued per direction (waiting for their delay) before more are dropped.
const QUEUE: usize = 16_384;
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Bytes of forwarded datagrams.
    pub forwarded_bytes: u64,
    /// Datagrams dropped (cut, full queue, send error).
    pub dropped: u64,
    /// Bytes of dropped datagrams.
    pub dropped_bytes: u64,
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client -> upstream.
    pub to_upstream: DirStats,
    /// Upstream -> client.
    pub to_client: DirStats,
    /// Datagrams from addresses that are neither the client nor the upstream (dropped).
    pub foreign: u64,
}

impl RelayStats {
    /// Datagrams dropped both ways.
    pub fn dropped(&self) -> u64 {
        self.to_upstream.dropped + self.to_client.dropped
    }

    /// Datagrams forwarded both ways.
    pub fn forwarded(&self) -> u64 {
        self.to_upstream.forwarded + self.to_client.forwarded
    }
}

/// Direction of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client -> upstream.
    ToUpstream,
    /// Upstream -> client.
    ToClient,
}

/// What happens to one datagram.
enum Verdict {
    Drop,
    /// Send once this time has come.
    SendAt(Instant),
}

#[derive(Default)]
struct DirCounters {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl DirCounters {
    fn forwarded(&self, len: usize) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        self.forwarded_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
    }

    fn dropped(&self, len: usize) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirStats {
        DirStats {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            dropped_bytes: self.dropped_bytes.load(Ordering::Relaxed),
        }
    }
}

struct Shared {
    cut: AtomicBool,
    delay_us: AtomicU64,
    client: Mutex<Option<SocketAddr>>,
    to_upstream: DirCounters,
    to_client: DirCounters,
    foreign: AtomicU64,
}

impl Shared {
    fn counters(&self, dir: Dir) -> &DirCounters {
        match dir {
            Dir::ToUpstream => &self.to_upstream,
            Dir::ToClient => &self.to_client,
        }
    }

    /// The fault model: decides the fate of one datagram when it arrives.
    fn verdict(&self, _dir: Dir, _len: usize, now: Instant) -> Verdict {
        if self.cut.load(Ordering::Relaxed) {
            return Verdict::Drop;
        }
        let delay = Duration::from_micros(self.delay_us.load(Ordering::Relaxed));
        Verdict::SendAt(now + delay)
    }

    /// Counts and queues (or drops) one received datagram.
    fn admit(&self, dir: Dir, data: &[u8], queue: &mpsc::Sender<(Instant, Bytes)>) {
        let counters = self.counters(dir);
        match self.verdict(dir, data.len(), Instant::now()) {
            Verdict::Drop => counters.dropped(data.len()),
            Verdict::SendAt(at) => {
                if queue.try_send((at, Bytes::copy_from_slice(data))).is_err() {
                    counters.dropped(data.len());
                }
            }
        }
    }
}

/// A running relay; stopped when dropped.
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Relay {
    /// Starts a relay towards `upstream`, without faults.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        Self::start_with_delay(upstream, Duration::ZERO).await
    }

    /// Starts a relay towards `upstream` with a fixed one-way `delay` each way.
    pub async fn start_with_delay(upstream: SocketAddr, delay: Duration) -> std::io::Result<Relay> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            cut: AtomicBool::new(false),
            delay_us: AtomicU64::new(delay.as_micros() as u64),
            client: Mutex::new(None),
            to_upstream: DirCounters::default(),
            to_client: DirCounters::default(),
            foreign: AtomicU64::new(0),
        });
        let (up_tx, up_rx) = mpsc::channel(QUEUE);
        let (down_tx, down_rx) = mpsc::channel(QUEUE);
        let tasks = vec![
            // Client -> relay (listening socket).
            tokio::spawn({
                let (listen, shared) = (listen.clone(), shared.clone());
                async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        let (n, from) = match listen.recv_from(&mut buf).await {
                            Ok(r) => r,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            }
                        };
                        let is_client = {
                            let mut c = shared.client.lock().expect("relay lock");
                            *c.get_or_insert(from) == from
                        };
                        if is_client {
                            shared.admit(Dir::ToUpstream, &buf[..n], &up_tx);
                        } else {
                            shared.foreign.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }),
            // Upstream -> relay (upstream socket).
            tokio::spawn({
                let (up, shared) = (up.clone(), shared.clone());
                async move {
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    loop {
                        let (n, from) = match up.recv_from(&mut buf).await {
                            Ok(r) => r,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            }
                        };
                        if from == upstream {
                            shared.admit(Dir::ToClient, &buf[..n], &down_tx);
                        } else {
                            shared.foreign.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }),
            tokio::spawn(send_task(
                shared.clone(),
                Dir::ToUpstream,
                up_rx,
                up,
                Some(upstream),
            )),
            tokio::spawn(send_task(
                shared.clone(),
                Dir::ToClient,
                down_rx,
                listen,
                None,
            )),
        ];
        Ok(Relay {
            addr,
            upstream,
            shared,
            tasks,
        })
    }

    /// The address the client must send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The client, once it has sent something.
    pub fn client(&self) -> Option<SocketAddr> {
        *self.shared.client.lock().expect("relay lock")
    }

    /// Drops everything both ways until [`Relay::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::Relaxed);
    }

    /// Ends a cut.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::Relaxed);
    }

    /// Whether the path is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::Relaxed)
    }

    /// Sets the one-way delay of datagrams arriving from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// The counters.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            to_upstream: self.shared.to_upstream.snapshot(),
            to_client: self.shared.to_client.snapshot(),
            foreign: self.shared.foreign.load(Ordering::Relaxed),
        }
    }
}

/// Sends the datagrams of one direction from `socket` when they are due, unless the path was
/// cut meanwhile; to `to`, or to the client when `None`.
async fn send_task(
    shared: Arc<Shared>,
    dir: Dir,
    mut queue: mpsc::Receiver<(Instant, Bytes)>,
    socket: Arc<UdpSocket>,
    to: Option<SocketAddr>,
) {
    while let Some((at, data)) = queue.recv().await {
        tokio::time::sleep_until(at).await;
        let counters = shared.counters(dir);
        if shared.cut.load(Ordering::Relaxed) {
            counters.dropped(data.len());
            continue;
        }
        let to = to.or_else(|| *shared.client.lock().expect("relay lock"));
        let sent = match to {
            Some(to) => socket.send_to(&data, to).await.is_ok(),
            None => false,
        };
        if sent {
            counters.forwarded(data.len());
        } else {
            counters.dropped(data.len());
        }
    }
}
