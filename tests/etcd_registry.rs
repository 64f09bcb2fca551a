//! The etcd registry backend against a real etcd: registration, ops seen by everyone, duplicate
//! node ids, a revoked lease, etcd restarts, compaction while away, odd keys, TLS,
//! authentication and shutdown.
//!
//! Every wait is for an event (an update, a status change) with a deadline. Two sleeps are the
//! behaviour under test rather than synchronisation: an authentication token expiring, and a
//! watch staying idle.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::etcd::{free_addr, Etcd};
use etcd_client::{Client, CompactionOptions, GetOptions, Permission};
use pipemesh::discovery::etcd::{self as backend, EtcdAuth, EtcdConfig, EtcdTls};
use pipemesh::discovery::registry::{
    Registration, RegistryError, RegistryHandle, RegistryOp, RegistryStatus, RegistryUpdate,
};
use tokio::sync::oneshot;

/// Lease TTL of every node here.
const TTL: Duration = Duration::from_secs(2);
/// Upper bound on one awaited event.
const WAIT: Duration = Duration::from_secs(10);
const CLUSTER: &str = "c";

fn config(endpoint: String) -> EtcdConfig {
    let mut cfg = EtcdConfig::new(vec![endpoint], CLUSTER);
    cfg.lease_ttl = TTL;
    cfg.connect_timeout = Duration::from_secs(5);
    cfg
}

fn registration(id: &str, value: &str) -> Registration {
    Registration {
        node_id: id.into(),
        node_key: format!("nodes/{id}"),
        node_value: value.into(),
    }
}

/// The full etcd key of a relative key.
fn full(key: &str) -> String {
    format!("/pipemesh/{CLUSTER}/{key}")
}

type View = BTreeMap<Vec<u8>, Vec<u8>>;

/// A running backend and the view its updates build.
struct Node {
    handle: RegistryHandle,
    stop: Option<oneshot::Sender<()>>,
    view: View,
    snapshots: usize,
}

impl Node {
    async fn start(cfg: EtcdConfig, reg: Registration) -> Result<Node, RegistryError> {
        common::init_tracing();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = backend::start(cfg, reg, async move {
            let _ = stopped.await;
        })
        .await?;
        Ok(Node {
            handle,
            stop: Some(stop),
            view: View::new(),
            snapshots: 0,
        })
    }

    fn put(&self, key: &str, value: &str) {
        self.handle
            .ops
            .send(RegistryOp::Put {
                key: key.into(),
                value: value.into(),
            })
            .expect("backend running");
    }

    fn delete(&self, key: &str) {
        self.handle
            .ops
            .send(RegistryOp::Delete { key: key.into() })
            .expect("backend running");
    }

    /// Applies updates to the view until `pred` holds.
    async fn wait_view(&mut self, what: &str, pred: impl Fn(&View) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !pred(&self.view) {
            let update = tokio::time::timeout_at(deadline, self.handle.updates.recv())
                .await
                .unwrap_or_else(|_| panic!("waiting for {what}; view: {:?}", self.view))
                .expect("updates open");
            match update {
                RegistryUpdate::Snapshot { kvs, .. } => {
                    self.snapshots += 1;
                    self.view = kvs.into_iter().collect();
                }
                RegistryUpdate::Changes { changes, .. } => {
                    for c in changes {
                        match c.value {
                            Some(v) => self.view.insert(c.key, v),
                            None => self.view.remove(&c.key),
                        };
                    }
                }
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.view
            .get(key.as_bytes())
            .map(|v| std::str::from_utf8(v).expect("UTF-8 value"))
    }

    async fn wait_status(
        &mut self,
        what: &str,
        pred: impl FnMut(&RegistryStatus) -> bool,
    ) -> RegistryStatus {
        let waited = tokio::time::timeout(WAIT, async {
            self.handle
                .status
                .wait_for(pred)
                .await
                .map(|s| s.clone())
                .ok()
        })
        .await;
        match waited {
            Ok(Some(status)) => status,
            Ok(None) => panic!("status closed while waiting for {what}"),
            Err(_) => panic!(
                "waiting for status {what}: {:?}",
                *self.handle.status.borrow()
            ),
        }
    }

    /// Stops the backend and waits until it is gone (status and updates closed).
    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(WAIT, async {
            while self.handle.status.changed().await.is_ok() {}
            while self.handle.updates.recv().await.is_some() {}
        })
        .await
        .expect("backend stops");
    }
}

/// A key's value and lease as another client sees it.
async fn read(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let resp = client.get(full(key), None).await.expect("get");
    resp.kvs()
        .first()
        .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()))
}

#[tokio::test]
async fn registers_and_publishes_ops_that_everyone_sees() {
    let etcd = Etcd::start().await;
    let mut other = etcd.client().await;
    other.put(full("nodes/b"), "b", None).await.expect("put");
    let mut cfg = config(etcd.endpoint());
    cfg.max_txn_ops = 8; // 50 keys below take several transactions
    let mut a = Node::start(cfg, registration("a", "{\"id\":\"a\"}"))
        .await
        .expect("starts");

    // The first update is a snapshot with our record and what was there before.
    a.wait_view("the first snapshot", |v| !v.is_empty()).await;
    assert_eq!(a.snapshots, 1);
    assert_eq!(a.get("nodes/a"), Some("{\"id\":\"a\"}"));
    assert_eq!(a.get("nodes/b"), Some("b"));
    let status = a.handle.status.borrow().clone();
    assert!(status.connected && status.lease_id != 0, "{status:?}");

    for i in 0..50 {
        a.put(&format!("rooms/r/peers/a/p{i}"), "v1");
    }
    a.put("rooms/r/peers/a/p0", "v2");
    a.put("rooms/r/gone", "x");
    a.delete("rooms/r/gone");
    a.wait_view("our own ops", |v| {
        v.get(&b"rooms/r/peers/a/p0"[..]) == Some(&b"v2".to_vec())
            && v.contains_key(&b"rooms/r/peers/a/p49"[..])
    })
    .await;
    assert!(a.get("rooms/r/gone").is_none());
    assert_eq!(
        read(&mut other, "rooms/r/peers/a/p0").await,
        Some(("v2".into(), status.lease_id)),
        "another client sees the put, on our lease"
    );
    assert_eq!(read(&mut other, "rooms/r/gone").await, None);

    // Another client's writes reach our view, and the status follows the revision.
    let rev = other
        .put(full("rooms/r/peers/b/q"), "b1", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    a.wait_view("the other client's put", |v| {
        v.contains_key(&b"rooms/r/peers/b/q"[..])
    })
    .await;
    other
        .delete(full("rooms/r/peers/b/q"), None)
        .await
        .expect("delete");
    a.wait_view("the other client's delete", |v| {
        !v.contains_key(&b"rooms/r/peers/b/q"[..])
    })
    .await;
    let status = a.wait_status("at the revision", |s| s.revision > rev).await;
    assert!(status.connected && status.failed_writes == 0, "{status:?}");
    assert_eq!(
        (status.lease_regrants, status.watch_resumes, status.relists),
        (0, 0, 0)
    );
    a.shutdown().await;
}

#[tokio::test]
async fn duplicate_node_id_waits_out_the_lease_and_fails_then_starts_once_the_first_is_gone() {
    let etcd = Etcd::start().await;
    let mut first = Node::start(config(etcd.endpoint()), registration("a", "first"))
        .await
        .expect("first starts");
    first
        .wait_view("the first snapshot", |v| !v.is_empty())
        .await;

    let t = Instant::now();
    let err = Node::start(config(etcd.endpoint()), registration("a", "second"))
        .await
        .err()
        .expect("a second node with the same id is refused");
    let took = t.elapsed();
    match err {
        RegistryError::DuplicateNode {
            node_id,
            cluster,
            existing,
            waited,
        } => {
            assert_eq!((node_id.as_str(), cluster.as_str()), ("a", CLUSTER));
            assert_eq!(existing, "first");
            assert!(
                waited >= TTL / 2 && waited <= TTL + Duration::from_secs(2),
                "waited about the lease TTL (+1 s): {waited:?}"
            );
        }
        other => panic!("expected DuplicateNode, got {other}"),
    }
    assert!(took < TTL + Duration::from_secs(3), "{took:?}");
    let status = first.handle.status.borrow().clone();
    assert!(status.connected, "the first node is untouched: {status:?}");
    assert_eq!(first.get("nodes/a"), Some("first"));

    first.shutdown().await;
    let t = Instant::now();
    let mut second = Node::start(config(etcd.endpoint()), registration("a", "second"))
        .await
        .expect("starts once the first revoked its lease");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    second
        .wait_view("the second's record", |v| {
            v.get(&b"nodes/a"[..]) == Some(&b"second".to_vec())
        })
        .await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_lease_revoked_behind_our_back_is_regranted_and_every_key_republished() {
    let etcd = Etcd::start().await;
    let mut other = etcd.client().await;
    let mut a = Node::start(config(etcd.endpoint()), registration("a", "rec"))
        .await
        .expect("starts");
    a.put("rooms/r/peers/a/p1", "one");
    a.put("rooms/r/peers/a/p2", "two");
    a.wait_view("our keys", |v| v.len() == 3).await;
    let old = a.handle.status.borrow().lease_id;

    other.lease_revoke(old).await.expect("revoke");
    a.wait_view("the revocation's deletes", |v| v.is_empty())
        .await;
    a.wait_view("every key back", |v| v.len() == 3).await;
    let status = a
        .wait_status("re-granted", |s| s.connected && s.lease_regrants == 1)
        .await;
    assert_ne!(status.lease_id, old);
    for (key, value) in [
        ("nodes/a", "rec"),
        ("rooms/r/peers/a/p1", "one"),
        ("rooms/r/peers/a/p2", "two"),
    ] {
        assert_eq!(
            read(&mut other, key).await,
            Some((value.into(), status.lease_id)),
            "{key} re-published on the new lease"
        );
    }

    // Writes after the re-grant carry the new lease.
    a.put("rooms/r/peers/a/p3", "three");
    a.wait_view("a write on the new lease", |v| v.len() == 4)
        .await;
    assert_eq!(
        read(&mut other, "rooms/r/peers/a/p3").await,
        Some(("three".into(), status.lease_id))
    );
    a.shutdown().await;
}

#[tokio::test]
async fn another_instance_with_our_node_id_is_never_overwritten() {
    let etcd = Etcd::start().await;
    let mut other = etcd.client().await;
    let mut a = Node::start(config(etcd.endpoint()), registration("a", "rec"))
        .await
        .expect("starts");
    a.put("rooms/r/peers/a/p1", "one");
    a.wait_view("our keys", |v| v.len() == 2).await;
    let ours = a.handle.status.borrow().lease_id;

    // An impostor takes the record onto its own lease, then our lease goes.
    let theirs = other.lease_grant(60, None).await.expect("grant").id();
    other
        .put(
            full("nodes/a"),
            "impostor",
            Some(etcd_client::PutOptions::new().with_lease(theirs)),
        )
        .await
        .expect("put");
    other.lease_revoke(ours).await.expect("revoke");
    let status = a
        .wait_status("the conflict reported", |s| {
            !s.connected
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("taken by another instance"))
        })
        .await;
    assert_eq!(status.lease_regrants, 0, "{status:?}");
    assert_eq!(
        read(&mut other, "nodes/a").await,
        Some(("impostor".into(), theirs)),
        "not overwritten"
    );

    // Once the impostor is gone, the next attempt re-publishes everything.
    other.lease_revoke(theirs).await.expect("revoke");
    let status = a
        .wait_status("re-published", |s| s.connected && s.lease_regrants == 1)
        .await;
    assert_eq!(
        read(&mut other, "nodes/a").await,
        Some(("rec".into(), status.lease_id))
    );
    assert_eq!(
        read(&mut other, "rooms/r/peers/a/p1").await,
        Some(("one".into(), status.lease_id))
    );
    a.shutdown().await;
}

#[tokio::test]
async fn etcd_restart_resumes_the_watch_and_applies_the_ops_of_the_outage() {
    let mut etcd = Etcd::start().await;
    let mut a = Node::start(config(etcd.endpoint()), registration("a", "rec"))
        .await
        .expect("starts");
    a.put("k/kept", "v1");
    a.put("k/dropped", "v1");
    a.wait_view("our keys", |v| v.len() == 3).await;

    etcd.stop();
    let down = a.wait_status("not connected", |s| !s.connected).await;
    assert!(down.last_error.is_some(), "{down:?}");
    // Written while etcd is away: applied once it is back.
    a.put("k/kept", "v2");
    a.delete("k/dropped");
    a.put("k/new", "v1");

    etcd.start_again().await;
    let up = a
        .wait_status("connected again", |s| {
            s.connected && s.lease_regrants >= 1 && s.watch_resumes >= 1
        })
        .await;
    assert_eq!(up.last_error, None);
    a.wait_view("the outage's ops", |v| {
        v.get(&b"k/kept"[..]) == Some(&b"v2".to_vec())
            && v.contains_key(&b"k/new"[..])
            && !v.contains_key(&b"k/dropped"[..])
    })
    .await;

    // The resumed watch delivers what others write now.
    let mut other = etcd.client().await;
    other.put(full("nodes/b"), "b", None).await.expect("put");
    a.wait_view("a change after the restart", |v| {
        v.contains_key(&b"nodes/b"[..])
    })
    .await;
    let lease = a.handle.status.borrow().lease_id;
    assert_eq!(read(&mut other, "k/kept").await, Some(("v2".into(), lease)));
    assert_eq!(
        read(&mut other, "k/dropped").await,
        None,
        "deleted while away: it went with the old lease"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn a_watch_behind_a_compaction_relists() {
    let mut etcd = Etcd::start().await;
    let home = etcd.client;
    let mut a = Node::start(config(etcd.endpoint()), registration("a", "rec"))
        .await
        .expect("starts");
    a.wait_view("the first snapshot", |v| !v.is_empty()).await;

    // Elsewhere (a client address the node does not know), the cluster moves on and compacts.
    etcd.stop();
    a.wait_status("not connected", |s| !s.connected).await;
    etcd.start_again_on(free_addr()).await;
    let mut other = etcd.client().await;
    other.put(full("nodes/b"), "b", None).await.expect("put");
    other.put(full("rooms/x"), "1", None).await.expect("put");
    other.put(full("rooms/y"), "1", None).await.expect("put");
    let rev = other
        .delete(full("rooms/y"), None)
        .await
        .expect("delete")
        .header()
        .expect("header")
        .revision();
    other
        .compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    drop(other);
    etcd.stop();

    etcd.start_again_on(home).await;
    a.wait_status("re-listed", |s| s.connected && s.relists >= 1)
        .await;
    a.wait_view("the changes made while away", |v| {
        v.contains_key(&b"nodes/b"[..])
            && v.contains_key(&b"rooms/x"[..])
            && !v.contains_key(&b"rooms/y"[..])
            && v.contains_key(&b"nodes/a"[..])
    })
    .await;
    assert!(a.snapshots >= 2, "a second snapshot: {}", a.snapshots);
    a.shutdown().await;
}

#[tokio::test]
async fn keys_outside_utf8_pass_through_and_keys_outside_the_prefix_do_not() {
    let etcd = Etcd::start().await;
    let mut other = etcd.client().await;
    let mut a = Node::start(config(etcd.endpoint()), registration("a", "rec"))
        .await
        .expect("starts");
    a.wait_view("the first snapshot", |v| !v.is_empty()).await;

    let mut odd = full("rooms/").into_bytes();
    odd.extend_from_slice(b"\xff\xfe");
    other
        .put(b"/pipemesh/c0".to_vec(), "after the prefix", None)
        .await
        .expect("put");
    other
        .put("/pipemesh/other/nodes/z", "another cluster", None)
        .await
        .expect("put");
    other
        .put(odd, b"\x00\x01".to_vec(), None)
        .await
        .expect("put");
    a.wait_view("the odd key", |v| v.contains_key(&b"rooms/\xff\xfe"[..]))
        .await;
    assert_eq!(a.view[&b"rooms/\xff\xfe"[..]], b"\x00\x01".to_vec());
    assert_eq!(
        a.view.len(),
        2,
        "nothing from outside the prefix: {:?}",
        a.view
    );
    a.shutdown().await;
}

#[tokio::test]
async fn an_idle_watch_stays_up_on_answered_progress_requests() {
    let etcd = Etcd::start().await;
    let mut other = etcd.client().await;
    let mut cfg = config(etcd.endpoint());
    cfg.lease_ttl = Duration::from_secs(1);
    let mut a = Node::start(cfg, registration("a", "rec"))
        .await
        .expect("starts");
    a.wait_view("the first snapshot", |v| !v.is_empty()).await;
    // Idle for three TTLs: a progress request every TTL; one left unanswered for a TTL
    // would count as a broken watch and a resume.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = a.handle.status.borrow().clone();
    assert!(status.connected, "{status:?}");
    assert_eq!(status.watch_resumes, 0, "{status:?}");
    other.put(full("nodes/b"), "b", None).await.expect("put");
    a.wait_view("a change after the idle time", |v| {
        v.contains_key(&b"nodes/b"[..])
    })
    .await;
    a.shutdown().await;
}

#[tokio::test]
async fn shutdown_revokes_the_lease_so_our_keys_vanish_at_once() {
    let etcd = Etcd::start().await;
    let mut other = etcd.client().await;
    let mut a = Node::start(config(etcd.endpoint()), registration("a", "rec"))
        .await
        .expect("starts");
    a.put("rooms/r/peers/a/p1", "one");
    a.wait_view("our keys", |v| v.len() == 2).await;
    let t = Instant::now();
    a.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let left = other
        .get(full(""), Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .kvs()
        .len();
    assert_eq!(left, 0, "every key went with the lease, no TTL wait");
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    let etcd = Etcd::start_tls(true).await;
    let tls = etcd.tls();
    let mut cfg = config(etcd.endpoint());
    cfg.tls = Some(EtcdTls {
        ca: Some(tls.ca.clone()),
        cert: Some(tls.client_cert.clone()),
        key: Some(tls.client_key.clone()),
        domain: Some("localhost".into()),
    });
    let mut a = Node::start(cfg.clone(), registration("a", "rec"))
        .await
        .expect("starts over TLS");
    a.put("rooms/r", "1");
    a.wait_view("our keys", |v| v.len() == 2).await;
    a.shutdown().await;

    // Without a client certificate the server refuses the connection.
    cfg.tls = Some(EtcdTls {
        ca: Some(tls.ca.clone()),
        domain: Some("localhost".into()),
        ..EtcdTls::default()
    });
    cfg.connect_timeout = Duration::from_millis(500);
    match Node::start(cfg.clone(), registration("a", "rec")).await {
        Err(RegistryError::Unreachable { endpoints, .. }) => {
            assert_eq!(endpoints, etcd.endpoint())
        }
        Err(e) => panic!("expected Unreachable, got {e}"),
        Ok(_) => panic!("started without a client certificate"),
    }

    // A certificate file that is not there is a configuration error naming it.
    let missing = tls.client_cert.with_file_name("missing.pem");
    cfg.tls = Some(EtcdTls {
        ca: Some(tls.ca.clone()),
        cert: Some(missing.clone()),
        key: Some(tls.client_key.clone()),
        domain: None,
    });
    match Node::start(cfg, registration("a", "rec")).await {
        Err(RegistryError::Config(m)) => {
            assert!(m.contains(&missing.display().to_string()), "{m}")
        }
        Err(e) => panic!("expected Config, got {e}"),
        Ok(_) => panic!("started with a missing certificate"),
    }
}

#[tokio::test]
async fn authentication_refuses_a_wrong_password_and_renews_an_expired_token() {
    let etcd = Etcd::start_with(false, &["--auth-token-ttl=1"]).await;
    let mut admin = etcd.client().await;
    let prefix = format!("/pipemesh/{CLUSTER}/");
    admin.role_add("root").await.expect("root role");
    admin
        .user_add("root", "root-pw", None)
        .await
        .expect("root user");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("root grant");
    admin.role_add("node").await.expect("node role");
    admin
        .role_grant_permission("node", Permission::read_write(prefix).with_prefix())
        .await
        .expect("node permission");
    admin
        .user_add("pm", "pm-pw", None)
        .await
        .expect("node user");
    admin
        .user_grant_role("pm", "node")
        .await
        .expect("node grant");
    admin.auth_enable().await.expect("auth enabled");

    let mut cfg = config(etcd.endpoint());
    cfg.auth = Some(EtcdAuth {
        user: "pm".into(),
        password: "wrong".into(),
    });
    let t = Instant::now();
    match Node::start(cfg.clone(), registration("a", "rec")).await {
        Err(RegistryError::Config(_)) => {}
        Err(e) => panic!("expected Config, got {e}"),
        Ok(_) => panic!("started with a wrong password"),
    }
    assert!(
        t.elapsed() < cfg.connect_timeout,
        "refused without retrying"
    );

    cfg.auth = Some(EtcdAuth {
        user: "pm".into(),
        password: "pm-pw".into(),
    });
    let mut a = Node::start(cfg, registration("a", "rec"))
        .await
        .expect("starts with the right password");
    a.put("rooms/r", "1");
    a.wait_view("our keys", |v| v.len() == 2).await;

    // The token expires after a second without use (keep-alives on an open stream do not
    // use it); the next write must get through all the same.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.put("rooms/s", "1");
    a.wait_view("a write after the token expired", |v| v.len() == 3)
        .await;
    let status = a.wait_status("connected", |s| s.connected).await;
    assert_eq!(
        (status.failed_writes, status.lease_regrants),
        (0, 0),
        "the token was renewed and the write sent again: {status:?}"
    );
    a.shutdown().await;
}
