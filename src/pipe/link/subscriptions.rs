//! [`Subscriptions`]: the far side of one link (see the parent module).

use super::*;

/// Identifies one Subscribe request on a link; increases for the life of a [`Subscriptions`],
/// across reconnects, so answers of an earlier connection or attempt are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Configuration of one [`Subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// Time a subscription stays after its last local consumer left
    /// ([`DEFAULT_SUBSCRIPTION_LINGER`]).
    pub linger: Duration,
    /// Time the origin has to answer a Subscribe ([`DEFAULT_SUBSCRIBE_TIMEOUT`]).
    pub subscribe_timeout: Duration,
    /// Subscribe requests per producer before failing ([`DEFAULT_SUBSCRIBE_ATTEMPTS`]); a
    /// retry is sent when the previous one timed out, so the timeout spaces them.
    pub subscribe_attempts: u32,
    /// Time consumers may wait without media before they are closed
    /// ([`DEFAULT_GRACE_PERIOD`]).
    pub grace_period: Duration,
    /// Remote producers subscribed (in any state) over the link
    /// ([`DEFAULT_MAX_SUBSCRIPTIONS`]).
    pub max_subscriptions: usize,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        Self {
            linger: DEFAULT_SUBSCRIPTION_LINGER,
            subscribe_timeout: DEFAULT_SUBSCRIBE_TIMEOUT,
            subscribe_attempts: DEFAULT_SUBSCRIBE_ATTEMPTS,
            grace_period: DEFAULT_GRACE_PERIOD,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }
}

impl SubscriptionConfig {
    /// Checks that no duration or count is zero.
    pub fn validate(&self) -> Result<(), SubError> {
        if self.subscribe_timeout.is_zero() {
            return Err(SubError::InvalidConfig("subscribe_timeout is zero"));
        }
        if self.grace_period.is_zero() {
            return Err(SubError::InvalidConfig("grace_period is zero"));
        }
        if self.subscribe_attempts == 0 {
            return Err(SubError::InvalidConfig("subscribe_attempts is zero"));
        }
        if self.max_subscriptions == 0 {
            return Err(SubError::InvalidConfig("max_subscriptions is zero"));
        }
        Ok(())
    }
}

/// The state of the subscription to one remote producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// Subscribe sent, no answer yet.
    Requested {
        /// The request.
        request_id: RequestId,
        /// When it was sent.
        since: Instant,
    },
    /// The origin sends the stream.
    Active {
        /// The pipe stream ids the origin assigned (one per encoding / RTX stream).
        stream_ids: Vec<u32>,
    },
    /// No local consumer left; unsubscribed at `until` unless one returns.
    Lingering {
        /// When the Unsubscribe goes out.
        until: Instant,
        /// The stream ids, kept for a returning consumer.
        stream_ids: Vec<u32>,
    },
    /// The link is down; resubscribed when it is up again, closed past the grace period.
    Suspended {
        /// Since when the consumers have been without media (grace is counted from here).
        since: Instant,
    },
}

/// Why [`SubAction::CloseConsumers`] closes consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// They waited without media for the grace period (link down, origin gone).
    GraceExpired,
    /// The origin refused the subscription.
    SubscribeFailed(String),
    /// The origin never answered after [`SubscriptionConfig::subscribe_attempts`] requests.
    SubscribeTimedOut,
    /// The producer closed on its origin node.
    ProducerClosed,
}

/// What the glue and the worker must do for a [`Subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubAction {
    /// Send Subscribe; answer with [`Subscriptions::on_subscribed`] or
    /// [`Subscriptions::on_subscribe_failed`].
    Subscribe {
        /// The request.
        request_id: RequestId,
        /// The remote producer.
        producer_id: ProducerId,
    },
    /// Send Unsubscribe: the origin stops sending the producer over this link.
    Unsubscribe {
        /// The remote producer.
        producer_id: ProducerId,
    },
    /// Pause the local consumers of the producer (not closed: the link may come back).
    PauseConsumers {
        /// The remote producer.
        producer_id: ProducerId,
    },
    /// Resume the local consumers of the producer.
    ResumeConsumers {
        /// The remote producer.
        producer_id: ProducerId,
    },
    /// Ask the origin for a keyframe: resumed consumers cannot decode until one arrives.
    RequestKeyFrame {
        /// The remote producer.
        producer_id: ProducerId,
    },
    /// Close the local consumers of the producer and tell their peers (`consumerClosed`). The
    /// subscription is gone.
    CloseConsumers {
        /// The remote producer.
        producer_id: ProducerId,
        /// Why.
        reason: CloseReason,
    },
}

#[derive(Debug)]
struct Entry {
    consumers: usize,
    state: SubState,
    /// Subscribe requests sent since the link last came up.
    attempts: u32,
    /// Whether PauseConsumers went out and ResumeConsumers is owed.
    paused: bool,
    /// Since when the consumers have been without media; `None` while Active or Lingering.
    waiting_since: Option<Instant>,
}

/// The far side of one link: subscriptions to the remote node's producers.
///
/// Exactly one subscription per producer crosses the link however many local consumers it
/// has. Answers are matched by [`RequestId`]; the origin keeps one subscription per producer
/// and link, so repeating Subscribe for a producer is harmless. The action queue holds at most
/// a few actions per subscription when drained after every input, which the drive rule
/// requires.
#[derive(Debug)]
pub struct Subscriptions {
    config: SubscriptionConfig,
    // BTreeMaps: iteration order (hence action order) is deterministic for simulations.
    entries: BTreeMap<ProducerId, Entry>,
    pending: BTreeMap<RequestId, ProducerId>,
    next_request: u64,
    link_up: bool,
    actions: VecDeque<SubAction>,
}

/// Allocates a request id and queues its Subscribe. A free function so it can be called while
/// an entry of the map is borrowed.
fn request(
    next_request: &mut u64,
    pending: &mut BTreeMap<RequestId, ProducerId>,
    actions: &mut VecDeque<SubAction>,
    producer_id: &ProducerId,
    now: Instant,
) -> SubState {
    *next_request += 1;
    let request_id = RequestId(*next_request);
    pending.insert(request_id, producer_id.clone());
    actions.push_back(SubAction::Subscribe {
        request_id,
        producer_id: producer_id.clone(),
    });
    SubState::Requested {
        request_id,
        since: now,
    }
}

impl Subscriptions {
    /// No subscriptions; the link is considered down until [`on_link_up`](Self::on_link_up).
    pub fn new(config: SubscriptionConfig) -> Result<Self, SubError> {
        config.validate()?;
        Ok(Self {
            config,
            entries: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_request: 0,
            link_up: false,
            actions: VecDeque::new(),
        })
    }

    /// Subscriptions in any state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no subscription (the link is then not needed for them).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of the subscription to `producer_id`.
    pub fn state(&self, producer_id: &str) -> Option<&SubState> {
        self.entries.get(producer_id).map(|e| &e.state)
    }

    /// Local consumers of `producer_id`.
    pub fn consumers(&self, producer_id: &str) -> usize {
        self.entries.get(producer_id).map_or(0, |e| e.consumers)
    }

    /// A local consumer of `producer_id` was created. `Ok(true)` when it started a new
    /// subscription (Subscribe goes out now, or when the link is up), `Ok(false)` when an
    /// existing one carries it (if that one's consumers are paused, PauseConsumers is queued
    /// again so the new consumer is paused too).
    pub fn add_consumer(
        &mut self,
        now: Instant,
        producer_id: &ProducerId,
    ) -> Result<bool, SubError> {
        if let Some(e) = self.entries.get_mut(producer_id) {
            e.consumers += 1;
            if let SubState::Lingering { stream_ids, .. } = &mut e.state {
                e.state = SubState::Active {
                    stream_ids: std::mem::take(stream_ids),
                };
            }
            if e.paused {
                self.actions.push_back(SubAction::PauseConsumers {
                    producer_id: producer_id.clone(),
                });
            }
            return Ok(false);
        }
        if self.entries.len() >= self.config.max_subscriptions && !self.evict_lingering() {
            return Err(SubError::TooManySubscriptions {
                max: self.config.max_subscriptions,
            });
        }
        let state = if self.link_up {
            request(
                &mut self.next_request,
                &mut self.pending,
                &mut self.actions,
                producer_id,
                now,
            )
        } else {
            SubState::Suspended { since: now }
        };
        self.entries.insert(
            producer_id.clone(),
            Entry {
                consumers: 1,
                state,
                attempts: 1,
                paused: false,
                waiting_since: Some(now),
            },
        );
        Ok(true)
    }

    /// A local consumer of `producer_id` closed. The last one starts the linger of an active
    /// subscription; a pending one lingers once answered; a suspended one is dropped (the
    /// origin dropped it with the connection).
    pub fn remove_consumer(
        &mut self,
        now: Instant,
        producer_id: &ProducerId,
    ) -> Result<(), SubError> {
        let Some(e) = self
            .entries
            .get_mut(producer_id)
            .filter(|e| e.consumers > 0)
        else {
            return Err(SubError::NoConsumer(producer_id.clone()));
        };
        e.consumers -= 1;
        if e.consumers > 0 {
            return Ok(());
        }
        e.paused = false;
        match &mut e.state {
            SubState::Active { stream_ids } => {
                e.state = SubState::Lingering {
                    until: now + self.config.linger,
                    stream_ids: std::mem::take(stream_ids),
                };
            }
            SubState::Suspended { .. } => {
                self.entries.remove(producer_id);
            }
            SubState::Requested { .. } | SubState::Lingering { .. } => {}
        }
        Ok(())
    }

    /// The origin answered `request_id`: it sends `producer_id` on `stream_ids`. Consumers that
    /// were paused resume, with a keyframe request.
    pub fn on_subscribed(
        &mut self,
        now: Instant,
        request_id: RequestId,
        producer_id: &ProducerId,
        stream_ids: Vec<u32>,
    ) -> Result<(), SubError> {
        match self.pending.get(&request_id) {
            Some(p) if p == producer_id => {}
            Some(_) => {
                return Err(SubError::MismatchedAnswer {
                    request_id,
                    producer_id: producer_id.clone(),
                })
            }
            None => return Err(self.stale(request_id, producer_id)),
        }
        self.pending.remove(&request_id);
        // A pending request always has its entry: entries leave `pending` when removed.
        let Some(e) = self.entries.get_mut(producer_id) else {
            return Err(SubError::StaleAnswer(request_id));
        };
        e.attempts = 0;
        e.waiting_since = None;
        if e.consumers == 0 {
            e.state = SubState::Lingering {
                until: now + self.config.linger,
                stream_ids,
            };
            return Ok(());
        }
        e.state = SubState::Active { stream_ids };
        if std::mem::take(&mut e.paused) {
            self.actions.push_back(SubAction::ResumeConsumers {
                producer_id: producer_id.clone(),
            });
            self.actions.push_back(SubAction::RequestKeyFrame {
                producer_id: producer_id.clone(),
            });
        }
        Ok(())
    }

    /// The origin refused `request_id`: the subscription is removed and its consumers closed.
    pub fn on_subscribe_failed(
        &mut self,
        _now: Instant,
        request_id: RequestId,
        reason: impl Into<String>,
    ) -> Result<(), SubError> {
        let Some(producer_id) = self.pending.remove(&request_id) else {
            return Err(SubError::StaleAnswer(request_id));
        };
        if let Some(e) = self.entries.remove(&producer_id) {
            if e.consumers > 0 {
                self.actions.push_back(SubAction::CloseConsumers {
                    producer_id,
                    reason: CloseReason::SubscribeFailed(reason.into()),
                });
            }
        }
        Ok(())
    }

    /// The producer closed on its origin: its consumers are closed. Returns whether it was
    /// subscribed here.
    pub fn on_producer_closed(&mut self, _now: Instant, producer_id: &ProducerId) -> bool {
        let Some(e) = self.entries.remove(producer_id) else {
            return false;
        };
        if let SubState::Requested { request_id, .. } = e.state {
            self.pending.remove(&request_id);
        }
        if e.consumers > 0 {
            self.actions.push_back(SubAction::CloseConsumers {
                producer_id: producer_id.clone(),
                reason: CloseReason::ProducerClosed,
            });
        }
        true
    }

    /// The link dropped: active subscriptions are suspended and their consumers paused;
    /// pending ones are suspended (their requests died with the connection); lingering ones
    /// are dropped (the origin dropped them too).
    pub fn on_link_down(&mut self, now: Instant) {
        self.link_up = false;
        self.pending.clear();
        let actions = &mut self.actions;
        self.entries.retain(|producer_id, e| match e.state {
            SubState::Active { .. } => {
                e.paused = true;
                e.waiting_since = Some(now);
                e.state = SubState::Suspended { since: now };
                actions.push_back(SubAction::PauseConsumers {
                    producer_id: producer_id.clone(),
                });
                true
            }
            SubState::Requested { .. } if e.consumers > 0 => {
                e.state = SubState::Suspended {
                    since: e.waiting_since.unwrap_or(now),
                };
                true
            }
            SubState::Requested { .. } | SubState::Lingering { .. } => false,
            SubState::Suspended { .. } => true,
        });
    }

    /// The link is up: every suspended subscription is requested again.
    pub fn on_link_up(&mut self, now: Instant) {
        self.link_up = true;
        for (producer_id, e) in &mut self.entries {
            if let SubState::Suspended { .. } = e.state {
                e.attempts = 1;
                e.state = request(
                    &mut self.next_request,
                    &mut self.pending,
                    &mut self.actions,
                    producer_id,
                    now,
                );
            }
        }
    }

    /// Fires every deadline due at `now`: Subscribe retries and failures, linger ends, grace
    /// expiries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let config = &self.config;
        let (next_request, pending, actions) =
            (&mut self.next_request, &mut self.pending, &mut self.actions);
        self.entries.retain(|producer_id, e| match e.state {
            SubState::Requested { request_id, since }
                if since + config.subscribe_timeout <= now =>
            {
                pending.remove(&request_id);
                if e.consumers == 0 {
                    actions.push_back(SubAction::Unsubscribe {
                        producer_id: producer_id.clone(),
                    });
                    false
                } else if e.attempts < config.subscribe_attempts {
                    e.attempts += 1;
                    e.state = request(next_request, pending, actions, producer_id, now);
                    true
                } else {
                    // The origin may have set it up without our hearing back.
                    actions.push_back(SubAction::Unsubscribe {
                        producer_id: producer_id.clone(),
                    });
                    actions.push_back(SubAction::CloseConsumers {
                        producer_id: producer_id.clone(),
                        reason: CloseReason::SubscribeTimedOut,
                    });
                    false
                }
            }
            SubState::Lingering { until, .. } if until <= now => {
                actions.push_back(SubAction::Unsubscribe {
                    producer_id: producer_id.clone(),
                });
                false
            }
            SubState::Suspended { since } if since + config.grace_period <= now => {
                if e.consumers > 0 {
                    actions.push_back(SubAction::CloseConsumers {
                        producer_id: producer_id.clone(),
                        reason: CloseReason::GraceExpired,
                    });
                }
                false
            }
            _ => true,
        });
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<SubAction> {
        self.actions.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next. Scans the subscriptions
    /// (bounded by [`SubscriptionConfig::max_subscriptions`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e.state {
                SubState::Requested { since, .. } => Some(since + self.config.subscribe_timeout),
                SubState::Active { .. } => None,
                SubState::Lingering { until, .. } => Some(until),
                SubState::Suspended { since } => Some(since + self.config.grace_period),
            })
            .min()
    }

    /// Unsubscribes the lingering subscription closest to its end to make room. Returns
    /// whether one was found.
    fn evict_lingering(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter_map(|(p, e)| match e.state {
                SubState::Lingering { until, .. } => Some((until, p.clone())),
                _ => None,
            })
            .min();
        let Some((_, producer_id)) = victim else {
            return false;
        };
        self.entries.remove(&producer_id);
        self.actions
            .push_back(SubAction::Unsubscribe { producer_id });
        true
    }

    /// Reports a stale answer; queues Unsubscribe if nothing here wants the producer, so the
    /// origin stops sending what nobody reads.
    fn stale(&mut self, request_id: RequestId, producer_id: &ProducerId) -> SubError {
        if !self.entries.contains_key(producer_id) {
            self.actions.push_back(SubAction::Unsubscribe {
                producer_id: producer_id.clone(),
            });
        }
        SubError::StaleAnswer(request_id)
    }
}
