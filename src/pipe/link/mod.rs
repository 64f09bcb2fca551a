//! Pipe link state, sans-IO: [`LinkState`] (one per remote node: dial, handshake, reconnect
//! with jittered exponential backoff, idle linger, grace accounting) and [`Subscriptions`] (the
//! far side of one link: which of the remote node's producers are piped here, for how many
//! local consumers, and what happens to those consumers when the link drops).
//!
//! Both follow the drive rule of the other cores: feed an input stamped with `now`
//! (`need`, `on_*`, `handle_timeout`), then drain `poll_action()` until it yields `None` and
//! sleep until `poll_timeout()`. They never read the clock, own no socket, task or channel, and
//! draw randomness only from an rng seeded by configuration, so a simulation with the same
//! seed replays exactly.
//!
//! What they own: link phase and backoff ([`LinkState`]); per-producer consumer counts, request
//! ids and timers ([`Subscriptions`]). What they may not touch: the QUIC connection (the glue
//! dials, sends and closes on their say-so and forwards only events of the connection it holds;
//! after a [`LinkAction::Close`] it drops that connection's events), and the consumers
//! themselves (the worker pauses, resumes and closes them on [`SubAction`]s).
//!
//! Wiring: [`LinkAction::LinkUp`] -> [`Subscriptions::on_link_up`],
//! [`LinkAction::LinkDown`] -> [`Subscriptions::on_link_down`]; the node calls
//! [`LinkState::need`] while the link's [`Subscriptions`] is not empty (or other users need it)
//! and [`LinkState::no_longer_needed`] when it empties.
//!
//! Grace: consumers left without media (first subscription pending, or paused because the link
//! dropped) are closed once they have waited [`SubscriptionConfig::grace_period`], counted from
//! when they started waiting, so a crashed node, or a link that flaps up and down without ever
//! delivering, never leaves consumers waiting forever.

use crate::ids::{NodeId, ProducerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

// Defaults for the time constants below. They belong with `crate::timing` once the pipe
// configuration is wired into `crate::config`; until then they live next to their only user.

/// First reconnect backoff ceiling; doubled on every consecutive failure.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Largest reconnect backoff ceiling: a restarted node is found again within this (plus the
/// handshake) once it is back.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection that stayed up this long was healthy: its loss restarts backoff from
/// [`DEFAULT_INITIAL_BACKOFF`] instead of continuing where the last failures left it.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(10);
/// Wait after the remote refused us permanently (cluster or version mismatch): an operator has
/// to fix configuration, so retrying faster only fills logs.
pub const DEFAULT_REFUSED_BACKOFF: Duration = Duration::from_secs(30);
/// How long consumers wait without media (link down, or subscription pending) before they are
/// closed and peers are told `consumerClosed`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// How long an unused, connected link stays open: rooms that empty and refill do not redial.
pub const DEFAULT_IDLE_LINGER: Duration = Duration::from_secs(30);
/// How long each of the QUIC handshake and the Hello/HelloAck exchange may take.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a subscription to a remote producer stays up after its last local consumer left:
/// a consumer that closes and reopens (a page reload) does not churn the link.
pub const DEFAULT_SUBSCRIPTION_LINGER: Duration = Duration::from_secs(2);
/// How long the origin has to answer a Subscribe before it is sent again.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Subscribe requests sent for one producer before giving up and closing its consumers.
pub const DEFAULT_SUBSCRIBE_ATTEMPTS: u32 = 3;
/// Remote producers piped over one link.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 4096;

/// Errors of [`LinkState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// An input arrived that the current phase does not expect, e.g. a HelloAck while no
    /// handshake runs. The glue forwarded an event of a connection it should have dropped; the
    /// state is unchanged.
    #[error("link input {input} unexpected in phase {phase}")]
    UnexpectedInput {
        /// The input (method name).
        input: &'static str,
        /// The phase the link was in.
        phase: &'static str,
    },
    /// The configuration would make the link spin or never time out (a zero duration, or an
    /// initial backoff above the maximum).
    #[error("invalid link configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Errors of [`Subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubError {
    /// The link already carries its maximum of subscriptions and none is lingering to make
    /// room; the new consumer must be refused.
    #[error("too many subscriptions on this link (max {max})")]
    TooManySubscriptions {
        /// [`SubscriptionConfig::max_subscriptions`].
        max: usize,
    },
    /// `remove_consumer` for a producer with no local consumer.
    #[error("no local consumer of producer {0}")]
    NoConsumer(ProducerId),
    /// An answer for a request id that is no longer pending (answered, retried, failed, or sent
    /// before the link last dropped). It was ignored; an Unsubscribe was queued if nothing
    /// here wants the producer any more.
    #[error("answer for request {0:?} which is not pending")]
    StaleAnswer(RequestId),
    /// An answer whose producer differs from the one the request was for. It was ignored.
    #[error(
        "answer for request {request_id:?} names producer {producer_id}, not the requested one"
    )]
    MismatchedAnswer {
        /// The request answered.
        request_id: RequestId,
        /// The producer the answer named.
        producer_id: ProducerId,
    },
    /// The configuration would make subscriptions spin or never expire (a zero duration or
    /// count).
    #[error("invalid subscription configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Configuration of one [`LinkState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// First backoff ceiling ([`DEFAULT_INITIAL_BACKOFF`]).
    pub initial_backoff: Duration,
    /// Largest backoff ceiling ([`DEFAULT_MAX_BACKOFF`]).
    pub max_backoff: Duration,
    /// Connected time after which backoff restarts ([`DEFAULT_STABLE_AFTER`]).
    pub stable_after: Duration,
    /// Wait after a permanent refusal ([`DEFAULT_REFUSED_BACKOFF`]).
    pub refused_backoff: Duration,
    /// Time a needed link may stay unavailable before [`LinkAction::GraceExpired`]
    /// ([`DEFAULT_GRACE_PERIOD`]).
    pub grace_period: Duration,
    /// Time an unused link stays connected ([`DEFAULT_IDLE_LINGER`]).
    pub idle_linger: Duration,
    /// Limit on the QUIC handshake and, separately, on Hello/HelloAck
    /// ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Seed of the backoff jitter. Give each link its own (e.g. derived from the node seed and
    /// the remote id) so that links to a restarted node do not redial in lockstep.
    pub rng_seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            stable_after: DEFAULT_STABLE_AFTER,
            refused_backoff: DEFAULT_REFUSED_BACKOFF,
            grace_period: DEFAULT_GRACE_PERIOD,
            idle_linger: DEFAULT_IDLE_LINGER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            rng_seed: 0,
        }
    }
}

impl LinkConfig {
    /// Checks the durations: none may be zero and the initial backoff may not exceed the cap.
    pub fn validate(&self) -> Result<(), LinkError> {
        let nonzero = [
            (self.initial_backoff, "initial_backoff is zero"),
            (self.max_backoff, "max_backoff is zero"),
            (self.refused_backoff, "refused_backoff is zero"),
            (self.grace_period, "grace_period is zero"),
            (self.handshake_timeout, "handshake_timeout is zero"),
        ];
        for (d, msg) in nonzero {
            if d.is_zero() {
                return Err(LinkError::InvalidConfig(msg));
            }
        }
        if self.initial_backoff > self.max_backoff {
            return Err(LinkError::InvalidConfig(
                "initial_backoff exceeds max_backoff",
            ));
        }
        Ok(())
    }
}

/// Where a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPhase {
    /// Nobody needs the link and no connection exists.
    Idle,
    /// A QUIC connection is being dialed.
    Connecting {
        /// Consecutive failures before this dial (0 for the first).
        attempt: u32,
        /// When the dial is given up.
        deadline: Instant,
    },
    /// QUIC is up; our Hello is out, waiting for HelloAck.
    Handshaking {
        /// Consecutive failures before this dial.
        attempt: u32,
        /// When the handshake is given up.
        deadline: Instant,
    },
    /// HelloAck received: pipes flow.
    Connected {
        /// When the link came up.
        since: Instant,
    },
    /// Waiting before the next dial.
    Backoff {
        /// When the next dial starts.
        until: Instant,
        /// Consecutive failures so far (the next dial's attempt).
        attempt: u32,
    },
}

impl LinkPhase {
    fn name(&self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Connecting { .. } => "Connecting",
            Self::Handshaking { .. } => "Handshaking",
            Self::Connected { .. } => "Connected",
            Self::Backoff { .. } => "Backoff",
        }
    }
}

/// A refusal by the remote node, kept for reporting (`/metrics`, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// When it arrived.
    pub at: Instant,
    /// Whether retrying soon cannot help (configuration mismatch).
    pub permanent: bool,
    /// The remote's reason.
    pub reason: String,
}

/// What the glue must do for a [`LinkState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAction {
    /// Dial the remote node (QUIC). Report [`LinkState::on_connected`] or
    /// [`LinkState::on_connection_lost`].
    Dial {
        /// Consecutive failures before this dial (0 for the first).
        attempt: u32,
    },
    /// Send our Hello on the new connection. Report [`LinkState::on_hello_ack`] or
    /// [`LinkState::on_refused`].
    SendHello,
    /// Close the current connection (or abort the dial) and drop its further events.
    Close,
    /// The link is up: resubscribe ([`Subscriptions::on_link_up`]).
    LinkUp,
    /// A link that was up is not any more: pause far consumers
    /// ([`Subscriptions::on_link_down`]).
    LinkDown {
        /// When it went down.
        since: Instant,
    },
    /// The needed link has been unavailable (lost, or never up since it became needed) for
    /// [`LinkConfig::grace_period`]; the node may treat the remote as gone. Emitted once per
    /// outage. Dialing continues while the link is needed.
    GraceExpired,
    /// The remote refused our Hello; report it. A permanent refusal waits
    /// [`LinkConfig::refused_backoff`] before the next dial.
    Refused {
        /// Whether the refusal is permanent.
        permanent: bool,
        /// The remote's reason.
        reason: String,
    },
}

/// The dialing side of the link to one remote node.
#[derive(Debug)]
pub struct LinkState {
    remote: NodeId,
    config: LinkConfig,
    rng: StdRng,
    phase: LinkPhase,
    needed: bool,
    /// Set while connected and unneeded: when the link closes.
    linger_until: Option<Instant>,
    /// Consecutive failed dials (and unstable connections) since the last stable connection.
    failures: u32,
    /// Earliest next dial, kept when a backoff is abandoned (link no longer needed) so that
    /// toggling need cannot bypass backoff against a refusing node.
    not_before: Option<Instant>,
    /// Since when a needed link has been unavailable.
    down_since: Option<Instant>,
    grace_reported: bool,
    last_refusal: Option<Refusal>,
    actions: VecDeque<LinkAction>,
}

impl LinkState {
    /// A link to `remote`, idle until [`need`](Self::need).
    pub fn new(remote: NodeId, config: LinkConfig) -> Result<Self, LinkError> {
        config.validate()?;
        Ok(Self {
            remote,
            rng: StdRng::seed_from_u64(config.rng_seed),
            config,
            phase: LinkPhase::Idle,
            needed: false,
            linger_until: None,
            failures: 0,
            not_before: None,
            down_since: None,
            grace_reported: false,
            last_refusal: None,
            actions: VecDeque::new(),
        })
    }

    /// The remote node.
    pub fn remote(&self) -> &NodeId {
        &self.remote
    }

    /// The current phase.
    pub fn phase(&self) -> LinkPhase {
        self.phase
    }

    /// Whether the link is up (HelloAck received, not lost).
    pub fn is_up(&self) -> bool {
        matches!(self.phase, LinkPhase::Connected { .. })
    }

    /// Since when the needed link has been unavailable; `None` while up or unneeded.
    pub fn down_since(&self) -> Option<Instant> {
        self.down_since
    }

    /// The last refusal since the link was last up.
    pub fn last_refusal(&self) -> Option<&Refusal> {
        self.last_refusal.as_ref()
    }

    /// Somebody needs the link (idempotent): dial if idle, cancel an idle linger.
    pub fn need(&mut self, now: Instant) {
        self.linger_until = None;
        if self.needed {
            return;
        }
        self.needed = true;
        if self.phase == LinkPhase::Idle {
            self.down_since = Some(now);
            self.grace_reported = false;
            match self.not_before.take() {
                Some(until) if until > now => {
                    self.phase = LinkPhase::Backoff {
                        until,
                        attempt: self.failures,
                    }
                }
                _ => self.dial(now),
            }
        }
    }

    /// Nobody needs the link any more (idempotent): a connected link closes after
    /// [`LinkConfig::idle_linger`]; a dial or backoff in progress stops now.
    pub fn no_longer_needed(&mut self, now: Instant) {
        if !self.needed {
            return;
        }
        self.needed = false;
        self.down_since = None;
        self.grace_reported = false;
        match self.phase {
            LinkPhase::Connected { .. } => {
                self.linger_until = Some(now + self.config.idle_linger);
            }
            LinkPhase::Connecting { .. } | LinkPhase::Handshaking { .. } => {
                self.actions.push_back(LinkAction::Close);
                self.phase = LinkPhase::Idle;
            }
            LinkPhase::Backoff { until, .. } => {
                self.not_before = Some(until);
                self.phase = LinkPhase::Idle;
            }
            LinkPhase::Idle => {}
        }
    }

    /// The QUIC connection is established: send Hello.
    pub fn on_connected(&mut self, now: Instant) -> Result<(), LinkError> {
        let LinkPhase::Connecting { attempt, .. } = self.phase else {
            return Err(self.unexpected("on_connected"));
        };
        self.phase = LinkPhase::Handshaking {
            attempt,
            deadline: now + self.config.handshake_timeout,
        };
        self.actions.push_back(LinkAction::SendHello);
        Ok(())
    }

    /// The remote accepted our Hello: the link is up.
    pub fn on_hello_ack(&mut self, now: Instant) -> Result<(), LinkError> {
        if !matches!(self.phase, LinkPhase::Handshaking { .. }) {
            return Err(self.unexpected("on_hello_ack"));
        }
        self.phase = LinkPhase::Connected { since: now };
        self.down_since = None;
        self.grace_reported = false;
        self.last_refusal = None;
        self.actions.push_back(LinkAction::LinkUp);
        Ok(())
    }

    /// The remote refused us (during the QUIC or the Hello handshake). `permanent` refusals
    /// (cluster or protocol mismatch) wait [`LinkConfig::refused_backoff`]; others back off as
    /// any failure.
    pub fn on_refused(
        &mut self,
        now: Instant,
        permanent: bool,
        reason: impl Into<String>,
    ) -> Result<(), LinkError> {
        if !matches!(
            self.phase,
            LinkPhase::Connecting { .. } | LinkPhase::Handshaking { .. }
        ) {
            return Err(self.unexpected("on_refused"));
        }
        let reason = reason.into();
        self.actions.push_back(LinkAction::Close);
        self.actions.push_back(LinkAction::Refused {
            permanent,
            reason: reason.clone(),
        });
        self.last_refusal = Some(Refusal {
            at: now,
            permanent,
            reason,
        });
        if permanent {
            self.failures = self.failures.saturating_add(1);
            self.phase = LinkPhase::Backoff {
                until: now + self.config.refused_backoff,
                attempt: self.failures,
            };
        } else {
            self.back_off(now);
        }
        Ok(())
    }

    /// The connection (or the dial) failed or closed.
    pub fn on_connection_lost(&mut self, now: Instant) -> Result<(), LinkError> {
        match self.phase {
            LinkPhase::Connecting { .. } | LinkPhase::Handshaking { .. } => self.back_off(now),
            LinkPhase::Connected { since } => {
                if now.saturating_duration_since(since) >= self.config.stable_after {
                    self.failures = 0;
                }
                self.actions.push_back(LinkAction::LinkDown { since: now });
                self.linger_until = None;
                if self.needed {
                    self.down_since = Some(now);
                    self.grace_reported = false;
                    self.back_off(now);
                } else {
                    self.phase = LinkPhase::Idle;
                }
            }
            LinkPhase::Idle | LinkPhase::Backoff { .. } => {
                return Err(self.unexpected("on_connection_lost"))
            }
        }
        Ok(())
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            LinkPhase::Connecting { deadline, .. } | LinkPhase::Handshaking { deadline, .. }
                if deadline <= now =>
            {
                self.actions.push_back(LinkAction::Close);
                self.back_off(now);
            }
            LinkPhase::Backoff { until, .. } if until <= now => self.dial(now),
            LinkPhase::Connected { .. } if self.linger_until.is_some_and(|t| t <= now) => {
                self.linger_until = None;
                self.actions.push_back(LinkAction::Close);
                self.actions.push_back(LinkAction::LinkDown { since: now });
                self.phase = LinkPhase::Idle;
            }
            _ => {}
        }
        if let Some(deadline) = self.grace_deadline() {
            if deadline <= now {
                self.grace_reported = true;
                self.actions.push_back(LinkAction::GraceExpired);
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<LinkAction> {
        self.actions.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase = match self.phase {
            LinkPhase::Connecting { deadline, .. } | LinkPhase::Handshaking { deadline, .. } => {
                Some(deadline)
            }
            LinkPhase::Backoff { until, .. } => Some(until),
            LinkPhase::Connected { .. } => self.linger_until,
            LinkPhase::Idle => None,
        };
        [phase, self.grace_deadline()].into_iter().flatten().min()
    }

    fn grace_deadline(&self) -> Option<Instant> {
        match (self.needed, self.grace_reported, self.down_since) {
            (true, false, Some(since)) => Some(since + self.config.grace_period),
            _ => None,
        }
    }

    fn dial(&mut self, now: Instant) {
        self.phase = LinkPhase::Connecting {
            attempt: self.failures,
            deadline: now + self.config.handshake_timeout,
        };
        self.actions.push_back(LinkAction::Dial {
            attempt: self.failures,
        });
    }

    /// Full jitter: the wait is uniform in [0, ceiling], the ceiling doubling per consecutive
    /// failure up to the cap, so links to a restarted node spread their redials.
    fn back_off(&mut self, now: Instant) {
        let ceiling = backoff_ceiling(&self.config, self.failures);
        // Backoffs are seconds, far below u64::MAX nanoseconds.
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let wait = Duration::from_nanos(self.rng.random_range(0..=ceiling_nanos));
        self.failures = self.failures.saturating_add(1);
        self.phase = LinkPhase::Backoff {
            until: now + wait,
            attempt: self.failures,
        };
    }

    fn unexpected(&self, input: &'static str) -> LinkError {
        LinkError::UnexpectedInput {
            input,
            phase: self.phase.name(),
        }
    }
}

/// The backoff ceiling after `failures` consecutive failures: `initial * 2^failures`, capped.
fn backoff_ceiling(config: &LinkConfig, failures: u32) -> Duration {
    // 2^20 times any sane initial backoff is beyond any sane cap; bounding the shift keeps it
    // from overflowing.
    config
        .initial_backoff
        .checked_mul(1u32 << failures.min(20))
        .map_or(config.max_backoff, |d| d.min(config.max_backoff))
}

mod subscriptions;
#[cfg(test)]
mod tests;

pub use subscriptions::*;
