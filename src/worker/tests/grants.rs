//! Grants and per-peer limits: what a peer's token allows and how much it may allocate.

use super::*;
use crate::auth::Grants;
use crate::ids::PeerId;
use crate::signaling::admission::Admission;
use crate::signaling::limits::PeerLimits;

const PUBLISH_ONLY: Grants = Grants {
    can_publish: true,
    can_subscribe: false,
};
const SUBSCRIBE_ONLY: Grants = Grants {
    can_publish: false,
    can_subscribe: true,
};

impl Harness {
    fn open_admitted(&mut self, peer: &str, grants: Grants, limits: PeerLimits) -> SessionId {
        let s = self.next_session;
        self.next_session += 1;
        let admission = Admission {
            peer: PeerId::from(peer),
            grants,
            limits,
        };
        self.w
            .handle_session_open(self.now, s, ROOM.into(), admission);
        s
    }
}

#[test]
fn a_peer_without_can_publish_cannot_produce() {
    let mut h = Harness::new();
    let s = h.open_admitted("viewer", SUBSCRIBE_ONLY, PeerLimits::default());
    h.join(s, "Viewer", true);
    let e = h.err(
        s,
        "createWebRtcTransport",
        json!({"producing": true, "consuming": false}),
    );
    assert_eq!(e.0, 403);
    assert!(e.1.contains("canPublish"), "{e:?}");
    // Not even on a transport it may have.
    let t = h.transport(s, false, true);
    let e = h.err(
        s,
        "produce",
        json!({"transportId": tid(&t), "kind": "audio", "rtpParameters": fixture(OPUS)}),
    );
    assert_eq!(e.0, 403, "{e:?}");
}

#[test]
fn a_peer_without_can_subscribe_gets_no_consumers() {
    let mut h = Harness::new();
    let quiet = h.open_admitted("quiet", PUBLISH_ONLY, PeerLimits::default());
    h.join(quiet, "Quiet", true);
    let e = h.err(
        quiet,
        "createWebRtcTransport",
        json!({"producing": true, "consuming": true}),
    );
    assert_eq!(e.0, 403);
    assert!(e.1.contains("canSubscribe"), "{e:?}");
    h.transport(quiet, true, false);
    let watcher = h.open("watcher");
    h.join(watcher, "Watcher", true);
    h.transport(watcher, false, true);
    let alice = h.open("alice");
    h.join(alice, "Alice", true);
    let t = h.transport(alice, true, false);
    h.drain();
    h.produce(alice, &tid(&t), "audio", OPUS);
    let out = h.drain();
    assert_eq!(new_consumers_for(&out, watcher).len(), 1);
    assert!(new_consumers_for(&out, quiet).is_empty());
}

#[test]
fn producers_and_consumers_per_peer_are_bounded() {
    let mut h = Harness::new();
    let limits = PeerLimits {
        max_producers: 1,
        max_consumers: 1,
        ..PeerLimits::default()
    };
    let a = h.open_admitted("alice", Grants::ALL, limits);
    h.join(a, "Alice", true);
    let t = h.transport(a, true, false);
    h.produce(a, &tid(&t), "audio", OPUS);
    let e = h.err(
        a,
        "produce",
        json!({"transportId": tid(&t), "kind": "video", "rtpParameters": fixture(VP8_SIMULCAST)}),
    );
    assert_eq!(e.0, 400);
    assert!(e.1.contains("too many producers"), "{e:?}");

    // bob may produce two; alice is offered only the first.
    let b = h.open("bob");
    h.join(b, "Bob", true);
    let bt = h.transport(b, true, false);
    h.transport(a, false, true);
    h.drain();
    h.produce(b, &tid(&bt), "audio", OPUS);
    h.produce(b, &tid(&bt), "video", VP8_SIMULCAST);
    let out = h.drain();
    assert_eq!(new_consumers_for(&out, a).len(), 1);
}

#[test]
fn transports_per_peer_follow_the_admitted_limit() {
    let mut h = Harness::new();
    let limits = PeerLimits {
        max_transports: 1,
        ..PeerLimits::default()
    };
    let a = h.open_admitted("alice", Grants::ALL, limits);
    h.transport(a, true, false);
    let e = h.err(a, "createWebRtcTransport", json!({"consuming": true}));
    assert_eq!(e.0, 400);
    assert!(e.1.contains("limit 1"), "{e:?}");
}
