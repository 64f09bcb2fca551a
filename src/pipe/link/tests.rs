//! Tests of [`LinkState`] and [`Subscriptions`] with virtual time.

use super::*;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn link(seed: u64) -> LinkState {
    let config = LinkConfig {
        rng_seed: seed,
        ..LinkConfig::default()
    };
    LinkState::new(NodeId::from("node-b"), config).expect("default config is valid")
}

fn drain_link(l: &mut LinkState) -> Vec<LinkAction> {
    std::iter::from_fn(|| l.poll_action()).collect()
}

fn subs() -> Subscriptions {
    Subscriptions::new(SubscriptionConfig::default()).expect("default config is valid")
}

fn drain_subs(s: &mut Subscriptions) -> Vec<SubAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// Drives a link from Idle to Connected at `now`.
fn bring_up(l: &mut LinkState, now: Instant) {
    l.need(now);
    l.on_connected(now).unwrap();
    l.on_hello_ack(now).unwrap();
    drain_link(l);
    assert!(l.is_up());
}

fn backoff_until(l: &LinkState) -> (Instant, u32) {
    match l.phase() {
        LinkPhase::Backoff { until, attempt } => (until, attempt),
        other => panic!("expected Backoff, got {other:?}"),
    }
}

fn pid(s: &str) -> ProducerId {
    ProducerId::from(s)
}

fn subscribe_id(actions: &[SubAction]) -> RequestId {
    match actions {
        [SubAction::Subscribe { request_id, .. }] => *request_id,
        other => panic!("expected one Subscribe, got {other:?}"),
    }
}

// ---- LinkState ----

#[test]
fn dial_hello_and_up() {
    let t0 = Instant::now();
    let mut l = link(1);
    assert_eq!(l.poll_timeout(), None);
    l.need(t0);
    assert_eq!(drain_link(&mut l), [LinkAction::Dial { attempt: 0 }]);
    l.on_connected(t0 + 10 * MS).unwrap();
    assert_eq!(drain_link(&mut l), [LinkAction::SendHello]);
    l.on_hello_ack(t0 + 20 * MS).unwrap();
    assert_eq!(drain_link(&mut l), [LinkAction::LinkUp]);
    assert_eq!(
        l.phase(),
        LinkPhase::Connected {
            since: t0 + 20 * MS
        }
    );
    assert_eq!(l.down_since(), None);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn backoff_grows_with_jitter_within_bounds_and_is_seeded() {
    let run = |seed: u64| {
        // A long grace period keeps GraceExpired out of the way: only dials matter here.
        let config = LinkConfig {
            rng_seed: seed,
            grace_period: Duration::from_secs(3600),
            ..LinkConfig::default()
        };
        let mut l = LinkState::new(NodeId::from("node-b"), config.clone()).unwrap();
        let mut now = Instant::now();
        l.need(now);
        let mut waits = Vec::new();
        for failure in 0..12u32 {
            assert_eq!(drain_link(&mut l), [LinkAction::Dial { attempt: failure }]);
            l.on_connection_lost(now).unwrap();
            let (until, attempt) = backoff_until(&l);
            assert_eq!(attempt, failure + 1);
            let wait = until - now;
            assert!(
                wait <= backoff_ceiling(&config, failure),
                "{failure}: {wait:?}"
            );
            assert!(wait <= Duration::from_secs(5));
            waits.push(wait);
            // Nothing happens before the backoff ends.
            if !wait.is_zero() {
                l.handle_timeout(until - Duration::from_nanos(1));
                assert!(drain_link(&mut l).is_empty());
            }
            now = until;
            l.handle_timeout(now);
        }
        waits
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same waits");
    assert_ne!(a, run(8), "another seed, other waits");
    // The first wait is within 100 ms; later ones reach well past it (ceiling 5 s).
    assert!(a[0] <= 100 * MS);
    assert!(a[6..].iter().any(|w| *w > 400 * MS), "{a:?}");
    // Jitter: the capped waits are not all equal.
    assert!(a[6..].windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn backoff_ceiling_doubles_and_caps() {
    let c = LinkConfig::default();
    assert_eq!(backoff_ceiling(&c, 0), 100 * MS);
    assert_eq!(backoff_ceiling(&c, 1), 200 * MS);
    assert_eq!(backoff_ceiling(&c, 5), 3200 * MS);
    assert_eq!(backoff_ceiling(&c, 6), 5 * S);
    assert_eq!(backoff_ceiling(&c, u32::MAX), 5 * S);
}

/// Fails `n` dials in a row starting at `now`; returns the time the last backoff ends.
fn fail_dials(l: &mut LinkState, mut now: Instant, n: u32) -> Instant {
    for _ in 0..n {
        drain_link(l);
        l.on_connection_lost(now).unwrap();
        now = backoff_until(l).0;
        l.handle_timeout(now);
    }
    drain_link(l);
    now
}

#[test]
fn backoff_resets_after_stable_connection_only() {
    let t0 = Instant::now();
    let mut l = link(3);
    l.need(t0);
    let now = fail_dials(&mut l, t0, 6);
    assert_eq!(l.phase().attempt_now(), Some(6));
    l.on_connected(now).unwrap();
    l.on_hello_ack(now).unwrap();
    drain_link(&mut l);
    // Lost after 1 s: not stable, backoff continues from 6 failures.
    l.on_connection_lost(now + S).unwrap();
    assert_eq!(
        drain_link(&mut l),
        [LinkAction::LinkDown { since: now + S }]
    );
    assert_eq!(backoff_until(&l).1, 7);
    let now = backoff_until(&l).0;
    l.handle_timeout(now);
    assert_eq!(drain_link(&mut l), [LinkAction::Dial { attempt: 7 }]);
    l.on_connected(now).unwrap();
    l.on_hello_ack(now).unwrap();
    drain_link(&mut l);
    // Lost after 11 s: stable, backoff restarts at the initial ceiling.
    let lost = now + 11 * S;
    l.on_connection_lost(lost).unwrap();
    let (until, attempt) = backoff_until(&l);
    assert_eq!(attempt, 1);
    assert!(until - lost <= 100 * MS);
}

impl LinkPhase {
    fn attempt_now(&self) -> Option<u32> {
        match *self {
            LinkPhase::Connecting { attempt, .. }
            | LinkPhase::Handshaking { attempt, .. }
            | LinkPhase::Backoff { attempt, .. } => Some(attempt),
            _ => None,
        }
    }
}

#[test]
fn permanent_refusal_backs_off_long_and_is_reported() {
    let t0 = Instant::now();
    let mut l = link(1);
    l.need(t0);
    l.on_connected(t0).unwrap();
    drain_link(&mut l);
    l.on_refused(t0 + MS, true, "cluster id mismatch").unwrap();
    assert_eq!(
        drain_link(&mut l),
        [
            LinkAction::Close,
            LinkAction::Refused {
                permanent: true,
                reason: "cluster id mismatch".into()
            }
        ]
    );
    let refusal = l.last_refusal().expect("refusal kept");
    assert!(refusal.permanent);
    let until = t0 + MS + 30 * S;
    assert_eq!(backoff_until(&l).0, until);
    // Dropping and re-taking the need does not bypass the backoff.
    l.no_longer_needed(t0 + S);
    l.need(t0 + 2 * S);
    assert!(drain_link(&mut l).is_empty());
    assert_eq!(backoff_until(&l).0, until);
    l.handle_timeout(until - MS);
    assert!(!drain_link(&mut l)
        .iter()
        .any(|a| matches!(a, LinkAction::Dial { .. })));
    l.handle_timeout(until);
    assert_eq!(drain_link(&mut l), [LinkAction::Dial { attempt: 1 }]);
}

#[test]
fn transient_refusal_backs_off_with_jitter() {
    let t0 = Instant::now();
    let mut l = link(1);
    l.need(t0);
    l.on_connected(t0).unwrap();
    drain_link(&mut l);
    l.on_refused(t0, false, "draining").unwrap();
    assert_eq!(drain_link(&mut l).len(), 2);
    assert!(backoff_until(&l).0 - t0 <= 100 * MS);
}

#[test]
fn handshake_timeouts_back_off() {
    let t0 = Instant::now();
    let mut l = link(1);
    l.need(t0);
    drain_link(&mut l);
    // QUIC never completes.
    assert_eq!(l.poll_timeout(), Some(t0 + 5 * S));
    l.handle_timeout(t0 + 5 * S - MS);
    assert!(drain_link(&mut l).is_empty());
    l.handle_timeout(t0 + 5 * S);
    assert_eq!(drain_link(&mut l), [LinkAction::Close]);
    let (until, attempt) = backoff_until(&l);
    assert_eq!(attempt, 1);
    // QUIC completes, HelloAck never comes.
    l.handle_timeout(until);
    assert_eq!(drain_link(&mut l), [LinkAction::Dial { attempt: 1 }]);
    l.on_connected(until + S).unwrap();
    assert_eq!(drain_link(&mut l), [LinkAction::SendHello]);
    // The link was needed at t0 and never came up: past 10 s its grace expired too.
    l.handle_timeout(until + 6 * S);
    assert_eq!(
        drain_link(&mut l),
        [LinkAction::Close, LinkAction::GraceExpired]
    );
    assert_eq!(backoff_until(&l).1, 2);
}

#[test]
fn idle_link_closes_after_linger() {
    let t0 = Instant::now();
    let mut l = link(1);
    bring_up(&mut l, t0);
    l.no_longer_needed(t0 + S);
    assert_eq!(l.poll_timeout(), Some(t0 + 31 * S));
    // Needed again within the linger: stays up.
    l.need(t0 + 20 * S);
    l.handle_timeout(t0 + 31 * S);
    assert!(drain_link(&mut l).is_empty());
    assert!(l.is_up());
    l.no_longer_needed(t0 + 40 * S);
    l.handle_timeout(t0 + 69 * S);
    assert!(drain_link(&mut l).is_empty());
    l.handle_timeout(t0 + 70 * S);
    assert_eq!(
        drain_link(&mut l),
        [
            LinkAction::Close,
            LinkAction::LinkDown { since: t0 + 70 * S }
        ]
    );
    assert_eq!(l.phase(), LinkPhase::Idle);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn unneeded_dial_is_aborted() {
    let t0 = Instant::now();
    let mut l = link(1);
    l.need(t0);
    drain_link(&mut l);
    l.no_longer_needed(t0 + MS);
    assert_eq!(drain_link(&mut l), [LinkAction::Close]);
    assert_eq!(l.phase(), LinkPhase::Idle);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn lost_link_reports_down_then_grace_expired_once() {
    let t0 = Instant::now();
    let mut l = link(5);
    bring_up(&mut l, t0);
    let lost = t0 + 20 * S;
    l.on_connection_lost(lost).unwrap();
    assert_eq!(drain_link(&mut l), [LinkAction::LinkDown { since: lost }]);
    assert_eq!(l.down_since(), Some(lost));
    // The node stays dead: dials keep failing, time advances by poll_timeout.
    let mut now = lost;
    let mut grace = 0;
    while now < lost + 30 * S {
        now = l.poll_timeout().expect("a needed down link has a deadline");
        l.handle_timeout(now);
        for a in drain_link(&mut l) {
            match a {
                LinkAction::GraceExpired => {
                    assert!(now >= lost + 10 * S);
                    grace += 1;
                }
                LinkAction::Dial { .. } => l.on_connection_lost(now).unwrap(),
                LinkAction::Close => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(grace, 1);
    // It comes back: up again, no longer down.
    drain_link(&mut l);
    let now = l.poll_timeout().unwrap();
    l.handle_timeout(now);
    l.on_connected(now).unwrap();
    l.on_hello_ack(now).unwrap();
    assert!(drain_link(&mut l).contains(&LinkAction::LinkUp));
    assert_eq!(l.down_since(), None);
}

#[test]
fn unexpected_input_is_an_error_and_changes_nothing() {
    let t0 = Instant::now();
    let mut l = link(1);
    assert_eq!(
        l.on_hello_ack(t0),
        Err(LinkError::UnexpectedInput {
            input: "on_hello_ack",
            phase: "Idle"
        })
    );
    assert!(l.on_connection_lost(t0).is_err());
    assert!(l.on_refused(t0, true, "x").is_err());
    assert_eq!(l.phase(), LinkPhase::Idle);
    assert!(drain_link(&mut l).is_empty());
}

#[test]
fn bad_configs_are_refused() {
    let zero = LinkConfig {
        initial_backoff: Duration::ZERO,
        ..LinkConfig::default()
    };
    assert!(matches!(
        LinkState::new(NodeId::from("b"), zero),
        Err(LinkError::InvalidConfig(_))
    ));
    let inverted = LinkConfig {
        initial_backoff: 10 * S,
        ..LinkConfig::default()
    };
    assert!(inverted.validate().is_err());
    let sub = SubscriptionConfig {
        subscribe_attempts: 0,
        ..SubscriptionConfig::default()
    };
    assert!(matches!(
        Subscriptions::new(sub),
        Err(SubError::InvalidConfig(_))
    ));
}

// ---- Subscriptions ----

#[test]
fn first_consumer_subscribes_once_twenty_share_it() {
    let t0 = Instant::now();
    let mut s = subs();
    s.on_link_up(t0);
    let p = pid("cam");
    assert_eq!(s.add_consumer(t0, &p), Ok(true));
    let id = subscribe_id(&drain_subs(&mut s));
    for i in 1..20 {
        assert_eq!(s.add_consumer(t0 + i * MS, &p), Ok(false));
    }
    assert!(drain_subs(&mut s).is_empty());
    s.on_subscribed(t0 + 50 * MS, id, &p, vec![1, 2]).unwrap();
    assert!(drain_subs(&mut s).is_empty());
    assert_eq!(s.consumers("cam"), 20);
    assert_eq!(
        s.state("cam"),
        Some(&SubState::Active {
            stream_ids: vec![1, 2]
        })
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s.poll_timeout(), None);
}

/// A link-up Subscriptions with `p` active for `n` consumers at `now`.
fn active(p: &ProducerId, n: usize, now: Instant) -> Subscriptions {
    let mut s = subs();
    s.on_link_up(now);
    for _ in 0..n {
        s.add_consumer(now, p).unwrap();
    }
    let id = subscribe_id(&drain_subs(&mut s));
    s.on_subscribed(now, id, p, vec![7]).unwrap();
    s
}

#[test]
fn last_consumer_leaving_lingers_then_unsubscribes() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = active(&p, 2, t0);
    s.remove_consumer(t0 + S, &p).unwrap();
    s.remove_consumer(t0 + S, &p).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + 3 * S));
    s.handle_timeout(t0 + 3 * S - MS);
    assert!(drain_subs(&mut s).is_empty());
    s.handle_timeout(t0 + 3 * S);
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::Unsubscribe {
            producer_id: p.clone()
        }]
    );
    assert!(s.is_empty());
    assert_eq!(
        s.remove_consumer(t0 + 4 * S, &p),
        Err(SubError::NoConsumer(p))
    );
}

#[test]
fn consumer_returning_within_linger_keeps_the_subscription() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = active(&p, 1, t0);
    s.remove_consumer(t0 + S, &p).unwrap();
    assert_eq!(s.add_consumer(t0 + 2 * S, &p), Ok(false));
    s.handle_timeout(t0 + 10 * S);
    assert!(drain_subs(&mut s).is_empty());
    assert_eq!(
        s.state("cam"),
        Some(&SubState::Active {
            stream_ids: vec![7]
        })
    );
}

#[test]
fn link_down_pauses_and_up_within_grace_resubscribes_then_resumes() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = active(&p, 3, t0);
    s.on_link_down(t0 + S);
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::PauseConsumers {
            producer_id: p.clone()
        }]
    );
    assert_eq!(s.state("cam"), Some(&SubState::Suspended { since: t0 + S }));
    // A consumer added meanwhile is paused too.
    assert_eq!(s.add_consumer(t0 + 2 * S, &p), Ok(false));
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::PauseConsumers {
            producer_id: p.clone()
        }]
    );
    s.on_link_up(t0 + 5 * S);
    let id = subscribe_id(&drain_subs(&mut s));
    assert!(id > RequestId(1), "request ids increase");
    s.on_subscribed(t0 + 5 * S + 30 * MS, id, &p, vec![9])
        .unwrap();
    assert_eq!(
        drain_subs(&mut s),
        [
            SubAction::ResumeConsumers {
                producer_id: p.clone()
            },
            SubAction::RequestKeyFrame {
                producer_id: p.clone()
            }
        ]
    );
    assert_eq!(s.consumers("cam"), 4);
    // Past the old grace deadline nothing happens.
    s.handle_timeout(t0 + 30 * S);
    assert!(drain_subs(&mut s).is_empty());
}

#[test]
fn link_down_past_grace_closes_consumers_exactly_once() {
    let t0 = Instant::now();
    let p = pid("cam");
    let q = pid("mic");
    let mut s = active(&p, 2, t0);
    s.add_consumer(t0, &q).unwrap();
    let id = subscribe_id(&drain_subs(&mut s));
    s.on_subscribed(t0, id, &q, vec![8]).unwrap();
    s.on_link_down(t0 + S);
    assert_eq!(drain_subs(&mut s).len(), 2);
    let mut closed = Vec::new();
    let mut now = t0 + S;
    for _ in 0..50 {
        now += 500 * MS;
        s.handle_timeout(now);
        for a in drain_subs(&mut s) {
            match a {
                SubAction::CloseConsumers {
                    producer_id,
                    reason: CloseReason::GraceExpired,
                } => {
                    assert_eq!(now, t0 + 11 * S);
                    closed.push(producer_id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(closed, [p, q]);
    assert!(s.is_empty());
    s.on_link_up(now);
    assert!(drain_subs(&mut s).is_empty());
}

#[test]
fn grace_is_not_renewed_by_a_flapping_link() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = active(&p, 1, t0);
    s.on_link_down(t0 + S);
    drain_subs(&mut s);
    // Up at 5 s, Subscribe out, down again before the answer.
    s.on_link_up(t0 + 5 * S);
    drain_subs(&mut s);
    s.on_link_down(t0 + 6 * S);
    assert_eq!(s.state("cam"), Some(&SubState::Suspended { since: t0 + S }));
    s.on_link_up(t0 + 8 * S);
    drain_subs(&mut s);
    s.on_link_down(t0 + 9 * S);
    s.handle_timeout(t0 + 11 * S);
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::CloseConsumers {
            producer_id: p,
            reason: CloseReason::GraceExpired
        }]
    );
}

#[test]
fn consumer_added_while_link_down_waits_for_it() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = subs();
    assert_eq!(s.add_consumer(t0, &p), Ok(true));
    assert!(drain_subs(&mut s).is_empty());
    s.on_link_up(t0 + S);
    let id = subscribe_id(&drain_subs(&mut s));
    s.on_subscribed(t0 + S, id, &p, vec![1]).unwrap();
    // Never paused, so nothing to resume.
    assert!(drain_subs(&mut s).is_empty());
}

#[test]
fn subscribe_timeout_retries_then_fails() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = subs();
    s.on_link_up(t0);
    s.add_consumer(t0, &p).unwrap();
    let mut ids = vec![subscribe_id(&drain_subs(&mut s))];
    for k in 1..3 {
        s.handle_timeout(t0 + k * 5 * S - MS);
        assert!(drain_subs(&mut s).is_empty());
        s.handle_timeout(t0 + k * 5 * S);
        ids.push(subscribe_id(&drain_subs(&mut s)));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    s.handle_timeout(t0 + 15 * S);
    assert_eq!(
        drain_subs(&mut s),
        [
            SubAction::Unsubscribe {
                producer_id: p.clone()
            },
            SubAction::CloseConsumers {
                producer_id: p.clone(),
                reason: CloseReason::SubscribeTimedOut
            }
        ]
    );
    assert!(s.is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn late_answers_are_ignored() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = subs();
    s.on_link_up(t0);
    s.add_consumer(t0, &p).unwrap();
    let first = subscribe_id(&drain_subs(&mut s));
    s.handle_timeout(t0 + 5 * S);
    let second = subscribe_id(&drain_subs(&mut s));
    // The first answer arrives after its retry: ignored, and no Unsubscribe since the
    // retry still wants the producer.
    assert_eq!(
        s.on_subscribed(t0 + 6 * S, first, &p, vec![1]),
        Err(SubError::StaleAnswer(first))
    );
    assert!(drain_subs(&mut s).is_empty());
    assert!(
        matches!(s.state("cam"), Some(SubState::Requested { request_id, .. }) if *request_id == second)
    );
    // An answer naming another producer is refused.
    assert!(matches!(
        s.on_subscribed(t0 + 6 * S, second, &pid("mic"), vec![2]),
        Err(SubError::MismatchedAnswer { .. })
    ));
    // The producer closes at the origin; the retry's answer comes late: Unsubscribe.
    assert!(s.on_producer_closed(t0 + 7 * S, &p));
    drain_subs(&mut s);
    assert_eq!(
        s.on_subscribed(t0 + 8 * S, second, &p, vec![1]),
        Err(SubError::StaleAnswer(second))
    );
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::Unsubscribe { producer_id: p }]
    );
    assert_eq!(
        s.on_subscribe_failed(t0 + 9 * S, second, "gone"),
        Err(SubError::StaleAnswer(second))
    );
}

#[test]
fn answers_from_before_a_reconnect_are_stale() {
    let t0 = Instant::now();
    let p = pid("cam");
    let mut s = subs();
    s.on_link_up(t0);
    s.add_consumer(t0, &p).unwrap();
    let old = subscribe_id(&drain_subs(&mut s));
    s.on_link_down(t0 + S);
    s.on_link_up(t0 + 2 * S);
    let new = subscribe_id(&drain_subs(&mut s));
    assert!(s.on_subscribed(t0 + 2 * S, old, &p, vec![1]).is_err());
    assert!(drain_subs(&mut s).is_empty());
    s.on_subscribed(t0 + 2 * S, new, &p, vec![1]).unwrap();
    assert!(matches!(s.state("cam"), Some(SubState::Active { .. })));
}

#[test]
fn subscribe_failure_and_producer_close_close_consumers() {
    let t0 = Instant::now();
    let (p, q) = (pid("cam"), pid("mic"));
    let mut s = subs();
    s.on_link_up(t0);
    s.add_consumer(t0, &p).unwrap();
    let id = subscribe_id(&drain_subs(&mut s));
    s.on_subscribe_failed(t0 + MS, id, "no such producer")
        .unwrap();
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::CloseConsumers {
            producer_id: p.clone(),
            reason: CloseReason::SubscribeFailed("no such producer".into())
        }]
    );
    assert_eq!(s.state("cam"), None);
    let mut s = active(&q, 1, t0);
    assert!(s.on_producer_closed(t0 + S, &q));
    assert_eq!(
        drain_subs(&mut s),
        [SubAction::CloseConsumers {
            producer_id: q.clone(),
            reason: CloseReason::ProducerClosed
        }]
    );
    assert!(!s.on_producer_closed(t0 + S, &q));
}

#[test]
fn subscriptions_are_bounded_and_lingering_ones_make_room() {
    let t0 = Instant::now();
    let mut s = Subscriptions::new(SubscriptionConfig {
        max_subscriptions: 2,
        ..SubscriptionConfig::default()
    })
    .unwrap();
    s.on_link_up(t0);
    let (a, b, c) = (pid("a"), pid("b"), pid("c"));
    s.add_consumer(t0, &a).unwrap();
    s.add_consumer(t0, &b).unwrap();
    let ids: Vec<_> = drain_subs(&mut s)
        .into_iter()
        .map(|a| match a {
            SubAction::Subscribe { request_id, .. } => request_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        s.add_consumer(t0, &c),
        Err(SubError::TooManySubscriptions { max: 2 })
    );
    assert!(drain_subs(&mut s).is_empty());
    // More consumers of a subscribed producer are still fine.
    assert_eq!(s.add_consumer(t0, &a), Ok(false));
    // Once `b` lingers, `c` takes its place.
    s.on_subscribed(t0, ids[1], &b, vec![2]).unwrap();
    s.remove_consumer(t0 + S, &b).unwrap();
    assert_eq!(s.add_consumer(t0 + S, &c), Ok(true));
    let actions = drain_subs(&mut s);
    assert_eq!(
        actions[0],
        SubAction::Unsubscribe {
            producer_id: b.clone()
        }
    );
    assert!(matches!(&actions[1], SubAction::Subscribe { producer_id, .. } if *producer_id == c));
    assert_eq!(s.len(), 2);
}
