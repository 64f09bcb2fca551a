//! The watch task: updates from a prefix watch, resumed after a break and re-listed after a
//! compaction (see the parent module's docs).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions, WatchOptions, WatchStream, Watcher};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

use super::{is_delete, prefix_end, strip, Backoff, Failure, Shared, LIST_PAGE, MAX_WATCH_MESSAGE};
use crate::discovery::registry::{KvChange, RegistryUpdate};

pub(super) struct WatchLoop {
    client: Client,
    shared: Arc<Shared>,
    updates: mpsc::Sender<RegistryUpdate>,
    /// The revision to resume from: one past the last one delivered.
    next_revision: i64,
}

/// Why following a watch stopped.
enum Ended {
    /// The receiver of updates is gone; nothing left to do.
    ReceiverGone,
    /// etcd compacted the revisions the watch needed.
    Compacted(i64),
    /// The stream failed or went quiet.
    Broken(String),
}

impl WatchLoop {
    pub(super) fn new(
        client: Client,
        shared: Arc<Shared>,
        updates: mpsc::Sender<RegistryUpdate>,
        next_revision: i64,
    ) -> WatchLoop {
        WatchLoop {
            client,
            shared,
            updates,
            next_revision,
        }
    }

    pub(super) async fn run(mut self, watcher: Watcher, stream: WatchStream) {
        let mut current = Some((watcher, stream));
        let mut backoff = Backoff::default();
        let mut relist = false;
        loop {
            if let Some((watcher, stream)) = current.take() {
                let problem = match self.follow(watcher, stream).await {
                    Ended::ReceiverGone => return,
                    Ended::Compacted(at) => {
                        relist = true;
                        format!("watch fell behind a compaction (revision {at}); re-listing")
                    }
                    Ended::Broken(reason) => reason,
                };
                tracing::debug!(
                    node_id = %self.shared.node_id,
                    %problem,
                    "etcd: watch interrupted"
                );
                self.shared.health.watch_problem(Some(problem));
            }
            sleep(backoff.next()).await;
            let relisted = relist;
            if relist {
                match self.relist().await {
                    Ok(true) => relist = false,
                    Ok(false) => return,
                    Err(e) => {
                        self.failed(format!("re-listing failed: {e}"), &e).await;
                        continue;
                    }
                }
            }
            match open_watch(&self.client, &self.shared, self.next_revision).await {
                Ok(opened) => {
                    backoff = Backoff::default();
                    self.shared.health.update(|p, s| {
                        p.watch = None;
                        if !relisted {
                            s.watch_resumes += 1;
                        }
                    });
                    current = Some(opened);
                }
                Err(e) => {
                    self.failed(format!("re-opening the watch failed: {e}"), &e)
                        .await
                }
            }
        }
    }

    async fn failed(&mut self, problem: String, failure: &Failure) {
        self.shared.health.watch_problem(Some(problem));
        let shared = self.shared.clone();
        shared.renew_auth(&mut self.client, failure).await;
    }

    /// Forwards the watch's events until it stops.
    async fn follow(&mut self, mut watcher: Watcher, mut stream: WatchStream) -> Ended {
        let idle = self.shared.lease_ttl;
        let mut progress_asked = false;
        loop {
            let resp = match timeout(idle, stream.message()).await {
                Err(_) if progress_asked => {
                    return Ended::Broken(format!(
                        "watch: no answer to a progress request within {idle:?}"
                    ))
                }
                Err(_) => {
                    if let Err(e) = watcher.request_progress().await {
                        return Ended::Broken(format!("watch: {e}"));
                    }
                    progress_asked = true;
                    continue;
                }
                Ok(Err(e)) => return Ended::Broken(format!("watch failed: {e}")),
                Ok(Ok(None)) => return Ended::Broken("watch stream closed".into()),
                Ok(Ok(Some(resp))) => resp,
            };
            progress_asked = false;
            if resp.compact_revision() > 0 {
                return Ended::Compacted(resp.compact_revision());
            }
            if resp.canceled() {
                return Ended::Broken(format!("watch canceled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                // A progress report: the watch is alive (see the module docs for why its
                // revision is not used).
                continue;
            }
            let mut top = 0;
            let mut changes = Vec::with_capacity(resp.events().len());
            for kv in resp.events().iter().filter_map(|e| e.kv()) {
                top = top.max(kv.mod_revision());
                let Some(key) = strip(&self.shared.prefix, kv.key()) else {
                    tracing::debug!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "etcd: watch event outside the prefix ignored"
                    );
                    continue;
                };
                changes.push(KvChange {
                    key: key.to_vec(),
                    value: (!is_delete(Some(kv))).then(|| kv.value().to_vec()),
                    mod_revision: kv.mod_revision(),
                });
            }
            if !changes.is_empty() {
                let update = RegistryUpdate::Changes {
                    revision: top,
                    changes,
                };
                if self.updates.send(update).await.is_err() {
                    return Ended::ReceiverGone;
                }
            }
            self.delivered(top);
        }
    }

    fn delivered(&mut self, revision: i64) {
        if revision >= self.next_revision {
            self.next_revision = revision + 1;
            self.shared.health.update(|_, s| s.revision = revision);
        }
    }

    /// Lists the prefix and sends it as a new snapshot; false when the receiver is gone.
    async fn relist(&mut self) -> Result<bool, Failure> {
        let shared = self.shared.clone();
        let (revision, kvs) = list(&mut self.client, &shared).await?;
        if self
            .updates
            .send(RegistryUpdate::Snapshot { revision, kvs })
            .await
            .is_err()
        {
            return Ok(false);
        }
        self.next_revision = revision + 1;
        shared.health.update(|_, s| {
            s.revision = revision;
            s.relists += 1;
        });
        Ok(true)
    }
}

/// Everything under the prefix (relative keys) and the revision of the listing, in pages.
pub(super) async fn list(
    client: &mut Client,
    shared: &Shared,
) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), Failure> {
    let end = prefix_end(&shared.prefix);
    let mut from = shared.prefix.clone();
    let mut revision = 0;
    let mut kvs = Vec::new();
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LIST_PAGE);
        if revision > 0 {
            // Later pages read the same revision as the first.
            options = options.with_revision(revision);
        }
        let mut resp = shared
            .call("listing", client.get(from.clone(), Some(options)))
            .await?;
        if revision == 0 {
            revision = resp
                .header()
                .map(|h| h.revision())
                .filter(|r| *r > 0)
                .ok_or_else(|| Failure::Protocol("etcd listing without a revision".into()))?;
        }
        let more = resp.more();
        let page = resp.take_kvs();
        let Some(last) = page.last().map(|kv| kv.key().to_vec()) else {
            break;
        };
        kvs.extend(page.into_iter().filter_map(|kv| {
            let (key, value) = kv.into_key_value();
            Some((strip(&shared.prefix, &key)?.to_vec(), value))
        }));
        if !more {
            break;
        }
        from = last;
        from.push(0);
    }
    Ok((revision, kvs))
}

/// Opens the prefix watch from `revision`.
pub(super) async fn open_watch(
    client: &Client,
    shared: &Shared,
    revision: i64,
) -> Result<(Watcher, WatchStream), Failure> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision)
        .with_progress_notify();
    open_watch_raw(
        client.watch_client(),
        shared.prefix.clone(),
        options,
        shared.request_timeout,
    )
    .await
}

/// Opens a watch in a task of its own: etcd-client asserts (panics) when the first response
/// is not the "created" one, and what etcd sends must never panic the backend.
pub(super) async fn open_watch_raw(
    watch_client: etcd_client::WatchClient,
    key: Vec<u8>,
    options: WatchOptions,
    within: Duration,
) -> Result<(Watcher, WatchStream), Failure> {
    let mut watch_client = watch_client.max_decoding_message_size(MAX_WATCH_MESSAGE);
    let mut task = tokio::spawn(async move { watch_client.watch(key, Some(options)).await });
    match timeout(within, &mut task).await {
        Ok(Ok(Ok(opened))) => Ok(opened),
        Ok(Ok(Err(source))) => Err(Failure::Etcd {
            what: "opening the watch",
            source,
        }),
        Ok(Err(e)) => Err(Failure::Protocol(format!(
            "opening the watch: unexpected answer from etcd ({e})"
        ))),
        Err(_) => {
            task.abort();
            Err(Failure::Timeout {
                what: "opening the watch",
                after: within,
            })
        }
    }
}
