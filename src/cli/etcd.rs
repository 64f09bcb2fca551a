//! The operator commands' etcd glue: connect as a node would (TLS, authentication), then
//! plain reads and writes under the cluster prefix, each bounded by `--timeout`.

use crate::discovery::etcd::prefix_end;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio::time::timeout;

use super::{CliError, CommonArgs};
use crate::discovery::etcd::{self as backend, EtcdAuth, EtcdConfig, EtcdTls};
use crate::discovery::registry::RegistryError;

/// Keys per page when listing.
const LIST_PAGE: i64 = 500;
/// Most entries one listing reads (a bound against a runaway prefix).
const MAX_LIST: usize = 1_000_000;
// gRPC codes that mean "not reached" rather than "refused".
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// A connected client and the cluster prefix.
pub struct Registry {
    client: Client,
    prefix: String,
    endpoints: String,
    timeout: Duration,
}

/// The backend settings the flags describe.
pub fn etcd_config(args: &CommonArgs) -> Result<EtcdConfig, CliError> {
    if args.etcd_cert.is_some() != args.etcd_key.is_some() {
        return Err(CliError::Usage(
            "give both --etcd-cert and --etcd-key, or neither".into(),
        ));
    }
    if args.etcd_password_file.is_some() && args.etcd_user.is_none() {
        return Err(CliError::Usage(
            "--etcd-password-file needs --etcd-user".into(),
        ));
    }
    let tls = (args.etcd_ca.is_some() || args.etcd_cert.is_some()).then(|| EtcdTls {
        ca: args.etcd_ca.clone(),
        cert: args.etcd_cert.clone(),
        key: args.etcd_key.clone(),
        domain: None,
    });
    let auth = match &args.etcd_user {
        None => None,
        Some(user) => {
            let password = match &args.etcd_password_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                None => std::env::var("PIPEMESH_ETCD_PASSWORD").unwrap_or_default(),
            };
            Some(EtcdAuth {
                user: user.clone(),
                password,
            })
        }
    };
    Ok(EtcdConfig {
        connect_timeout: args.timeout,
        tls,
        auth,
        ..EtcdConfig::new(args.etcd_endpoints.clone(), args.cluster.clone())
    })
}

impl Registry {
    /// Connects (retrying until `--timeout`).
    pub async fn connect(args: &CommonArgs) -> Result<Registry, CliError> {
        let cfg = etcd_config(args)?;
        let endpoints = cfg.endpoints.join(",");
        let client = backend::client(&cfg).await.map_err(|e| match e {
            RegistryError::Unreachable { endpoints, reason } => CliError::Unreachable {
                endpoints,
                reason: tidy(&reason),
            },
            RegistryError::Config(m) => CliError::Usage(m),
            other => CliError::Refused {
                what: "the connection".into(),
                reason: other.to_string(),
            },
        })?;
        Ok(Registry {
            client,
            prefix: format!("/pipemesh/{}/", args.cluster),
            endpoints,
            timeout: args.timeout,
        })
    }

    /// Every entry under `sub` (relative to the cluster prefix), keys relative to the prefix.
    pub async fn list(&mut self, sub: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CliError> {
        let start = format!("{}{sub}", self.prefix).into_bytes();
        let end = prefix_end(&start);
        let mut from = start;
        let mut out = Vec::new();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            let resp = self
                .call(
                    "a listing",
                    self.client.clone().get(from.clone(), Some(options)),
                )
                .await?;
            for kv in resp.kvs() {
                let key = kv
                    .key()
                    .strip_prefix(self.prefix.as_bytes())
                    .unwrap_or(kv.key());
                out.push((key.to_vec(), kv.value().to_vec()));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() && out.len() < MAX_LIST => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// The value of `key` (relative to the cluster prefix).
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, CliError> {
        let full = format!("{}{key}", self.prefix);
        let resp = self
            .call("a read", self.client.clone().get(full, None))
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes `key` (relative to the cluster prefix), with no lease.
    pub async fn put(&mut self, key: &str, value: String) -> Result<(), CliError> {
        let full = format!("{}{key}", self.prefix);
        self.call("the write", self.client.clone().put(full, value, None))
            .await?;
        Ok(())
    }

    /// Deletes `key` (relative to the cluster prefix); whether it existed.
    pub async fn delete(&mut self, key: &str) -> Result<bool, CliError> {
        let full = format!("{}{key}", self.prefix);
        let resp = self
            .call("the delete", self.client.clone().delete(full, None))
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn call<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CliError> {
        let unreachable = |reason: String| CliError::Unreachable {
            endpoints: self.endpoints.clone(),
            reason,
        };
        match timeout(self.timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Err(_) => Err(unreachable(format!(
                "no answer to {what} within {:?}",
                self.timeout
            ))),
            Ok(Err(e)) => match &e {
                etcd_client::Error::GRpcStatus(s)
                    if !matches!(s.code() as i32, GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE) =>
                {
                    Err(CliError::Refused {
                        what: what.to_owned(),
                        reason: s.message().to_owned(),
                    })
                }
                _ => Err(unreachable(tidy(&e.to_string()))),
            },
        }
    }
}

/// A gRPC status as etcd-client prints it (`grpc request error: status: Unavailable, message:
/// "tcp connect error", details: [], metadata: ...`) shortened to `Unavailable: tcp connect
/// error`; other text as it is.
fn tidy(reason: &str) -> String {
    let field = |name: &str| {
        let at = reason.find(name)? + name.len();
        let rest = &reason[at..];
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next()?,
            None => rest.split(',').next()?,
        })
    };
    match (field("status: "), field("message: ")) {
        (Some(status), Some(message)) => format!("{status}: {message}"),
        _ => reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_read_as_one_short_line() {
        assert_eq!(
            tidy(
                r#"grpc request error: status: Unavailable, message: "tcp connect error", details: [], metadata: MetadataMap { headers: {} }"#
            ),
            "Unavailable: tcp connect error"
        );
        assert_eq!(tidy("no answer"), "no answer");
    }
}
