//! Connecting to etcd (TLS, authentication, retries until the connect timeout) and
//! registering the node record at start, waiting out a previous holder of the node id.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use super::watch::open_watch_raw;
use super::{
    is_delete, revoke_quietly, Backoff, EtcdConfig, EtcdTls, Failure, Shared,
    GRPC_FAILED_PRECONDITION, GRPC_INVALID_ARGUMENT, GRPC_PERMISSION_DENIED, SYSTEM_CA_BUNDLES,
};
use crate::discovery::registry::{Registration, RegistryError};

pub(super) fn connect_options(cfg: &EtcdConfig) -> Result<Option<ConnectOptions>, RegistryError> {
    if cfg.endpoints.is_empty() {
        return Err(RegistryError::Config("no etcd endpoints".into()));
    }
    let https = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
    let mut options = None;
    if cfg.tls.is_some() || https {
        let tls = tls_options(&cfg.tls.clone().unwrap_or_default())?;
        options = Some(ConnectOptions::new().with_tls(tls));
    }
    if let Some(auth) = &cfg.auth {
        options = Some(
            options
                .unwrap_or_default()
                .with_user(auth.user.clone(), auth.password.clone()),
        );
    }
    Ok(options)
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, RegistryError> {
    let ca = match &tls.ca {
        Some(path) => read_pem(path, "CA certificate")?,
        None => {
            let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
            let found = from_env
                .into_iter()
                .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    RegistryError::Config(
                        "TLS to etcd without a CA file, and no system CA bundle found; give the \
                         etcd CA file"
                            .into(),
                    )
                })?;
            read_pem(&found, "CA bundle")?
        }
    };
    if certificates(&ca) == 0 {
        return Err(RegistryError::Config(
            "the etcd CA file holds no PEM certificate".into(),
        ));
    }
    // Go's gRPC server may not offer ALPN "h2"; it speaks HTTP/2 all the same.
    let mut options = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .assume_http2(true);
    match (&tls.cert, &tls.key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read_pem(cert_path, "client certificate")?;
            if certificates(&cert) == 0 {
                return Err(RegistryError::Config(format!(
                    "{} holds no PEM certificate",
                    cert_path.display()
                )));
            }
            let key = read_pem(key_path, "client key")?;
            if !matches!(
                rustls_pemfile::private_key(&mut key.as_slice()),
                Ok(Some(_))
            ) {
                return Err(RegistryError::Config(format!(
                    "{} holds no PEM private key",
                    key_path.display()
                )));
            }
            options = options.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(RegistryError::Config(
                "an etcd client certificate needs its key, and a key its certificate".into(),
            ))
        }
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain.clone());
    }
    Ok(options)
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| {
        RegistryError::Config(format!(
            "cannot read the etcd {what} {}: {e}",
            path.display()
        ))
    })
}

fn certificates(pem: &[u8]) -> usize {
    rustls_pemfile::certs(&mut &pem[..])
        .filter(Result::is_ok)
        .count()
}

/// A client that has answered a read of the node key, retried until `deadline`.
pub(super) async fn connect(
    cfg: &EtcdConfig,
    options: Option<ConnectOptions>,
    node_key: &[u8],
    deadline: Instant,
) -> Result<Client, RegistryError> {
    let endpoints = cfg.endpoints.join(",");
    let mut backoff = Backoff::default();
    let mut reason = "no answer".to_owned();
    loop {
        let attempt = async {
            let mut client = Client::connect(&cfg.endpoints, options.clone()).await?;
            let probe = GetOptions::new().with_keys_only().with_count_only();
            client.get(node_key, Some(probe)).await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match timeout(deadline.saturating_duration_since(Instant::now()), attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => {
                if let Some(config) = configuration_error(&e) {
                    return Err(RegistryError::Config(config));
                }
                reason = e.to_string();
            }
            // The last attempt ran out of time: the error before it says more.
            Err(_) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RegistryError::Unreachable { endpoints, reason });
        }
        tracing::debug!(%endpoints, %reason, "etcd: not reachable yet");
        sleep(backoff.next().min(left)).await;
    }
}

/// A client for tools that read and write the registry without a session of their own
/// (`pipemesh nodes`, `drain`, ...): TLS and authentication as for a node, retried until
/// `cfg.connect_timeout`, proven by a read under the cluster prefix.
pub async fn client(cfg: &EtcdConfig) -> Result<Client, RegistryError> {
    let options = connect_options(cfg)?;
    let probe = format!("/pipemesh/{}/nodes/", cfg.cluster);
    let deadline = Instant::now() + cfg.connect_timeout;
    connect(cfg, options, probe.as_bytes(), deadline).await
}

/// The errors that retrying cannot fix: bad URLs, TLS settings, credentials or permissions.
/// (etcd also answers FailedPrecondition "not capable" while it starts, so only the
/// authentication ones of that code count.)
fn configuration_error(e: &etcd_client::Error) -> Option<String> {
    match e {
        etcd_client::Error::InvalidArgs(_)
        | etcd_client::Error::InvalidUri(_)
        | etcd_client::Error::TransportError(_) => Some(format!("etcd client: {e}")),
        etcd_client::Error::GRpcStatus(s) => {
            let refused = match s.code() as i32 {
                GRPC_INVALID_ARGUMENT | GRPC_PERMISSION_DENIED => true,
                GRPC_FAILED_PRECONDITION => s.message().contains("auth"),
                _ => false,
            };
            refused.then(|| format!("etcd refused the client: {}", s.message()))
        }
        _ => None,
    }
}

/// Grants the first lease and writes the node record with it (see the module docs).
pub(super) async fn register(
    client: &mut Client,
    shared: &Shared,
    registration: &Registration,
) -> Result<i64, RegistryError> {
    let unreachable = |e: Failure| RegistryError::Unreachable {
        endpoints: shared.endpoints.clone(),
        reason: e.to_string(),
    };
    let lease = shared
        .call(
            "granting a lease",
            client.lease_grant(shared.ttl_secs(), None),
        )
        .await
        .map_err(unreachable)?
        .id();
    let result = async {
        let Some(existing) = claim(client, shared, registration, lease)
            .await
            .map_err(unreachable)?
        else {
            return Ok(());
        };
        let started = Instant::now();
        let wait = if existing.lease() == 0 {
            Duration::ZERO
        } else {
            let ttl = shared
                .call(
                    "reading the other node's lease",
                    client.lease_time_to_live(existing.lease(), None),
                )
                .await
                .map_err(unreachable)?
                .ttl();
            Duration::from_secs(u64::try_from(ttl).unwrap_or(0)) + Duration::from_secs(1)
        };
        tracing::warn!(
            node_id = %shared.node_id,
            existing = %String::from_utf8_lossy(existing.value()),
            ?wait,
            "etcd: node id already registered; waiting for the other record's lease to expire"
        );
        wait_for_delete(client, shared, existing.mod_revision() + 1, wait).await;
        match claim(client, shared, registration, lease)
            .await
            .map_err(unreachable)?
        {
            None => Ok(()),
            Some(existing) => Err(RegistryError::DuplicateNode {
                node_id: shared.node_id.clone(),
                cluster: shared.cluster.clone(),
                existing: String::from_utf8_lossy(existing.value()).into_owned(),
                waited: started.elapsed(),
            }),
        }
    }
    .await;
    match result {
        Ok(()) => Ok(lease),
        Err(e) => {
            revoke_quietly(client, shared, lease).await;
            Err(e)
        }
    }
}

/// Writes the node record if absent; the record in the way otherwise.
async fn claim(
    client: &mut Client,
    shared: &Shared,
    registration: &Registration,
    lease: i64,
) -> Result<Option<KeyValue>, Failure> {
    let key = shared.node_key.clone();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            registration.node_value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let resp = shared.call("registering the node", client.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(None);
    }
    let existing = resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
        _ => None,
    });
    match existing {
        Some(kv) => Ok(Some(kv)),
        // Deleted between the compare and the read of the same transaction cannot happen;
        // an answer without the read is etcd misbehaving.
        None => Err(Failure::Protocol(
            "etcd answered a failed registration without the record in the way".into(),
        )),
    }
}

/// Waits at most `wait` for the node record to be deleted (at or after `from`).
async fn wait_for_delete(client: &Client, shared: &Shared, from: i64, wait: Duration) {
    let deadline = Instant::now() + wait;
    let key = shared.node_key.clone();
    let deleted = async {
        let options = WatchOptions::new().with_start_revision(from);
        let (_watcher, mut stream) = open_watch_raw(client.watch_client(), key, options, wait)
            .await
            .ok()?;
        while let Ok(Some(resp)) = stream.message().await {
            if resp.events().iter().any(|e| is_delete(e.kv())) {
                return Some(());
            }
            if resp.canceled() {
                return None;
            }
        }
        None
    };
    if let Ok(Some(())) = timeout(wait, deleted).await {
        return;
    }
    // Without a working watch, the wait is the whole time.
    sleep_until(deadline).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_that_cannot_work_are_configuration_errors() {
        let missing = PathBuf::from("/nonexistent/pipemesh/etcd-client.pem");
        let mut cfg = EtcdConfig::new(vec!["https://127.0.0.1:2379".into()], "c");
        cfg.tls = Some(EtcdTls {
            ca: Some(missing.clone()),
            ..EtcdTls::default()
        });
        match connect_options(&cfg) {
            Err(RegistryError::Config(m)) => {
                assert!(m.contains(&missing.display().to_string()), "{m}")
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
        cfg.endpoints.clear();
        assert!(matches!(
            connect_options(&cfg),
            Err(RegistryError::Config(_))
        ));
    }
}
