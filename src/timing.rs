//! Every protocol time constant in one place. Values that operators may want to tune are
//! defaults of [`crate::config::Config`] fields instead.

use std::time::Duration;

/// RFC 7675: a transport is closed when no valid consent check arrived for this long.
pub const ICE_CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a DTLS handshake may take before the transport is closed.
pub const DTLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Minimum interval between two keyframe requests forwarded to one producer stream.
pub const KEYFRAME_REQUEST_THROTTLE: Duration = Duration::from_millis(500);
/// Longest the worker sleeps while it holds media state: timers created by packets (a NACK for
/// a gap, the first transport-wide-cc feedback) fire at most this late. Scanning every timer
/// after each packet would cost more than it saves.
pub const WORKER_TICK: Duration = Duration::from_millis(10);
/// Interval between RTCP compound reports (SR/RR) on a transport.
pub const RTCP_REPORT_INTERVAL: Duration = Duration::from_millis(1000);
/// Interval between transport-wide-cc feedback packets sent to publishers.
pub const TWCC_FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
/// A producer's stream silent for longer than this resumes without NACKs for the gap (see
/// `worker::media::ingress::forward`): what was missed is older than a receiver would wait.
pub const NACK_MAX_OUTAGE: Duration = Duration::from_millis(1000);
/// How long a retransmission buffer keeps a packet for NACK answers.
pub const RTX_BUFFER_MAX_AGE: Duration = Duration::from_millis(2000);
/// Interval at which the pipe endpoint samples each link's byte and packet counters for its
/// bitrate and loss figures.
pub const PIPE_RATE_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Width of the window those figures cover (`/api/v1/links`).
pub const PIPE_RATE_WINDOW: Duration = Duration::from_secs(5);

// The bot (`pipemesh bot`, `crate::bot`): the client side of signaling, ICE and DTLS, and its
// media pacing and statistics windows.

/// How long a bot's signaling request may wait for its response.
pub const BOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between a bot's ICE connectivity checks until the first success.
pub const BOT_ICE_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Interval between a bot's consent-freshness checks once connected; well inside
/// [`ICE_CONSENT_TIMEOUT`], after which the node expires consent.
pub const BOT_ICE_CONSENT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a bot's DTLS handshake (as client) may take before the transport fails.
pub const BOT_DTLS_TIMEOUT: Duration = Duration::from_secs(10);
/// How far a bot's media source may fall behind `now` before missed frames are skipped rather
/// than sent.
pub const BOT_MAX_CATCH_UP: Duration = Duration::from_millis(500);
/// Width of one bitrate bucket of the bot's receive statistics.
pub const BOT_RATE_BUCKET: Duration = Duration::from_millis(100);
