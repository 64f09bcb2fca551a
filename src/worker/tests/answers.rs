//! Answers to `newConsumer` count only from the consumer's own peer.

use super::*;

#[test]
fn another_peer_cannot_accept_or_refuse_a_consumer() {
    let mut m = MediaRoom::new();
    let mut alice_out = client_out(&m.send_keys);
    let consumer = m.consumer.clone();

    // Alice answers Bob's offer: nothing changes, the consumer stays paused and open.
    m.h.w
        .handle_consumer_answer(m.h.now, m.alice, &consumer, true);
    m.h.drain();
    assert!(m.send(&mut alice_out, 1, b"x").is_empty(), "still paused");
    m.h.w
        .handle_consumer_answer(m.h.now, m.alice, &consumer, false);
    m.h.drain();
    m.h.ok(
        m.bob,
        "getConsumerStats",
        json!({"consumerId": consumer.as_str()}),
    );

    // Bob's own answer resumes it.
    m.h.w
        .handle_consumer_answer(m.h.now, m.bob, &consumer, true);
    m.h.drain();
    assert_eq!(m.send(&mut alice_out, 2, b"x").len(), 1);
}
