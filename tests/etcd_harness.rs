//! The real etcd the discovery tests run against: it starts on free ports, stores and returns
//! values, survives a stop and restart with its data, and cleans up.

mod common;

use common::etcd::{base64, Etcd};

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (input, want) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), want, "{input:?}");
    }
}

#[tokio::test]
async fn etcd_stores_values_across_a_restart() {
    let mut etcd = Etcd::start().await;
    etcd.put("/pipemesh/test/k", b"value one").await;
    assert_eq!(
        etcd.get_base64("/pipemesh/test/k").await.as_deref(),
        Some(base64(b"value one").as_str())
    );
    etcd.stop();
    assert!(
        etcd.get_base64("/pipemesh/test/k").await.is_none(),
        "unreachable while stopped"
    );
    etcd.start_again().await;
    assert_eq!(
        etcd.get_base64("/pipemesh/test/k").await.as_deref(),
        Some(base64(b"value one").as_str()),
        "data survives a restart"
    );
}

/// What the discovery backend will rely on, checked against Debian's etcd 3.4: leased keys, a
/// watch from a revision, and keys vanishing with their lease.
#[tokio::test]
async fn etcd_client_leases_and_watches_work_against_this_etcd() {
    use etcd_client::{Client, EventType, PutOptions, WatchOptions};
    let etcd = Etcd::start().await;
    let mut c = Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd-client connects");
    let lease = c.lease_grant(5, None).await.expect("lease granted").id();
    let put = c
        .put(
            "/pipemesh/test/nodes/a",
            "{}",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("leased put");
    let rev = put.header().expect("header").revision();
    let (_w, mut stream) = c
        .watch(
            "/pipemesh/test/",
            Some(WatchOptions::new().with_prefix().with_start_revision(rev)),
        )
        .await
        .expect("watch");
    c.lease_revoke(lease).await.expect("lease revoked");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("watch event within 10 s")
            .expect("watch stream ok")
            .expect("watch stream open");
        seen.extend(resp.events().iter().map(|e| e.event_type()));
    }
    assert_eq!(
        seen,
        vec![EventType::Put, EventType::Delete],
        "put seen from its revision, then the lease's delete"
    );
    let left = c
        .get("/pipemesh/test/nodes/a", None)
        .await
        .expect("get")
        .kvs()
        .len();
    assert_eq!(left, 0, "the key went with its lease");
}
