//! The in-process registry: a revisioned map for a node that runs alone (no etcd configured).
//!
//! It behaves like the etcd backend seen from one node, so the
//! [`crate::discovery::cluster::ClusterDirectory`] above it cannot tell the difference: the
//! first update is a [`RegistryUpdate::Snapshot`] holding the node record, then every write
//! that changes the map is one [`RegistryUpdate::Changes`] at the next revision. As in etcd, a
//! delete of an absent key changes nothing: no revision, no update. There is no lease (a map
//! in the node's own memory dies with the node), so the status is always connected with lease
//! 0.
//!
//! [`Store`] is the map and its revision counter, a plain struct tested without tokio;
//! [`start`] runs it in a task that owns it. The task ends when the ops sender is dropped; the
//! status channel then closes and the updates channel ends, which is how the node sees that
//! the backend stopped.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, watch};

use super::registry::{
    KvChange, Registration, Registry, RegistryError, RegistryHandle, RegistryOp, RegistryStatus,
    RegistryUpdate,
};

/// Updates buffered for a slow receiver before the task waits for it (the ops channel stays
/// unbounded, so writers never wait).
const UPDATES_CAPACITY: usize = 1024;

/// The registry contents and the revision of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    kvs: BTreeMap<Vec<u8>, Vec<u8>>,
    revision: i64,
}

impl Store {
    /// A store holding only the node record, at revision 1.
    pub fn new(registration: &Registration) -> Store {
        let mut kvs = BTreeMap::new();
        kvs.insert(
            registration.node_key.as_bytes().to_vec(),
            registration.node_value.as_bytes().to_vec(),
        );
        Store { kvs, revision: 1 }
    }

    /// The revision of the last change.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Everything, as the first update.
    pub fn snapshot(&self) -> RegistryUpdate {
        RegistryUpdate::Snapshot {
            revision: self.revision,
            kvs: self
                .kvs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Applies one write; the change it made, if any. A put always makes a change (even with
    /// the same value, as in etcd); a delete of an absent key makes none.
    pub fn apply(&mut self, op: RegistryOp) -> Option<RegistryUpdate> {
        let (key, value) = match op {
            RegistryOp::Put { key, value } => {
                let (key, value) = (key.into_bytes(), value.into_bytes());
                self.kvs.insert(key.clone(), value.clone());
                (key, Some(value))
            }
            RegistryOp::Delete { key } => {
                let key = key.into_bytes();
                self.kvs.remove(&key)?;
                (key, None)
            }
        };
        self.revision += 1;
        Some(RegistryUpdate::Changes {
            revision: self.revision,
            changes: vec![KvChange {
                key,
                value,
                mod_revision: self.revision,
            }],
        })
    }
}

/// The in-process backend as a [`Registry`]: one node, no other process involved. Its
/// session never fails, so it ignores `shutdown` (dropping the handle's `ops` stops it).
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcessRegistry;

impl Registry for InProcessRegistry {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn start(
        self,
        registration: Registration,
        _shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<RegistryHandle, RegistryError> {
        Ok(start(registration))
    }
}

/// Starts the in-process registry with the node record in place. Must be called inside a
/// tokio runtime. Dropping the handle's `ops` sender stops the task.
pub fn start(registration: Registration) -> RegistryHandle {
    let store = Store::new(&registration);
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (updates_tx, updates_rx) = mpsc::channel(UPDATES_CAPACITY);
    let (status_tx, status_rx) = watch::channel(RegistryStatus {
        connected: true,
        revision: store.revision(),
        ..RegistryStatus::default()
    });
    tokio::spawn(run(store, ops_rx, updates_tx, status_tx));
    RegistryHandle {
        ops: ops_tx,
        updates: updates_rx,
        status: status_rx,
    }
}

async fn run(
    mut store: Store,
    mut ops: mpsc::UnboundedReceiver<RegistryOp>,
    updates: mpsc::Sender<RegistryUpdate>,
    status: watch::Sender<RegistryStatus>,
) {
    // A receiver that went away does not stop the writes: the map stays the truth for
    // whoever still holds the status.
    let mut receiving = updates.send(store.snapshot()).await.is_ok();
    while let Some(op) = ops.recv().await {
        let Some(update) = store.apply(op) else {
            continue;
        };
        if receiving {
            receiving = updates.send(update).await.is_ok();
        }
        let revision = store.revision();
        status.send_modify(|s| s.revision = revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            node_id: "a".into(),
            node_key: "nodes/a".into(),
            node_value: "{\"id\":\"a\"}".into(),
        }
    }

    fn put(key: &str, value: &str) -> RegistryOp {
        RegistryOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn change(key: &str, value: Option<&str>, revision: i64) -> RegistryUpdate {
        RegistryUpdate::Changes {
            revision,
            changes: vec![KvChange {
                key: key.as_bytes().to_vec(),
                value: value.map(|v| v.as_bytes().to_vec()),
                mod_revision: revision,
            }],
        }
    }

    #[test]
    fn store_starts_with_the_node_record() {
        let store = Store::new(&registration());
        assert_eq!(
            store.snapshot(),
            RegistryUpdate::Snapshot {
                revision: 1,
                kvs: vec![(b"nodes/a".to_vec(), b"{\"id\":\"a\"}".to_vec())],
            }
        );
    }

    #[test]
    fn every_change_takes_the_next_revision_and_absent_deletes_change_nothing() {
        let mut store = Store::new(&registration());
        assert_eq!(
            store.apply(put("rooms/r", "1")),
            Some(change("rooms/r", Some("1"), 2))
        );
        assert_eq!(
            store.apply(put("rooms/r", "1")),
            Some(change("rooms/r", Some("1"), 3)),
            "a put of the same value is still a change, as in etcd"
        );
        assert_eq!(
            store.apply(RegistryOp::Delete {
                key: "rooms/r".into()
            }),
            Some(change("rooms/r", None, 4))
        );
        assert_eq!(
            store.apply(RegistryOp::Delete {
                key: "rooms/r".into()
            }),
            None
        );
        assert_eq!(store.revision(), 4);
        let RegistryUpdate::Snapshot { revision, kvs } = store.snapshot() else {
            unreachable!("snapshot() returns a snapshot");
        };
        assert_eq!(
            (revision, kvs.len()),
            (4, 1),
            "only the node record is left"
        );
    }

    #[tokio::test]
    async fn task_sends_snapshot_then_one_update_per_change_in_order() {
        let mut h = start(registration());
        assert!(h.status.borrow().connected);
        assert!(matches!(
            h.updates.recv().await,
            Some(RegistryUpdate::Snapshot { revision: 1, .. })
        ));
        for i in 0..100 {
            h.ops
                .send(put(&format!("k/{i:03}"), &i.to_string()))
                .expect("task running");
        }
        h.ops
            .send(RegistryOp::Delete {
                key: "k/000".into(),
            })
            .expect("task running");
        for i in 0..100 {
            let want = change(&format!("k/{i:03}"), Some(&i.to_string()), i + 2);
            assert_eq!(h.updates.recv().await, Some(want));
        }
        assert_eq!(h.updates.recv().await, Some(change("k/000", None, 102)));
        h.status
            .wait_for(|s| s.revision == 102)
            .await
            .expect("status follows the revision");
    }

    #[tokio::test]
    async fn writes_never_wait_for_a_slow_receiver_and_dropping_ops_stops_the_task() {
        let RegistryHandle {
            ops,
            mut updates,
            mut status,
        } = start(registration());
        let n = UPDATES_CAPACITY as i64 * 3;
        for i in 0..n {
            ops.send(put("k", &i.to_string()))
                .expect("unbounded intake");
        }
        drop(ops);
        let mut last = 0;
        while let Some(u) = updates.recv().await {
            if let RegistryUpdate::Changes { revision, .. } = u {
                assert_eq!(revision, last + 1, "no gaps");
                last = revision;
            } else {
                last = 1;
            }
        }
        assert_eq!(
            last,
            n + 1,
            "every write delivered before the channel ended"
        );
        while status.changed().await.is_ok() {}
        assert_eq!(status.borrow().revision, n + 1);
    }
}
