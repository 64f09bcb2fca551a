//! The session task: the lease and its keeper, writes in transactions, re-publishing after
//! any failure, and shutdown (see the parent module's docs).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use super::{
    full_key, revoke_quietly, Backoff, Failure, Shared, GRPC_UNAUTHENTICATED,
    SHUTDOWN_REVOKE_TIMEOUT,
};
use crate::discovery::registry::{Registration, RegistryOp};

/// Leases remembered from re-publish attempts whose outcome is unknown.
const MAX_UNCERTAIN_LEASES: usize = 16;

/// When the next re-publish attempt runs.
struct Retry {
    at: Instant,
    backoff: Backoff,
}

pub(super) struct Session {
    client: Client,
    shared: Arc<Shared>,
    /// Every key this node has put and not deleted (relative key → value).
    owned: BTreeMap<String, String>,
    /// Ops accepted while healthy and not yet written.
    pending: VecDeque<RegistryOp>,
    /// The lease puts carry (meaningful while healthy).
    lease: i64,
    /// Leases this process granted and has not revoked; the last one is `lease`.
    our_leases: Vec<i64>,
    /// Keeps `lease` alive; ends with the reason the lease was lost.
    keeper: Option<JoinHandle<String>>,
    /// Set while the session is broken: the next re-publish attempt.
    retry: Option<Retry>,
}

impl Session {
    /// The session of a node registered with `lease`, its record the only key it owns.
    pub(super) fn new(
        client: Client,
        shared: Arc<Shared>,
        registration: Registration,
        lease: i64,
    ) -> Session {
        let mut owned = BTreeMap::new();
        owned.insert(registration.node_key, registration.node_value);
        let mut session = Session {
            client,
            shared,
            owned,
            pending: VecDeque::new(),
            lease,
            our_leases: vec![lease],
            keeper: None,
            retry: None,
        };
        session.spawn_keeper();
        session
    }

    pub(super) async fn run(
        mut self,
        mut ops: mpsc::UnboundedReceiver<RegistryOp>,
        mut shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
        watch_task: JoinHandle<()>,
    ) {
        'run: loop {
            // Take everything queued, so that transactions are as large as allowed.
            loop {
                match ops.try_recv() {
                    Ok(op) => self.accept(op),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'run,
                }
            }
            if self.retry.is_none() && !self.pending.is_empty() {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'run,
                    written = self.write_batch() => {
                        if let Err(e) = written {
                            self.shared.health.update(|_, s| s.failed_writes += 1);
                            self.renew_auth(&e).await;
                            self.lost(format!("write failed: {e}"));
                        }
                    }
                }
                continue;
            }
            let retry_at = self.retry.as_ref().map(|r| r.at);
            tokio::select! {
                biased;
                () = &mut shutdown => break 'run,
                reason = join_keeper(&mut self.keeper) => {
                    self.keeper = None;
                    self.lost(reason);
                }
                op = ops.recv() => match op {
                    Some(op) => self.accept(op),
                    None => break 'run,
                },
                () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break 'run,
                        () = self.republish() => {}
                    }
                }
            }
        }
        self.stop(watch_task).await;
    }

    fn accept(&mut self, op: RegistryOp) {
        match &op {
            RegistryOp::Put { key, value } => {
                self.owned.insert(key.clone(), value.clone());
            }
            RegistryOp::Delete { key } => {
                self.owned.remove(key);
            }
        }
        // While broken, the next re-publish writes `owned` as a whole.
        if self.retry.is_none() {
            self.pending.push_back(op);
        }
    }

    /// Writes the next transaction's worth of pending ops.
    async fn write_batch(&mut self) -> Result<(), Failure> {
        let batch = take_batch(&mut self.pending, self.shared.max_txn_ops);
        let ops: Vec<TxnOp> = batch
            .into_iter()
            .map(|op| match op {
                RegistryOp::Put { key, value } => TxnOp::put(
                    full_key(&self.shared.prefix, &key),
                    value,
                    Some(PutOptions::new().with_lease(self.lease)),
                ),
                RegistryOp::Delete { key } => {
                    TxnOp::delete(full_key(&self.shared.prefix, &key), None)
                }
            })
            .collect();
        let txn = Txn::new().and_then(ops);
        let shared = self.shared.clone();
        match shared.call("writing", self.client.txn(txn.clone())).await {
            Err(e) if shared.auth.is_some() && e.grpc_code() == Some(GRPC_UNAUTHENTICATED) => {
                // The token expired (etcd's simple tokens do after `--auth-token-ttl` without
                // use): renew it and write again, rather than re-publish everything.
                shared.renew_auth(&mut self.client, &e).await;
                shared.call("writing", self.client.txn(txn)).await?;
            }
            written => {
                written?;
            }
        }
        Ok(())
    }

    /// The session broke: stop keeping the lease alive, forget queued writes, re-publish.
    fn lost(&mut self, reason: String) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
        self.pending.clear();
        if self.retry.is_none() {
            tracing::warn!(
                node_id = %self.shared.node_id,
                %reason,
                "etcd: session lost; re-publishing"
            );
            self.retry = Some(Retry {
                at: Instant::now(),
                backoff: Backoff::default(),
            });
        }
        self.shared.health.session_problem(Some(reason));
    }

    fn retry_later(&mut self, reason: String) {
        let retry = self.retry.get_or_insert_with(|| Retry {
            at: Instant::now(),
            backoff: Backoff::default(),
        });
        retry.at = Instant::now() + retry.backoff.next();
        tracing::debug!(
            node_id = %self.shared.node_id,
            %reason,
            "etcd: re-publishing failed; retrying"
        );
        self.shared.health.session_problem(Some(reason));
    }

    async fn renew_auth(&mut self, failure: &Failure) {
        let shared = self.shared.clone();
        shared.renew_auth(&mut self.client, failure).await;
    }

    /// One attempt of the re-publish path (module docs).
    async fn republish(&mut self) {
        let shared = self.shared.clone();
        let attempt = async {
            let guard = self.guard().await?;
            let new = shared
                .call(
                    "granting a new lease",
                    self.client.lease_grant(shared.ttl_secs(), None),
                )
                .await?
                .id();
            self.our_leases.push(new);
            if self.our_leases.len() > MAX_UNCERTAIN_LEASES {
                // Unrevoked leases of failed attempts expire on their own (nothing keeps them
                // alive); forgetting the oldest only bounds the list. The first one is the
                // lease the keys were last published with.
                self.our_leases.remove(1);
            }
            self.publish_all(new, guard).await?;
            Ok::<_, Republish>(new)
        };
        let new = match attempt.await {
            Ok(new) => new,
            Err(Republish::Taken(existing)) => {
                tracing::error!(
                    node_id = %shared.node_id,
                    %existing,
                    "etcd: another instance registered this node id"
                );
                self.retry_later(format!(
                    "node id {:?} was taken by another instance ({existing}); not overwriting it",
                    shared.node_id
                ));
                return;
            }
            Err(Republish::Failed(e)) => {
                // A lease granted by this attempt stays among ours: the transaction's outcome
                // may be unknown, and the next attempt reads which lease the record is on.
                self.renew_auth(&e).await;
                self.retry_later(format!("session lost; re-publishing failed ({e})"));
                return;
            }
        };
        for old in std::mem::replace(&mut self.our_leases, vec![new]) {
            if old != new {
                revoke_quietly(&mut self.client, &shared, old).await;
            }
        }
        self.lease = new;
        self.retry = None;
        self.spawn_keeper();
        shared.health.update(|p, s| {
            p.session = None;
            s.lease_id = new;
            s.lease_regrants += 1;
        });
        tracing::info!(
            node_id = %shared.node_id,
            lease = new,
            keys = self.owned.len(),
            "etcd: session re-established; keys re-published"
        );
    }

    /// What the node record must still be for the re-publish to go ahead: absent, or on a
    /// lease of ours, as read now.
    async fn guard(&mut self) -> Result<Compare, Republish> {
        let shared = self.shared.clone();
        let node = shared.node_key.clone();
        let current = shared
            .call(
                "reading the node record",
                self.client.get(node.clone(), None),
            )
            .await?
            .take_kvs()
            .into_iter()
            .next();
        match current {
            None => Ok(Compare::create_revision(node, CompareOp::Equal, 0)),
            Some(kv) if self.our_leases.contains(&kv.lease()) => {
                Ok(Compare::lease(node, CompareOp::Equal, kv.lease()))
            }
            Some(kv) => Err(Republish::Taken(
                String::from_utf8_lossy(kv.value()).into_owned(),
            )),
        }
    }

    /// Puts every owned key with lease `new`, the first transaction checking `guard`.
    async fn publish_all(&mut self, new: i64, guard: Compare) -> Result<(), Republish> {
        let shared = self.shared.clone();
        let node = shared.node_key.clone();
        let node_owned = self
            .owned
            .keys()
            .any(|k| full_key(&shared.prefix, k) == node);
        // The node record first: the first transaction carries it and the guard.
        let mut puts: Vec<(Vec<u8>, &String)> = self
            .owned
            .iter()
            .map(|(k, v)| (full_key(&shared.prefix, k), v))
            .collect();
        puts.sort_by_key(|(k, _)| *k != node);
        for (i, chunk) in puts.chunks(shared.max_txn_ops).enumerate() {
            let when = if i == 0 {
                vec![guard.clone()]
            } else if node_owned {
                vec![Compare::lease(node.clone(), CompareOp::Equal, new)]
            } else {
                Vec::new()
            };
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| {
                    TxnOp::put(
                        k.clone(),
                        (*v).clone(),
                        Some(PutOptions::new().with_lease(new)),
                    )
                })
                .collect();
            let txn = Txn::new().when(when).and_then(ops);
            let resp = shared.call("re-publishing", self.client.txn(txn)).await?;
            if !resp.succeeded() {
                return Err(Republish::Failed(Failure::Protocol(
                    "the node record changed while re-publishing".into(),
                )));
            }
        }
        Ok(())
    }

    fn spawn_keeper(&mut self) {
        self.keeper = Some(tokio::spawn(keep_alive(
            self.client.clone(),
            self.lease,
            self.shared.lease_ttl,
            self.shared.request_timeout,
        )));
    }

    async fn stop(mut self, watch_task: JoinHandle<()>) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
            let _ = keeper.await;
        }
        let shared = self.shared.clone();
        let revokes = self.our_leases.iter().map(|&lease| {
            let mut client = self.client.clone();
            async move { client.lease_revoke(lease).await }
        });
        let revoked = timeout(
            SHUTDOWN_REVOKE_TIMEOUT,
            futures_util::future::join_all(revokes),
        )
        .await;
        if revoked.is_err() {
            tracing::warn!(
                node_id = %shared.node_id,
                "etcd: could not revoke the lease at shutdown; this node's keys stay until it expires"
            );
        }
        watch_task.abort();
        let _ = watch_task.await;
        shared.health.update(|p, s| {
            p.session = Some("registry shut down".into());
            s.lease_id = 0;
        });
    }
}

/// Why a re-publish attempt failed.
enum Republish {
    /// The node record is someone else's.
    Taken(String),
    /// etcd failed or the record changed meanwhile; try again.
    Failed(Failure),
}

impl From<Failure> for Republish {
    fn from(f: Failure) -> Self {
        Republish::Failed(f)
    }
}

async fn join_keeper(keeper: &mut Option<JoinHandle<String>>) -> String {
    match keeper {
        Some(handle) => handle
            .await
            .unwrap_or_else(|e| format!("lease keep-alive task failed: {e}")),
        None => std::future::pending().await,
    }
}

/// Keeps `lease` alive until it cannot; returns why.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    request_timeout: Duration,
) -> String {
    let opened = timeout(request_timeout, client.lease_keep_alive(lease)).await;
    let (mut keeper, mut stream) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return format!("lease {lease} keep-alive failed: {e}"),
        Err(_) => return format!("lease {lease} keep-alive: no answer within {request_timeout:?}"),
    };
    // Opening the stream refreshed the lease once already.
    let mut last_ack = Instant::now();
    let mut tick = tokio::time::interval_at(last_ack + ttl / 3, ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match timeout(request_timeout, keeper.keep_alive()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("lease {lease} keep-alive failed: {e}"),
                    Err(_) => {
                        return format!(
                            "lease {lease} keep-alive: request not sent within {request_timeout:?}"
                        )
                    }
                }
            }
            answer = stream.message() => match answer {
                Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                Ok(Some(_)) => return format!("lease {lease} is gone (etcd answered TTL 0)"),
                Ok(None) => return format!("lease {lease} keep-alive stream closed"),
                Err(e) => return format!("lease {lease} keep-alive failed: {e}"),
            },
            () = sleep_until(last_ack + ttl) => {
                return format!("lease {lease}: no keep-alive answer within {ttl:?}");
            }
        }
    }
}

/// Takes from the front of `pending` the ops of one transaction: at most `max` distinct keys,
/// a later op of a key replacing the earlier one (etcd refuses a key twice in a transaction,
/// and nobody can see inside a transaction).
fn take_batch(pending: &mut VecDeque<RegistryOp>, max: usize) -> Vec<RegistryOp> {
    let mut batch: Vec<RegistryOp> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(op) = pending.pop_front() {
        let key = match &op {
            RegistryOp::Put { key, .. } | RegistryOp::Delete { key } => key.clone(),
        };
        match index.get(&key) {
            Some(&i) => batch[i] = op,
            None if batch.len() == max => {
                pending.push_front(op);
                break;
            }
            None => {
                index.insert(key, batch.len());
                batch.push(op);
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> RegistryOp {
        RegistryOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn delete(key: &str) -> RegistryOp {
        RegistryOp::Delete { key: key.into() }
    }

    #[test]
    fn batches_collapse_repeated_keys_and_stop_at_max_distinct_keys() {
        let mut pending: VecDeque<RegistryOp> = [
            put("a", "1"),
            put("b", "1"),
            delete("a"),
            put("b", "2"),
            put("c", "1"),
            put("d", "1"),
        ]
        .into();
        assert_eq!(
            take_batch(&mut pending, 3),
            vec![delete("a"), put("b", "2"), put("c", "1")]
        );
        assert_eq!(take_batch(&mut pending, 3), vec![put("d", "1")]);
        assert!(take_batch(&mut pending, 3).is_empty());
    }
}
