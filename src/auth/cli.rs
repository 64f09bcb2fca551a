//! `pipemesh token`: mints a room token with the cluster secret.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{mint, Claims};
use crate::config::load_auth_secret;
use crate::signaling::server::valid_id;

/// Longest token lifetime `pipemesh token` mints.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Flags of `pipemesh token`.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// Room the token opens (`roomId`).
    #[arg(long)]
    pub room: String,
    /// Peer id the token joins as (`peerId`).
    #[arg(long)]
    pub peer: String,
    /// Lifetime: seconds, or a number with s, m, h or d (at most 366d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Grant publishing. Without --can-publish or --can-subscribe the token grants both.
    #[arg(long)]
    pub can_publish: bool,
    /// Grant subscribing. Without --can-publish or --can-subscribe the token grants both.
    #[arg(long)]
    pub can_subscribe: bool,
    /// File with the cluster secret (else PIPEMESH_AUTH_SECRET), as for `pipemesh serve`.
    #[arg(long, env = "PIPEMESH_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
}

/// Parses `90`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 2d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration like 90s, 15m, 1h or 2d"))?;
    let ttl = Duration::from_secs(secs);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(format!("{s:?}: the lifetime must be between 1s and 366d"));
    }
    Ok(ttl)
}

/// The claims `pipemesh token` signs, issued at `now` (seconds since the Unix epoch).
pub fn claims(args: &TokenArgs, now: u64) -> Claims {
    let both = !args.can_publish && !args.can_subscribe;
    Claims {
        room: args.room.clone(),
        peer: args.peer.clone(),
        exp: now + args.ttl.as_secs(),
        nbf: None,
        iat: Some(now),
        can_publish: both || args.can_publish,
        can_subscribe: both || args.can_subscribe,
    }
}

/// Mints the token `pipemesh token` prints.
pub fn run(args: &TokenArgs) -> Result<String> {
    if !valid_id(&args.room) || !valid_id(&args.peer) {
        bail!("--room and --peer must be 1-128 printable characters");
    }
    let secret = load_auth_secret(args.auth_secret_file.as_deref())?
        .context("no cluster secret: give --auth-secret-file FILE or set PIPEMESH_AUTH_SECRET")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    Ok(mint(&secret, &claims(args, now))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(publish: bool, subscribe: bool) -> TokenArgs {
        TokenArgs {
            room: "r".into(),
            peer: "p".into(),
            ttl: Duration::from_secs(3600),
            can_publish: publish,
            can_subscribe: subscribe,
            auth_secret_file: None,
        }
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0", "1w", "h", "-5s", "400d", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_grant_flag_means_both() {
        let c = claims(&args(false, false), 100);
        assert!(c.can_publish && c.can_subscribe);
        assert_eq!((c.iat, c.exp), (Some(100), 3700));
        let c = claims(&args(false, true), 100);
        assert!(!c.can_publish && c.can_subscribe);
        let c = claims(&args(true, false), 100);
        assert!(c.can_publish && !c.can_subscribe);
    }
}
