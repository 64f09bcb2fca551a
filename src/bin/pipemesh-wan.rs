//! `pipemesh-wan`: the user-space WAN emulator used by `simulations/` (see its README).
//!
//! `pipemesh-wan run` attaches to a TUN device, reads whole IPv4 packets that policy routing
//! sent into it, holds each for its directed link's impairments (the sans-IO core in
//! `pipemesh::wan`) and writes it back into the TUN device at its due time, from where the
//! kernel routes it on. `pipemesh-wan ctl` talks to a running emulator over its Unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use pipemesh::wan::{Config, Emulator};

#[derive(Parser)]
#[command(
    name = "pipemesh-wan",
    about = "User-space WAN emulator on a TUN device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the emulator on an existing or new TUN device.
    Run {
        /// Emulator configuration (TOML: regions, default and per-link impairments).
        #[arg(long)]
        config: PathBuf,
        /// TUN device name (created if missing, attached if it exists).
        #[arg(long, default_value = "pmwan0")]
        tun: String,
        /// Unix socket for control commands (`pipemesh-wan ctl`).
        #[arg(long)]
        control: PathBuf,
        /// Write statistics as JSON here on SIGUSR1 and on exit.
        #[arg(long)]
        stats_file: Option<PathBuf>,
    },
    /// Send one command to a running emulator and print its reply: `ping`, `stats`,
    /// `set eu>us delay_ms=40 jitter_ms=2 loss=0.01 rate_kbps=8000 queue_bytes=65536`,
    /// `set eu<>us ...`, `set all ...`, `reset eu>us`.
    Ctl {
        /// The emulator's control socket.
        #[arg(long)]
        socket: PathBuf,
        /// The command words.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);
static DUMP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        DUMP.store(true, Ordering::SeqCst);
    } else {
        STOP.store(true, Ordering::SeqCst);
    }
}

fn main() {
    // One line per error (with its causes), whatever RUST_BACKTRACE says.
    if let Err(e) = real_main() {
        eprintln!("pipemesh-wan: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run {
            config,
            tun,
            control,
            stats_file,
        } => run(&config, &tun, &control, stats_file.as_deref()),
        Command::Ctl { socket, words } => {
            let reply = ctl(&socket, &words.join(" "))?;
            println!("{reply}");
            Ok(())
        }
    }
}

/// Sends one command line and returns the reply payload, or an error for `err` replies.
fn ctl(socket: &Path, line: &str) -> Result<String> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(s, "{line}")?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply)?;
    let reply = reply.trim_end();
    match reply.split_once(' ').unwrap_or((reply, "")) {
        ("ok", payload) => Ok(payload.to_string()),
        ("err", msg) => bail!("{msg}"),
        _ => bail!("unexpected reply {reply:?}"),
    }
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens `/dev/net/tun` non-blocking and attaches it to the TUN device `name`
/// (IFF_TUN | IFF_NO_PI: each read and write is one bare IP packet).
fn open_tun(name: &str) -> Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("TUN name {name:?} must be 1 to 15 bytes");
    }
    // SAFETY: a plain open(2) of a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening /dev/net/tun");
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out (40 bytes).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("TUNSETIFF {name}"));
    }
    Ok(fd)
}

/// The core's statistics plus the kernel's count of packets dropped before the emulator read
/// them (the TUN device's transmit queue overflowing: the emulator fell behind).
fn stats(emu: &Mutex<Emulator>, tun: &str) -> serde_json::Value {
    let mut json = emu.lock().unwrap().stats_json();
    let path = format!("/sys/class/net/{tun}/statistics/tx_dropped");
    let dropped = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    json["tun_tx_dropped"] = dropped.into();
    json
}

fn write_stats(emu: &Mutex<Emulator>, tun: &str, path: Option<&Path>) {
    let json = stats(emu, tun);
    match path {
        Some(p) => {
            let tmp = p.with_extension("tmp");
            let res =
                std::fs::write(&tmp, format!("{json:#}\n")).and_then(|_| std::fs::rename(&tmp, p));
            if let Err(e) = res {
                eprintln!("pipemesh-wan: writing {}: {e}", p.display());
            }
        }
        None => eprintln!("{json:#}"),
    }
}

fn serve_control(listener: UnixListener, emu: Arc<Mutex<Emulator>>, tun: String) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let emu = emu.clone();
        let tun = tun.clone();
        std::thread::spawn(move || {
            let mut out = match conn.try_clone() {
                Ok(o) => o,
                Err(_) => return,
            };
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { return };
                if line.trim().is_empty() {
                    continue;
                }
                let result = if line.trim() == "stats" {
                    Ok(stats(&emu, &tun).to_string())
                } else {
                    emu.lock().unwrap().command(&line)
                };
                let reply = match result {
                    Ok(r) => format!("ok {r}\n"),
                    Err(e) => format!("err {}\n", e.replace('\n', " ")),
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

fn run(config: &Path, tun: &str, control: &Path, stats_file: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg: Config =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let emu = Arc::new(Mutex::new(
        Emulator::new(&cfg).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?,
    ));
    let fd = open_tun(tun)?;
    let _ = std::fs::remove_file(control);
    let listener =
        UnixListener::bind(control).with_context(|| format!("binding {}", control.display()))?;
    // SAFETY: installing async-signal-safe handlers that only store to atomics.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    {
        let emu = emu.clone();
        let tun = tun.to_string();
        std::thread::spawn(move || serve_control(listener, emu, tun));
    }
    eprintln!(
        "pipemesh-wan: running on {tun}, control {}",
        control.display()
    );

    let mut buf = vec![0u8; 65536];
    let raw = fd.as_raw_fd();
    let mut write_errors = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        if DUMP.swap(false, Ordering::SeqCst) {
            write_stats(&emu, tun, stats_file);
        }
        let timeout = {
            let e = emu.lock().unwrap();
            let cap = Duration::from_millis(100);
            match e.next_due() {
                Some(t) => t.saturating_duration_since(Instant::now()).min(cap),
                None => cap,
            }
        };
        let mut pfd = libc::pollfd {
            fd: raw,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("ppoll");
        }
        let mut e = emu.lock().unwrap();
        if rc > 0 {
            // Drain what is readable (bounded, so due packets are not starved).
            for _ in 0..1024 {
                // SAFETY: reading into a buffer we own, of its length.
                let n = unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let err = std::io::Error::last_os_error();
                    match err.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => break,
                        _ => return Err(err).context("reading the TUN device"),
                    }
                }
                if n == 0 {
                    break;
                }
                e.on_packet(Instant::now(), buf[..n as usize].to_vec());
            }
        }
        let now = Instant::now();
        while let Some(p) = e.poll_due(now) {
            // SAFETY: writing a buffer we own, of its length.
            let n = unsafe { libc::write(raw, p.as_ptr().cast(), p.len()) };
            if n < 0 {
                write_errors += 1;
                if write_errors.is_power_of_two() {
                    eprintln!(
                        "pipemesh-wan: TUN write failed ({} so far): {}",
                        write_errors,
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
    }
    write_stats(&emu, tun, stats_file);
    let _ = std::fs::remove_file(control);
    Ok(())
}
