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
