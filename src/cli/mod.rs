//! The operator commands: `pipemesh nodes`, `rooms`, `topology`, `drain` and `undrain`. They
//! read (and, for drains, write) the cluster straight from etcd, as the nodes publish it
//! (layout in [`crate::discovery::keys`]), then ask the nodes' admin endpoints for what only
//! they know (live counts, pipe links, who consumes what), and print a table for people or,
//! with `--output json`, JSON for scripts (camelCase fields, like the records); `topology`
//! also prints Graphviz (`--output dot`).
//!
//! Each command is thin glue around pure parts: [`snapshot::Snapshot::from_kvs`] decodes
//! registry key/values (skipping and counting malformed ones: a footer line on stderr says how
//! many), and each command turns a snapshot, and the nodes' answers, into rows. Only
//! [`etcd::Registry`] talks to etcd and only [`adminapi::AdminClient`] to the nodes, every
//! request bounded by `--timeout` (the nodes are asked concurrently). A node that does not
//! answer is never fatal: its row says `unreachable` (JSON: `"reachable": false` and an
//! `adminError`), a warning on stderr says why, and the exit code stays 0. While nodes are
//! slow to answer, a progress line on stderr names them (only when stderr is a terminal).
//!
//! Errors are one line on stderr (`pipemesh: error: ...`) with an exit code:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (also when some nodes' admin endpoints did not answer: see the warnings) |
//! | 1 | not found (node, room), or the operation did not complete (a drain the node has not confirmed within `--wait`, a request etcd refused) |
//! | 2 | usage: bad flags (clap) or settings that cannot work (TLS files, password without user, an unreadable or empty admin token file, `--output dot` outside `topology`) |
//! | 3 | etcd unreachable within `--timeout` |

pub mod adminapi;
pub mod drain;
pub mod etcd;
pub mod nodes;
pub mod rooms;
pub mod snapshot;
pub mod topology;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use thiserror::Error;

/// Default bound on reaching etcd (connecting, and each request).
pub const DEFAULT_TIMEOUT: &str = "5s";

/// Flags every operator command takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// etcd endpoints (repeatable; environment: comma-separated)
    #[arg(
        long,
        env = "PIPEMESH_ETCD_ENDPOINTS",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_endpoints: Vec<String>,
    /// Cluster name: keys under /pipemesh/<cluster>/
    #[arg(long, env = "PIPEMESH_CLUSTER", default_value = "pipemesh")]
    pub cluster: String,
    /// CA certificate (PEM) of the etcd servers
    #[arg(long, env = "PIPEMESH_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd
    #[arg(long, env = "PIPEMESH_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Client private key (PEM) for etcd
    #[arg(long, env = "PIPEMESH_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user (password: --etcd-password-file or PIPEMESH_ETCD_PASSWORD)
    #[arg(long, env = "PIPEMESH_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// File with the etcd user's password (first line)
    #[arg(long, env = "PIPEMESH_ETCD_PASSWORD_FILE", value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// File with the token for the nodes' admin endpoints (first line; sent as
    /// `Authorization: Bearer`) [environment: the token itself in PIPEMESH_ADMIN_TOKEN]
    #[arg(long, env = "PIPEMESH_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How long to wait for etcd (to connect, and for each request) and for each node's admin
    /// endpoint (e.g. 500ms, 5s, 1m)
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

impl CommonArgs {
    /// The format of a command that prints tables or JSON only (every one but `topology`):
    /// `--output dot` is a usage error, found before anything is read or written.
    pub fn format(&self) -> Result<Format, CliError> {
        match self.output {
            Output::Table => Ok(Format::Table),
            Output::Json => Ok(Format::Json),
            Output::Dot => Err(CliError::Usage(
                "--output dot is only for `pipemesh topology`; use table or json".into(),
            )),
        }
    }
}

/// How results are printed (`--output`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// Pretty-printed JSON for scripts.
    Json,
    /// Graphviz DOT (`pipemesh topology` only).
    Dot,
}

/// The formats of the commands other than `topology` ([`CommonArgs::format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Pretty-printed JSON for scripts.
    Json,
}

/// Why an operator command failed; each has its exit code ([`CliError::exit_code`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CliError {
    /// etcd did not answer within `--timeout` (exit 3).
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last failure.
        reason: String,
    },
    /// Settings that cannot work: TLS files, a password without a user (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No such node or room (exit 1).
    #[error("{0}")]
    NotFound(String),
    /// The request was written but the node did not confirm it in time (exit 1).
    #[error("{0}")]
    NotConfirmed(String),
    /// etcd answered with an error (permission denied, ...) (exit 1).
    #[error("etcd refused {what}: {reason}")]
    Refused {
        /// The request.
        what: String,
        /// etcd's answer.
        reason: String,
    },
    /// Writing the output failed (a closed pipe, ...) (exit 1).
    #[error("writing the output: {0}")]
    Output(String),
}

impl CliError {
    /// The process exit code (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } => 3,
            CliError::Usage(_) => 2,
            CliError::NotFound(_)
            | CliError::NotConfirmed(_)
            | CliError::Refused { .. }
            | CliError::Output(_) => 1,
        }
    }
}

/// Ends an operator command: on error, one line on stderr and the error's exit code (the
/// process exits here, so that `main` keeps its single failure code for other commands).
pub fn finish(result: Result<(), CliError>) {
    let _ = std::io::stdout().flush();
    if let Err(e) = result {
        eprintln!("pipemesh: error: {e}");
        std::process::exit(i32::from(e.exit_code()));
    }
}

/// Runs `f` on a small runtime of its own.
pub(crate) fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Output(format!("starting the tokio runtime: {e}")))?;
    rt.block_on(f)
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    print_out(&format!("{text}\n"))
}

/// Writes `text` on stdout.
pub(crate) fn print_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Output(e.to_string()))
}

/// The footer about skipped entries, when there were any.
pub(crate) fn warn_malformed(malformed: usize) {
    if malformed > 0 {
        eprintln!(
            "pipemesh: warning: skipped {malformed} malformed registry entr{}",
            if malformed == 1 { "y" } else { "ies" }
        );
    }
}

/// A progress line on stderr while the command waits, shown only when stderr is a terminal
/// (scripts and logs never see it); rewritten in place and erased when done.
pub(crate) struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    /// A progress line, if stderr is a terminal.
    pub(crate) fn stderr() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Shows `text` in place of the previous line.
    pub(crate) fn show(&mut self, text: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K{text}");
            self.shown = true;
        }
    }

    /// Erases the line, if one is shown.
    pub(crate) fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `waiting for n3...`, `waiting for n3, n4 and 2 more...`: the nodes that have not answered.
pub fn waiting_line(pending: &[&str]) -> String {
    const NAMED: usize = 3;
    let named = pending.iter().take(NAMED).copied().collect::<Vec<_>>();
    let more = pending.len().saturating_sub(NAMED);
    match (named.as_slice(), more) {
        ([], _) => String::new(),
        ([one], _) => format!("waiting for {one}..."),
        (names, 0) => format!(
            "waiting for {} and {}...",
            names[..names.len() - 1].join(", "),
            names[names.len() - 1]
        ),
        (names, more) => format!("waiting for {} and {more} more...", names.join(", ")),
    }
}

/// Columns aligned on the widest cell, separated by three spaces (kubectl's look).
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Parses `500ms`, `90` (seconds), `90s`, `15m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration like 500ms, 90s, 15m, 1h or 2d");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

/// A duration as people read it: the two largest units (`2d3h`, `5m7s`, `42s`).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{mins}m")
    } else if mins > 0 {
        format!("{mins}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Now, in Unix milliseconds (the operator's clock; the glue reads it, the cores take it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_the_widest_cell() {
        let rows = vec![
            vec!["n1".into(), "eu-west".into(), "3".into()],
            vec!["node-22".into(), "us".into(), "".into()],
        ];
        assert_eq!(
            render_table(&["ID", "REGION", "PEERS"], &rows),
            "ID        REGION    PEERS\n\
             n1        eu-west   3\n\
             node-22   us\n"
        );
        assert_eq!(render_table(&["ID"], &[]), "ID\n");
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "m", "1x", "-1s", "1.5s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(307)), "5m7s");
        assert_eq!(human_duration(Duration::from_secs(3_700)), "1h1m");
        assert_eq!(human_duration(Duration::from_secs(183_600)), "2d3h");
    }

    #[test]
    fn the_waiting_line_names_a_few_nodes() {
        assert_eq!(waiting_line(&[]), "");
        assert_eq!(waiting_line(&["n3"]), "waiting for n3...");
        assert_eq!(waiting_line(&["n3", "n4"]), "waiting for n3 and n4...");
        assert_eq!(waiting_line(&["a", "b", "c"]), "waiting for a, b and c...");
        assert_eq!(
            waiting_line(&["a", "b", "c", "d", "e"]),
            "waiting for a, b, c and 2 more..."
        );
    }

    #[test]
    fn exit_codes_follow_the_table() {
        let unreachable = CliError::Unreachable {
            endpoints: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 3);
        assert_eq!(
            unreachable.to_string(),
            "cannot reach etcd at http://127.0.0.1:1: connection refused"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::NotFound("x".into()).exit_code(), 1);
        assert_eq!(CliError::NotConfirmed("x".into()).exit_code(), 1);
    }
}
