//! The operator commands' HTTP glue to the nodes' admin endpoints (`adminUrl` in each node
//! record): plain `http://host:port` GETs of JSON, every one bounded in time (`--timeout`,
//! connecting included) and size ([`MAX_BODY`]), with the operator's token as
//! `Authorization: Bearer` when there is one. Nodes are asked concurrently
//! ([`AdminClient::get_all`]); what goes wrong is an [`AdminError`] for that node, never a
//! failure of the command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::time::{timeout, Instant};

use super::snapshot::Snapshot;
use super::{waiting_line, CliError, CommonArgs, Progress};
use crate::ids::NodeId;

/// Largest answer read from a node (a room with thousands of peers stays well under it).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long the nodes may take before the progress line appears.
const PROGRESS_AFTER: Duration = Duration::from_millis(500);
/// Longest part of an error body quoted in a message.
const QUOTE: usize = 200;

/// Why a node's admin endpoint gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    /// The registry has no record of the node (it named itself in a room, then went away).
    #[error("unreachable: no node record (is it running?)")]
    NoRecord,
    /// Its record has no admin URL.
    #[error("unreachable: its record has no admin URL")]
    NoUrl,
    /// The admin URL is not `http://host:port`.
    #[error("unreachable: admin URL {0:?} is not http://host:port")]
    BadUrl(String),
    /// No connection.
    #[error("unreachable: {0}")]
    Connect(String),
    /// No complete answer in time.
    #[error("unreachable: no answer within {0}")]
    Timeout(String),
    /// 401 or 403.
    #[error("unauthorized (check --admin-token-file)")]
    Unauthorized,
    /// 404: the node does not serve the path (an older version), or has nothing of what was
    /// asked for (a room it does not host); the node's message, if any.
    #[error("{path}: not found{}", quoted(.message))]
    NotFound {
        /// The path asked for.
        path: String,
        /// The node's `error`, or the start of its body.
        message: String,
    },
    /// Another status.
    #[error("{path}: HTTP {status}{}", quoted(.message))]
    Status {
        /// The path asked for.
        path: String,
        /// The status code.
        status: u16,
        /// The node's `error`, or the start of its body.
        message: String,
    },
    /// An answer over [`MAX_BODY`].
    #[error("{0}: answer larger than {MAX_BODY} bytes")]
    TooLarge(String),
    /// Not the JSON expected.
    #[error("{path}: unreadable answer: {reason}")]
    BadJson {
        /// The path asked for.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// The answer is another node's (a stale record whose port is now someone else's).
    #[error("answered as node {0:?} (a stale record?)")]
    WrongNode(String),
}

fn quoted(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

impl AdminError {
    /// The node did not answer at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            AdminError::NoRecord
                | AdminError::NoUrl
                | AdminError::BadUrl(_)
                | AdminError::Connect(_)
                | AdminError::Timeout(_)
        )
    }

    /// A word for a table's state column: `unreachable`, `unauthorized`, or `None` when the
    /// node answered and the row keeps its registry state.
    pub fn state_word(&self) -> Option<&'static str> {
        if self.is_unreachable() {
            Some("unreachable")
        } else if *self == AdminError::Unauthorized {
            Some("unauthorized")
        } else {
            None
        }
    }
}

/// An answer that names the node that gave it.
pub trait Answer {
    /// The `nodeId` in the answer (empty when absent).
    fn answered_by(&self) -> &str;
}

/// `answer`, unless it comes from another node than `node` ([`check_node`]).
pub fn check_answer<T: Answer>(
    node: &NodeId,
    answer: Result<T, AdminError>,
) -> Result<T, AdminError> {
    let answer = answer?;
    check_node(node, answer.answered_by())?;
    Ok(answer)
}

/// Checks that an answer from `node` says it is `node` (an empty id is taken on trust).
pub fn check_node(node: &NodeId, answered: &str) -> Result<(), AdminError> {
    if answered.is_empty() || answered == node.as_str() {
        Ok(())
    } else {
        Err(AdminError::WrongNode(answered.to_owned()))
    }
}

/// `http://host:port` + `path`; anything else in `admin_url` is refused.
pub fn admin_uri(admin_url: &str, path: &str) -> Result<Uri, AdminError> {
    let bad = || AdminError::BadUrl(admin_url.to_owned());
    if admin_url.is_empty() {
        return Err(AdminError::NoUrl);
    }
    let base: Uri = admin_url.parse().map_err(|_| bad())?;
    let authority = base.authority().ok_or_else(bad)?;
    let bare_path = matches!(base.path(), "" | "/") && base.query().is_none();
    if base.scheme_str() != Some("http") || !bare_path || authority.as_str().contains('@') {
        return Err(bad());
    }
    format!("http://{authority}{path}")
        .parse()
        .map_err(|_| bad())
}

/// The admin token: the first line of `file`, else `env` (PIPEMESH_ADMIN_TOKEN); `None` when
/// neither gives one. An unreadable or empty file, or a token that cannot be a header, is a
/// usage error.
pub fn admin_token(file: Option<&Path>, env: Option<String>) -> Result<Option<String>, CliError> {
    let token = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read --admin-token-file {}: {e}",
                    path.display()
                ))
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_owned();
            if token.is_empty() {
                return Err(CliError::Usage(format!(
                    "the admin token file {} is empty",
                    path.display()
                )));
            }
            token
        }
        None => match env.map(|t| t.trim().to_owned()) {
            Some(t) if !t.is_empty() => t,
            _ => return Ok(None),
        },
    };
    if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(CliError::Usage(
            "the admin token has characters a header cannot carry".into(),
        ));
    }
    Ok(Some(token))
}

/// What a node's `{"error": ...}` body says, else its first characters, on one line.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(QUOTE) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line,
    }
}

/// The answer to a GET of `path` with `status` and `body`, decoded as `T`.
pub fn decode<T: DeserializeOwned>(path: &str, status: u16, body: &[u8]) -> Result<T, AdminError> {
    match status {
        200 => serde_json::from_slice(body).map_err(|e| AdminError::BadJson {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        401 | 403 => Err(AdminError::Unauthorized),
        404 => Err(AdminError::NotFound {
            path: path.to_owned(),
            message: error_message(body),
        }),
        status => Err(AdminError::Status {
            path: path.to_owned(),
            status,
            message: error_message(body),
        }),
    }
}

/// Where to reach one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node.
    pub node: NodeId,
    /// Its `adminUrl` (empty when unknown).
    pub admin_url: String,
    /// Why it cannot be asked, known beforehand (no record).
    pub known_error: Option<AdminError>,
}

/// What stderr says about the nodes' answers: one note naming the nodes that answered 404
/// (`note` says what that means for the command: older nodes lack the endpoint), then a
/// warning per other failure.
pub fn problems<T>(
    answers: &BTreeMap<NodeId, Result<T, AdminError>>,
    note: impl Fn(&str) -> String,
) -> Vec<String> {
    let not_found: Vec<&str> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Err(AdminError::NotFound { .. })))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut lines = Vec::new();
    if !not_found.is_empty() {
        lines.push(format!("pipemesh: note: {}", note(&not_found.join(", "))));
    }
    for (node, answer) in answers {
        match answer {
            Err(AdminError::NotFound { .. }) | Ok(_) => {}
            Err(e) => lines.push(format!("pipemesh: warning: {node}: {e}")),
        }
    }
    lines
}

/// Where to ask each of `nodes`: at the admin URL of its record (a node without a record
/// cannot be asked).
pub fn targets<'a>(
    snapshot: &Snapshot,
    nodes: impl IntoIterator<Item = &'a NodeId>,
) -> Vec<Target> {
    nodes
        .into_iter()
        .map(|node| match snapshot.nodes.get(node) {
            Some(record) => Target {
                node: node.clone(),
                admin_url: record.admin_url.clone(),
                known_error: None,
            },
            None => Target {
                node: node.clone(),
                admin_url: String::new(),
                known_error: Some(AdminError::NoRecord),
            },
        })
        .collect()
}

/// An HTTP/1 client for the admin endpoints.
#[derive(Clone)]
pub struct AdminClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    bearer: Option<HeaderValue>,
    timeout: Duration,
}

impl AdminClient {
    /// A client with the flags' token and timeout (reads the token file).
    pub fn new(args: &CommonArgs) -> Result<AdminClient, CliError> {
        let token = admin_token(
            args.admin_token_file.as_deref(),
            std::env::var("PIPEMESH_ADMIN_TOKEN").ok(),
        )?;
        let bearer = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| CliError::Usage("the admin token cannot be a header".into()))?
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(args.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        Ok(AdminClient {
            client,
            bearer,
            timeout: args.timeout,
        })
    }

    /// GET `path` from the node at `admin_url`, decoded as `T`, all within `--timeout`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        admin_url: &str,
        path: &str,
    ) -> Result<T, AdminError> {
        let uri = admin_uri(admin_url, path)?;
        let mut request = Request::get(uri).header(ACCEPT, "application/json").header(
            USER_AGENT,
            concat!("pipemesh-cli/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(bearer) = &self.bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|_| AdminError::BadUrl(admin_url.to_owned()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| AdminError::Connect(connect_reason(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        AdminError::TooLarge(path.to_owned())
                    } else {
                        AdminError::Connect(format!("reading the answer: {e}"))
                    }
                })?
                .to_bytes();
            Ok::<_, AdminError>((status, body))
        };
        let (status, body) = timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout(format!("{:?}", self.timeout)))??;
        decode(path, status_code(status), &body)
    }

    /// GETs `path_of(node)` from every target at once, returning each node's answer (an
    /// answer from another node is an error). While some are slow, a progress line names
    /// them (on a terminal).
    pub async fn get_all<T: DeserializeOwned + Answer>(
        &self,
        targets: Vec<Target>,
        path_of: impl Fn(&NodeId) -> String,
    ) -> BTreeMap<NodeId, Result<T, AdminError>> {
        let mut out = BTreeMap::new();
        let mut pending = BTreeSet::new();
        let mut asks = FuturesUnordered::new();
        for target in targets {
            if let Some(e) = target.known_error {
                out.insert(target.node, Err(e));
                continue;
            }
            pending.insert(target.node.clone());
            let path = path_of(&target.node);
            asks.push(async move {
                let answer = self.get::<T>(&target.admin_url, &path).await;
                let answer = check_answer(&target.node, answer);
                (target.node, answer)
            });
        }
        let started = Instant::now();
        let mut progress = Progress::stderr();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                next = asks.next() => match next {
                    Some((node, answer)) => {
                        pending.remove(&node);
                        out.insert(node, answer);
                    }
                    None => break,
                },
                _ = tick.tick() => if started.elapsed() >= PROGRESS_AFTER {
                    let names: Vec<&str> = pending.iter().map(NodeId::as_str).collect();
                    progress.show(&waiting_line(&names));
                },
            }
        }
        progress.clear();
        out
    }
}

fn status_code(status: StatusCode) -> u16 {
    status.as_u16()
}

/// The innermost cause of a failed request ("Connection refused (os error 111)"), which is
/// what an operator needs, rather than the client's outer "client error (Connect)".
fn connect_reason(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_host_port_urls_are_asked() {
        assert_eq!(
            admin_uri("http://127.0.0.1:9090", "/api/v1/links")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9090/api/v1/links"
        );
        assert_eq!(
            admin_uri("http://[::1]:9090/", "/api/v1/node")
                .unwrap()
                .to_string(),
            "http://[::1]:9090/api/v1/node"
        );
        assert_eq!(admin_uri("", "/x"), Err(AdminError::NoUrl));
        for bad in [
            "https://a:9090",
            "ftp://a",
            "a:9090",
            "http://a:9090/admin",
            "http://a:9090?x=1",
            "http://user@a:9090",
            "http://",
            "not a url",
        ] {
            assert_eq!(
                admin_uri(bad, "/x"),
                Err(AdminError::BadUrl(bad.into())),
                "{bad}"
            );
        }
        let e = admin_uri("https://a:1", "/x").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unreachable: admin URL "https://a:1" is not http://host:port"#
        );
        assert!(e.is_unreachable());
    }

    #[test]
    fn statuses_become_per_node_errors() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Answer {
            n: u32,
        }
        assert_eq!(
            decode::<Answer>("/p", 200, br#"{"n":1}"#),
            Ok(Answer { n: 1 })
        );
        let e = decode::<Answer>("/p", 401, b"").unwrap_err();
        assert_eq!(e.to_string(), "unauthorized (check --admin-token-file)");
        assert_eq!(e.state_word(), Some("unauthorized"));
        assert_eq!(
            decode::<Answer>("/p", 403, b""),
            Err(AdminError::Unauthorized)
        );
        let e = decode::<Answer>("/api/v1/rooms/r", 404, br#"{"error":"no room r"}"#).unwrap_err();
        assert_eq!(e.to_string(), "/api/v1/rooms/r: not found (no room r)");
        assert!(!e.is_unreachable() && e.state_word().is_none());
        assert_eq!(
            decode::<Answer>("/p", 404, b"").unwrap_err().to_string(),
            "/p: not found"
        );
        let e = decode::<Answer>("/p", 503, &[b'x'; 1000]).unwrap_err();
        assert!(e.to_string().starts_with("/p: HTTP 503 (xxx"), "{e}");
        assert!(e.to_string().len() < 250, "{e}");
        let e = decode::<Answer>("/p", 200, b"<html>").unwrap_err();
        assert!(e.to_string().starts_with("/p: unreadable answer: "), "{e}");
        assert_eq!(error_message(b"line one\n  line two"), "line one line two");
    }

    #[test]
    fn the_token_comes_from_the_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("pipemesh-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  s3cret \nignored\n").unwrap();
        assert_eq!(
            admin_token(Some(&file), Some("env".into())).unwrap(),
            Some("s3cret".into())
        );
        assert_eq!(
            admin_token(None, Some(" env ".into())).unwrap(),
            Some("env".into())
        );
        assert_eq!(admin_token(None, Some("".into())).unwrap(), None);
        assert_eq!(admin_token(None, None).unwrap(), None);
        std::fs::write(&file, "\n").unwrap();
        let e = admin_token(Some(&file), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = admin_token(Some(&dir.join("missing")), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().starts_with("cannot read --admin-token-file"),
            "{e}"
        );
        assert_eq!(
            admin_token(None, Some("a\u{7f}b".into()))
                .unwrap_err()
                .exit_code(),
            2
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn problems_are_a_note_for_404s_and_a_warning_each_else() {
        let answers: BTreeMap<NodeId, Result<(), AdminError>> = BTreeMap::from([
            (NodeId::from("n1"), Ok(())),
            (
                NodeId::from("n2"),
                Err(AdminError::NotFound {
                    path: "/x".into(),
                    message: String::new(),
                }),
            ),
            (NodeId::from("n3"), Err(AdminError::Unauthorized)),
            (
                NodeId::from("n4"),
                Err(AdminError::NotFound {
                    path: "/x".into(),
                    message: String::new(),
                }),
            ),
        ]);
        assert_eq!(
            problems(&answers, |nodes| format!("{nodes}: no /x (older?)")),
            [
                "pipemesh: note: n2, n4: no /x (older?)",
                "pipemesh: warning: n3: unauthorized (check --admin-token-file)",
            ]
        );
        let fine: BTreeMap<NodeId, Result<(), AdminError>> = BTreeMap::new();
        assert!(problems(&fine, |_| unreachable!()).is_empty());
    }

    #[test]
    fn nodes_are_asked_at_their_records_admin_url() {
        let s = Snapshot::from_kvs(&[
            ("nodes/n1", r#"{"nodeId":"n1","adminUrl":"http://a:1"}"#),
            ("nodes/n2", r#"{"nodeId":"n2"}"#),
        ]);
        let n3 = NodeId::from("n3");
        let t = targets(&s, s.nodes.keys().chain([&n3]));
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].admin_url.as_str(), &t[0].known_error),
            ("http://a:1", &None)
        );
        assert_eq!((t[1].admin_url.as_str(), &t[1].known_error), ("", &None));
        assert_eq!(t[2].known_error, Some(AdminError::NoRecord));
    }

    #[test]
    fn an_answer_must_come_from_the_node_asked() {
        let n1 = NodeId::from("n1");
        assert_eq!(check_node(&n1, "n1"), Ok(()));
        assert_eq!(check_node(&n1, ""), Ok(()));
        let e = check_node(&n1, "n9").unwrap_err();
        assert_eq!(e.to_string(), r#"answered as node "n9" (a stale record?)"#);
        struct A(&'static str);
        impl Answer for A {
            fn answered_by(&self) -> &str {
                self.0
            }
        }
        assert!(check_answer(&n1, Ok(A("n1"))).is_ok());
        assert_eq!(
            check_answer(&n1, Ok(A("n2"))).err(),
            Some(AdminError::WrongNode("n2".into()))
        );
        assert_eq!(
            check_answer::<A>(&n1, Err(AdminError::Unauthorized)).err(),
            Some(AdminError::Unauthorized)
        );
    }

    /// A one-request-per-connection HTTP server on loopback: `/ok` answers JSON naming the
    /// `Authorization` header it got, `/big` more than [`MAX_BODY`], `/slow` nothing.
    async fn server() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let auth = head
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization: "))
                        .unwrap_or("")
                        .trim()
                        .to_owned();
                    match path.as_str() {
                        "/ok" => {
                            let body = format!(r#"{{"nodeId":"n1","auth":"{auth}"}}"#);
                            let _ = s
                                .write_all(
                                    format!(
                                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                        body.len()
                                    )
                                    .as_bytes(),
                                )
                                .await;
                        }
                        "/big" => {
                            let len = MAX_BODY + 1;
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                            let _ = s.write_all(head.as_bytes()).await;
                            let _ = s.write_all(&vec![b' '; len]).await;
                        }
                        _ => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        addr
    }

    fn common(timeout: Duration, token_file: Option<std::path::PathBuf>) -> CommonArgs {
        CommonArgs {
            etcd_endpoints: vec![],
            cluster: "c".into(),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
            admin_token_file: token_file,
            output: super::super::Output::Table,
            timeout,
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Echo {
        node_id: String,
        auth: String,
    }

    impl Answer for Echo {
        fn answered_by(&self) -> &str {
            &self.node_id
        }
    }

    #[tokio::test]
    async fn requests_carry_the_token_and_are_bounded_in_size_and_time() {
        let addr = server().await;
        let url = format!("http://{addr}");
        let file = std::env::temp_dir().join(format!("pipemesh-bearer-{}", std::process::id()));
        std::fs::write(&file, "abc\n").unwrap();
        let client =
            AdminClient::new(&common(Duration::from_millis(500), Some(file.clone()))).unwrap();
        std::fs::remove_file(&file).unwrap();
        let echo: Echo = client.get(&url, "/ok").await.unwrap();
        assert_eq!(echo.auth, "bearer abc");
        assert_eq!(
            client.get::<Echo>(&url, "/big").await.unwrap_err(),
            AdminError::TooLarge("/big".into())
        );
        let t = Instant::now();
        assert_eq!(
            client.get::<Echo>(&url, "/slow").await.unwrap_err(),
            AdminError::Timeout("500ms".into())
        );
        assert!(t.elapsed() < Duration::from_secs(2));

        // All at once: answers by node, another node's answer refused, a record without a
        // URL known beforehand.
        let target = |node: &str, known_error| Target {
            node: NodeId::from(node),
            admin_url: url.clone(),
            known_error,
        };
        let answers = client
            .get_all::<Echo>(
                vec![
                    target("n1", None),
                    target("n2", None),
                    target("n3", Some(AdminError::NoRecord)),
                ],
                |node| {
                    if node.as_str() == "n3" {
                        "/slow".into()
                    } else {
                        "/ok".into()
                    }
                },
            )
            .await;
        assert_eq!(answers.len(), 3);
        assert_eq!(
            answers[&NodeId::from("n1")].as_ref().unwrap().auth,
            "bearer abc"
        );
        assert_eq!(
            answers[&NodeId::from("n2")].as_ref().unwrap_err(),
            &AdminError::WrongNode("n1".into())
        );
        assert_eq!(
            answers[&NodeId::from("n3")].as_ref().unwrap_err(),
            &AdminError::NoRecord
        );

        // Without a token: no header.
        let client = AdminClient::new(&common(Duration::from_secs(2), None)).unwrap();
        if std::env::var_os("PIPEMESH_ADMIN_TOKEN").is_none() {
            let echo: Echo = client.get(&url, "/ok").await.unwrap();
            assert_eq!(echo.auth, "");
        }
    }
}
