//! [`BotTransport`]: one WebRTC transport towards the node. A driver task owns the socket
//! (UDP, or TCP with RFC 4571 framing), the [`IceController`], the DTLS client session, both
//! SRTP contexts, the media sources and the receive statistics; the handle talks to it over a
//! bounded command queue and publishes [`TransportState`] on a watch channel.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use webrtc_srtp::context::Context as SrtpContext;

use super::ice::{IceController, IceInput, IceParameters};
use super::params::{ConsumerStream, TransportInfo};
use super::BotError;
use crate::bot::media::{
    AudioConfig, AudioSource, MediaError, TransportSeq, VideoConfig, VideoSource,
};
use crate::bot::stats::RecvStats;
use crate::edge::demux::{classify, encode_frame, FrameDecoder, PacketClass};
use crate::edge::dtls::{DtlsEvent, DtlsIdentity, DtlsRole, DtlsSession, Fingerprint};
use crate::edge::stun::StunMessage;
use crate::router::rtcp_core::{parse_compound, RtcpItem};
use crate::router::seq::RtpView;
use crate::timing::BOT_DTLS_TIMEOUT;

/// Commands queued towards one transport driver.
const TRANSPORT_QUEUE: usize = 256;
/// Largest packet the bot sends or receives.
const MTU: usize = 1500;

/// Configuration of a media source to start once SRTP is ready.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Opus audio.
    Audio(AudioConfig),
    /// VP8 video.
    Video(VideoConfig),
}

enum Source {
    Audio(AudioSource),
    Video(VideoSource),
}

impl Source {
    fn next_packet_time(&self) -> Instant {
        match self {
            Source::Audio(a) => a.next_packet_time(),
            Source::Video(v) => v.next_packet_time(),
        }
    }
    fn poll(
        &mut self,
        now: Instant,
        wall: u64,
        tcc: &mut TransportSeq,
        buf: &mut [u8],
    ) -> Result<Option<usize>, MediaError> {
        match self {
            Source::Audio(a) => a.poll(now, wall, tcc, buf),
            Source::Video(v) => v.poll(now, wall, tcc, buf),
        }
    }
}

/// Counters and state of a transport, published on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportState {
    /// A connectivity check has succeeded (with the current or an earlier credential set).
    pub ice_connected: bool,
    /// Successful connectivity checks.
    pub ice_successes: u64,
    /// Error responses to our checks.
    pub ice_errors: u64,
    /// DTLS is done and SRTP is keyed.
    pub dtls_connected: bool,
    /// The SRTP protection profile DTLS negotiated (`Debug` of webrtc-srtp's), once keyed.
    pub srtp_profile: Option<String>,
    /// Set when the driver stopped, with the reason.
    pub closed: Option<String>,
    /// SRTP packets sent.
    pub rtp_sent: u64,
    /// SRTCP packets sent.
    pub rtcp_sent: u64,
    /// Raw datagrams/frames sent with [`BotTransport::send_raw`].
    pub raw_sent: u64,
    /// RTP packets received and decrypted.
    pub rtp_received: u64,
    /// RTCP compound packets received and decrypted.
    pub rtcp_received: u64,
    /// PLI/FIR items addressed to one of our sources.
    pub keyframe_requests: u64,
    /// Packets that failed SRTP/SRTCP authentication or decryption.
    pub srtp_errors: u64,
    /// Decrypted RTP of an SSRC no consumer announced.
    pub unknown_ssrc: u64,
    /// Send failures (full socket buffer, ICMP unreachable...).
    pub send_errors: u64,
    /// RTP packets received per SSRC.
    pub received_by_ssrc: BTreeMap<u32, u64>,
}

impl TransportState {
    /// Packets received for `ssrc`.
    pub fn received(&self, ssrc: u32) -> u64 {
        self.received_by_ssrc.get(&ssrc).copied().unwrap_or(0)
    }
}

/// Statistics of one received stream.
#[derive(Debug, Clone)]
pub struct StreamStats {
    /// The consumer.
    pub consumer: ConsumerStream,
    /// Its receive statistics.
    pub stats: RecvStats,
}

enum Command {
    AddSource(SourceConfig),
    AddReceiver(ConsumerStream),
    RemoveReceiver(u32),
    RestartIce(IceParameters),
    SendRaw(Vec<u8>),
    SendRtcp(Vec<u8>),
    Stats(oneshot::Sender<Vec<StreamStats>>),
}

/// Handle to one transport towards the node. Dropping it stops the driver.
pub struct BotTransport {
    id: String,
    remote: SocketAddr,
    cmd: mpsc::Sender<Command>,
    state: watch::Receiver<TransportState>,
    task: JoinHandle<()>,
}

impl Drop for BotTransport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Io {
    Udp(UdpSocket),
    Tcp(TcpStream, Box<FrameDecoder>),
}

impl Io {
    /// Reads one datagram or RFC 4571 frame. Cancel-safe: a frame read but not returned stays
    /// in the decoder.
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Udp(s) => s.recv(buf).await,
            Io::Tcp(s, dec) => loop {
                match dec.next_frame() {
                    Ok(Some(f)) => {
                        let n = f.len().min(buf.len());
                        buf[..n].copy_from_slice(&f[..n]);
                        return Ok(n);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                }
                let n = s.read(dec.read_buf()).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                dec.commit(n);
            },
        }
    }

    async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Udp(s) => s.send(data).await.map(|_| ()),
            Io::Tcp(s, _) => {
                let mut framed = Vec::with_capacity(data.len() + 2);
                encode_frame(data, &mut framed)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                s.write_all(&framed).await
            }
        }
    }
}

impl BotTransport {
    /// Opens a socket to the node's UDP (or TCP) candidate and starts the driver: ICE checks
    /// at once, the DTLS client handshake once a check succeeds, media once SRTP is keyed.
    /// Send `connectWebRtcTransport` (role `client`) before calling this.
    pub async fn open(
        info: &TransportInfo,
        tcp: bool,
        identity: &DtlsIdentity,
        seed: u64,
        srtp_profile: Option<crate::srtp::Profile>,
    ) -> Result<Self, BotError> {
        let remote = info.candidate(tcp)?;
        let io = if tcp {
            let s = TcpStream::connect(remote).await?;
            s.set_nodelay(true)?;
            Io::Tcp(s, Box::new(FrameDecoder::new(MTU * 2)))
        } else {
            let local: SocketAddr = if remote.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .map_err(|_| BotError::InvalidArgument("local address".into()))?;
            let s = UdpSocket::bind(local).await?;
            s.connect(remote).await?;
            Io::Udp(s)
        };
        let (cmd, cmd_rx) = mpsc::channel(TRANSPORT_QUEUE);
        let (state_tx, state) = watch::channel(TransportState::default());
        let (dtls_tx, dtls_rx) = mpsc::channel(64);
        let now = Instant::now();
        let driver = Driver {
            io,
            ice: IceController::new(now, &info.ice_parameters, seed),
            identity: identity.clone(),
            srtp_profile,
            remote_fingerprints: info.dtls_parameters.fingerprints.clone(),
            dtls: None,
            dtls_tx,
            dtls_rx,
            srtp_out: None,
            srtp_in: None,
            pending_sources: Vec::new(),
            sources: Vec::new(),
            receivers: HashMap::new(),
            rtx: HashMap::new(),
            tcc: TransportSeq::new(rand::rng().random()),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            state: state_tx,
        };
        let task = tokio::spawn(driver.run(cmd_rx));
        Ok(Self {
            id: info.id.clone(),
            remote,
            cmd,
            state,
            task,
        })
    }

    /// The node's transport id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node's address this transport talks to.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The latest state.
    pub fn state(&self) -> TransportState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes, for waiting on conditions.
    pub fn watch(&self) -> watch::Receiver<TransportState> {
        self.state.clone()
    }

    /// Waits until `pred` holds on the state, or `timeout` passes.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&TransportState) -> bool,
    ) -> Result<TransportState, BotError> {
        let mut w = self.state.clone();
        let r = tokio::time::timeout(timeout, async {
            w.wait_for(|s| pred(s)).await.map(|s| s.clone())
        })
        .await;
        match r {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(BotError::TransportClosed),
            Err(_) => Err(BotError::WaitTimeout(what.to_owned())),
        }
    }

    async fn command(&self, c: Command) -> Result<(), BotError> {
        self.cmd
            .send(c)
            .await
            .map_err(|_| BotError::TransportClosed)
    }

    /// Starts a media source (now, or when SRTP becomes ready).
    pub async fn add_source(&self, config: SourceConfig) -> Result<(), BotError> {
        self.command(Command::AddSource(config)).await
    }

    /// Routes `stream.ssrc` to receive statistics.
    pub async fn add_receiver(&self, stream: ConsumerStream) -> Result<(), BotError> {
        self.command(Command::AddReceiver(stream)).await
    }

    /// Stops accounting `ssrc` (statistics so far are dropped).
    pub async fn remove_receiver(&self, ssrc: u32) -> Result<(), BotError> {
        self.command(Command::RemoveReceiver(ssrc)).await
    }

    /// Switches ICE to the credentials `restartIce` returned.
    pub async fn restart_ice(&self, params: IceParameters) -> Result<(), BotError> {
        self.command(Command::RestartIce(params)).await
    }

    /// Sends bytes as they are (no SRTP) on the transport's 5-tuple, framed on TCP.
    pub async fn send_raw(&self, data: Vec<u8>) -> Result<(), BotError> {
        self.command(Command::SendRaw(data)).await
    }

    /// Encrypts and sends a plain RTCP compound packet (dropped until SRTP is ready).
    pub async fn send_rtcp(&self, rtcp: Vec<u8>) -> Result<(), BotError> {
        self.command(Command::SendRtcp(rtcp)).await
    }

    /// Statistics of every received stream.
    pub async fn stats(&self) -> Result<Vec<StreamStats>, BotError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Stats(tx)).await?;
        rx.await.map_err(|_| BotError::TransportClosed)
    }
}

struct Driver {
    io: Io,
    ice: IceController,
    identity: DtlsIdentity,
    /// The only SRTP profile offered, if restricted.
    srtp_profile: Option<crate::srtp::Profile>,
    remote_fingerprints: Vec<Fingerprint>,
    dtls: Option<DtlsSession>,
    dtls_tx: mpsc::Sender<DtlsEvent>,
    dtls_rx: mpsc::Receiver<DtlsEvent>,
    srtp_out: Option<SrtpContext>,
    srtp_in: Option<SrtpContext>,
    pending_sources: Vec<SourceConfig>,
    sources: Vec<Source>,
    receivers: HashMap<u32, StreamStats>,
    /// RTX SSRC -> media SSRC.
    rtx: HashMap<u32, u32>,
    tcc: TransportSeq,
    rng: StdRng,
    state: watch::Sender<TransportState>,
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; MTU * 2];
        let reason = loop {
            let deadline = self.next_deadline();
            tokio::select! {
                r = self.io.recv(&mut buf) => match r {
                    Ok(n) => self.on_packet(&buf[..n]),
                    // A connected UDP socket reports ICMP errors; the node may come back.
                    Err(e) if matches!(self.io, Io::Udp(_))
                        && e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => break format!("socket: {e}"),
                },
                c = cmds.recv() => match c {
                    Some(c) => self.on_command(c).await,
                    None => break "handle dropped".to_owned(),
                },
                Some(ev) = self.dtls_rx.recv() => {
                    if let Some(r) = self.on_dtls(ev).await {
                        break r;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.on_timeout().await;
        };
        self.state.send_modify(|s| s.closed = Some(reason));
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.ice.poll_timeout();
        if self.srtp_out.is_some() {
            for s in &self.sources {
                d = d.min(s.next_packet_time());
            }
        }
        d
    }

    async fn send(&mut self, data: &[u8]) {
        if self.io.send(data).await.is_err() {
            self.state.send_modify(|s| s.send_errors += 1);
        }
    }

    async fn on_timeout(&mut self) {
        let now = Instant::now();
        let mut out = Vec::with_capacity(128);
        if self.ice.poll_transmit(now, &mut out) {
            self.send(&out).await;
        }
        let Some(ctx) = self.srtp_out.as_mut() else {
            return;
        };
        let wall = wall_us();
        let mut buf = [0u8; MTU];
        let mut packets = Vec::new();
        for s in &mut self.sources {
            loop {
                match s.poll(now, wall, &mut self.tcc, &mut buf) {
                    Ok(Some(n)) => match ctx.encrypt_rtp(&buf[..n]) {
                        Ok(p) => packets.push(p),
                        Err(e) => tracing::debug!(error = %e, "SRTP encrypt failed"),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "media source failed");
                        break;
                    }
                }
            }
        }
        let mut sent = 0;
        for p in packets {
            if self.io.send(&p).await.is_ok() {
                sent += 1;
            } else {
                self.state.send_modify(|s| s.send_errors += 1);
            }
        }
        if sent > 0 {
            self.state.send_modify(|s| s.rtp_sent += sent);
        }
    }

    fn start_source(&mut self, config: SourceConfig) {
        let now = Instant::now();
        let r = match config {
            SourceConfig::Audio(c) => AudioSource::new(c, now, &mut self.rng).map(Source::Audio),
            SourceConfig::Video(c) => VideoSource::new(c, now, &mut self.rng).map(Source::Video),
        };
        match r {
            Ok(s) => self.sources.push(s),
            Err(e) => tracing::warn!(error = %e, "cannot start media source"),
        }
    }

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::AddSource(cfg) => {
                if self.srtp_out.is_some() {
                    self.start_source(cfg);
                } else {
                    self.pending_sources.push(cfg);
                }
            }
            Command::AddReceiver(stream) => {
                if let Some(rtx) = stream.rtx_ssrc {
                    self.rtx.insert(rtx, stream.ssrc);
                }
                let stats = RecvStats::new(stream.ssrc, stream.codec, stream.clock_rate);
                self.receivers.insert(
                    stream.ssrc,
                    StreamStats {
                        consumer: stream,
                        stats,
                    },
                );
            }
            Command::RemoveReceiver(ssrc) => {
                self.receivers.remove(&ssrc);
                self.rtx.retain(|_, m| *m != ssrc);
            }
            Command::RestartIce(p) => self.ice.restart(Instant::now(), &p),
            Command::SendRaw(data) => {
                self.send(&data).await;
                self.state.send_modify(|s| s.raw_sent += 1);
            }
            Command::SendRtcp(data) => {
                let Some(ctx) = self.srtp_out.as_mut() else {
                    return;
                };
                if let Ok(p) = ctx.encrypt_rtcp(&data) {
                    self.send(&p).await;
                    self.state.send_modify(|s| s.rtcp_sent += 1);
                }
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.receivers.values().cloned().collect());
            }
        }
    }

    async fn on_dtls(&mut self, ev: DtlsEvent) -> Option<String> {
        match ev {
            DtlsEvent::Transmit(rec) => {
                self.send(&rec).await;
                None
            }
            DtlsEvent::Connected(keys) => {
                let out =
                    SrtpContext::new(&keys.local_key, &keys.local_salt, keys.profile, None, None);
                let inn = SrtpContext::new(
                    &keys.remote_key,
                    &keys.remote_salt,
                    keys.profile,
                    None,
                    None,
                );
                match (out, inn) {
                    (Ok(o), Ok(i)) => {
                        self.srtp_out = Some(o);
                        self.srtp_in = Some(i);
                        for cfg in std::mem::take(&mut self.pending_sources) {
                            self.start_source(cfg);
                        }
                        let profile = format!("{:?}", keys.profile);
                        self.state.send_modify(|s| {
                            s.dtls_connected = true;
                            s.srtp_profile = Some(profile);
                        });
                        None
                    }
                    (Err(e), _) | (_, Err(e)) => Some(format!("SRTP setup: {e}")),
                }
            }
            DtlsEvent::Failed(r) => Some(format!("DTLS failed: {r}")),
            DtlsEvent::Closed => Some("DTLS closed by the node".to_owned()),
        }
    }

    fn on_packet(&mut self, data: &[u8]) {
        let now = Instant::now();
        match classify(data) {
            PacketClass::Stun => {
                let Ok(msg) = StunMessage::parse(data) else {
                    return;
                };
                match self.ice.handle_stun(now, &msg) {
                    IceInput::Success(_) => {
                        self.state.send_modify(|s| {
                            s.ice_connected = true;
                            s.ice_successes += 1;
                        });
                        if self.dtls.is_none() {
                            let tx = self.dtls_tx.clone();
                            self.dtls = Some(DtlsSession::start_with_profiles(
                                &self.identity,
                                DtlsRole::Client,
                                self.remote_fingerprints.clone(),
                                BOT_DTLS_TIMEOUT,
                                self.srtp_profile,
                                move |ev| {
                                    let _ = tx.try_send(ev);
                                },
                            ));
                        }
                    }
                    IceInput::Error(code) => {
                        tracing::debug!(code, "ICE check rejected");
                        self.state.send_modify(|s| s.ice_errors += 1);
                    }
                    IceInput::Ignored => {}
                }
            }
            PacketClass::Dtls => {
                if let Some(d) = &self.dtls {
                    d.feed(data);
                }
            }
            PacketClass::Rtp => self.on_rtp(now, data),
            PacketClass::Rtcp => self.on_rtcp(data),
            PacketClass::Unknown => {}
        }
    }

    fn on_rtp(&mut self, now: Instant, data: &[u8]) {
        let Some(ctx) = self.srtp_in.as_mut() else {
            return;
        };
        let plain = match ctx.decrypt_rtp(data) {
            Ok(p) => p,
            Err(_) => {
                self.state.send_modify(|s| s.srtp_errors += 1);
                return;
            }
        };
        let Ok(view) = RtpView::parse(&plain[..]) else {
            return;
        };
        let ssrc = view.ssrc();
        let known = match self.receivers.get_mut(&ssrc) {
            Some(r) => {
                r.stats.on_packet(now, wall_us(), &view);
                true
            }
            // Retransmissions are counted per SSRC but not fed to the media statistics.
            None => self.rtx.contains_key(&ssrc),
        };
        self.state.send_modify(|s| {
            s.rtp_received += 1;
            *s.received_by_ssrc.entry(ssrc).or_default() += 1;
            if !known {
                s.unknown_ssrc += 1;
            }
        });
    }

    fn on_rtcp(&mut self, data: &[u8]) {
        let Some(ctx) = self.srtp_in.as_mut() else {
            return;
        };
        let plain = match ctx.decrypt_rtcp(data) {
            Ok(p) => p,
            Err(_) => {
                self.state.send_modify(|s| s.srtp_errors += 1);
                return;
            }
        };
        let mut requests = 0;
        if let Ok(items) = parse_compound(&plain) {
            for item in items {
                let media_ssrc = match item {
                    RtcpItem::Pli { media_ssrc, .. } | RtcpItem::Fir { media_ssrc, .. } => {
                        media_ssrc
                    }
                    _ => continue,
                };
                for s in &mut self.sources {
                    if let Source::Video(v) = s {
                        if v.ssrc() == media_ssrc {
                            v.request_keyframe();
                            requests += 1;
                        }
                    }
                }
            }
        }
        self.state.send_modify(|s| {
            s.rtcp_received += 1;
            s.keyframe_requests += requests;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn transport_state_counts_per_ssrc() {
        let mut s = TransportState::default();
        assert_eq!(s.received(7), 0);
        *s.received_by_ssrc.entry(7).or_default() += 3;
        assert_eq!((s.received(7), s.received(8)), (3, 0));
    }

    /// TCP media is RFC 4571 framed both ways; a frame split across reads is reassembled, and
    /// the end of the stream is an error rather than an empty packet.
    #[tokio::test]
    async fn tcp_io_frames_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut io = Io::Tcp(client.unwrap(), Box::new(FrameDecoder::new(MTU * 2)));
        let (mut peer, _) = accepted.unwrap();

        io.send(&[1, 2, 3]).await.unwrap();
        let mut wire = [0u8; 5];
        peer.read_exact(&mut wire).await.unwrap();
        assert_eq!(wire, [0, 3, 1, 2, 3]);

        peer.write_all(&[0, 4, 9, 9]).await.unwrap();
        peer.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let pending = tokio::spawn(async move {
            let n = io.recv(&mut buf).await.unwrap();
            (io, buf[..n].to_vec())
        });
        tokio::task::yield_now().await;
        peer.write_all(&[8, 8, 0, 1, 5]).await.unwrap();
        let (mut io, first) = pending.await.unwrap();
        assert_eq!(first, [9, 9, 8, 8]);
        let n = io.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &[5]);

        drop(peer);
        let err = io.recv(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
