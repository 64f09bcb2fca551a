//! protoo's JSON wire format, as spoken by `protoo-client` and mediasoup-demo v3.
//!
//! Three message shapes:
//! - request: `{"request":true,"id":N,"method":"m","data":{..}}`
//! - response: `{"response":true,"id":N,"ok":true,"data":{..}}` or
//!   `{"response":true,"id":N,"ok":false,"errorCode":N,"errorReason":"…"}`
//! - notification: `{"notification":true,"method":"m","data":{..}}`
//!
//! This module parses and writes those shapes; it knows nothing of rooms or media.
//! [`ClientRequest`] turns a request's method and data into a typed mediasoup-demo call.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use thiserror::Error;

/// Largest signaling message accepted, in bytes. An SDP-free mediasoup message with full
/// RTP capabilities is ~20 KiB; this leaves room without letting a peer pin megabytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Why a text frame is not a protoo message we can act on.
#[derive(Debug, Error, PartialEq)]
pub enum ProtooError {
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// The frame is not JSON.
    #[error("message is not valid JSON: {0}")]
    Json(String),
    /// The JSON is not one of protoo's three message shapes.
    #[error("message is not a protoo request, response or notification")]
    NotProtoo,
    /// A field has the wrong type or is missing.
    #[error("invalid {0} field")]
    BadField(&'static str),
}

/// One protoo message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A request expecting a response with the same id.
    Request {
        /// Request id, unique per sender.
        id: u64,
        /// Method name.
        method: String,
        /// Method arguments (an object, or null).
        data: Value,
    },
    /// A successful response.
    Success {
        /// Id of the request answered.
        id: u64,
        /// Result.
        data: Value,
    },
    /// An error response.
    Error {
        /// Id of the request answered.
        id: u64,
        /// Numeric error code (HTTP-like: 400 bad request, 404 not found, 500 internal...).
        code: u16,
        /// Human-readable reason.
        reason: String,
    },
    /// A one-way notification.
    Notification {
        /// Method name.
        method: String,
        /// Arguments.
        data: Value,
    },
}

impl Message {
    /// Parses one WebSocket text frame.
    pub fn parse(text: &str) -> Result<Self, ProtooError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(ProtooError::TooLarge(text.len()));
        }
        let v: Value = serde_json::from_str(text).map_err(|e| ProtooError::Json(e.to_string()))?;
        let Value::Object(mut o) = v else {
            return Err(ProtooError::NotProtoo);
        };
        let flag =
            |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_bool) == Some(true);
        let id = |o: &Map<String, Value>| {
            o.get("id")
                .and_then(Value::as_u64)
                .ok_or(ProtooError::BadField("id"))
        };
        let method = |o: &mut Map<String, Value>| match o.remove("method") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Ok(s),
            _ => Err(ProtooError::BadField("method")),
        };
        let data = |o: &mut Map<String, Value>| o.remove("data").unwrap_or(Value::Null);
        if flag(&o, "request") {
            let id = id(&o)?;
            Ok(Message::Request {
                id,
                method: method(&mut o)?,
                data: data(&mut o),
            })
        } else if flag(&o, "response") {
            let id = id(&o)?;
            match o.get("ok").and_then(Value::as_bool) {
                Some(true) => Ok(Message::Success {
                    id,
                    data: data(&mut o),
                }),
                Some(false) => Ok(Message::Error {
                    id,
                    code: o
                        .get("errorCode")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(500),
                    reason: o
                        .get("errorReason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                None => Err(ProtooError::BadField("ok")),
            }
        } else if flag(&o, "notification") {
            Ok(Message::Notification {
                method: method(&mut o)?,
                data: data(&mut o),
            })
        } else {
            Err(ProtooError::NotProtoo)
        }
    }

    /// Serialises to protoo JSON text.
    pub fn to_text(&self) -> String {
        let v = match self {
            Message::Request { id, method, data } => {
                json!({"request": true, "id": id, "method": method, "data": data})
            }
            Message::Success { id, data } => {
                json!({"response": true, "id": id, "ok": true, "data": data})
            }
            Message::Error { id, code, reason } => json!({
                "response": true, "id": id, "ok": false, "errorCode": code, "errorReason": reason
            }),
            Message::Notification { method, data } => {
                json!({"notification": true, "method": method, "data": data})
            }
        };
        v.to_string()
    }
}

/// A request that a peer may send, typed. `data` fields mirror mediasoup-demo v3's camelCase.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientRequest {
    /// `getRouterRtpCapabilities` -> RtpCapabilities.
    GetRouterRtpCapabilities,
    /// `join` -> `{peers}`.
    Join(JoinData),
    /// `createWebRtcTransport` -> `{id, iceParameters, iceCandidates, dtlsParameters, sctpParameters}`.
    CreateWebRtcTransport(CreateTransportData),
    /// `connectWebRtcTransport`.
    ConnectWebRtcTransport {
        /// Transport to connect.
        transport_id: String,
        /// The remote DTLS role and fingerprints (raw JSON, validated by the edge).
        dtls_parameters: Value,
    },
    /// `restartIce` -> new `iceParameters`.
    RestartIce {
        /// Transport whose ICE credentials are renewed.
        transport_id: String,
    },
    /// `produce` -> `{id}`.
    Produce {
        /// Sending transport.
        transport_id: String,
        /// `audio` or `video`.
        kind: String,
        /// The producer's RTP parameters (raw JSON, validated by the router).
        rtp_parameters: Value,
        /// Opaque application data.
        app_data: Value,
    },
    /// `closeProducer`.
    CloseProducer {
        /// Producer to close.
        producer_id: String,
    },
    /// `pauseProducer`.
    PauseProducer {
        /// Producer to pause.
        producer_id: String,
    },
    /// `resumeProducer`.
    ResumeProducer {
        /// Producer to resume.
        producer_id: String,
    },
    /// `pauseConsumer`.
    PauseConsumer {
        /// Consumer to pause.
        consumer_id: String,
    },
    /// `resumeConsumer`.
    ResumeConsumer {
        /// Consumer to resume.
        consumer_id: String,
    },
    /// `setConsumerPreferredLayers`.
    SetConsumerPreferredLayers {
        /// Consumer.
        consumer_id: String,
        /// Preferred spatial layer.
        spatial_layer: u8,
        /// Preferred temporal layer; highest when absent.
        temporal_layer: Option<u8>,
    },
    /// `setConsumerPriority`.
    SetConsumerPriority {
        /// Consumer.
        consumer_id: String,
        /// Priority, 1..=255.
        priority: u8,
    },
    /// `requestConsumerKeyFrame`.
    RequestConsumerKeyFrame {
        /// Consumer.
        consumer_id: String,
    },
    /// `changeDisplayName`.
    ChangeDisplayName {
        /// New display name.
        display_name: String,
    },
    /// `getTransportStats`.
    GetTransportStats {
        /// Transport.
        transport_id: String,
    },
    /// `getProducerStats`.
    GetProducerStats {
        /// Producer.
        producer_id: String,
    },
    /// `getConsumerStats`.
    GetConsumerStats {
        /// Consumer.
        consumer_id: String,
    },
    /// A data-channel method (`produceData`, `getDataProducerStats`, ...): not supported yet.
    DataChannel(String),
}

/// `join` arguments.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinData {
    /// Name shown to other peers.
    #[serde(default)]
    pub display_name: String,
    /// Client device description (`{flag, name, version}`), passed on to other peers.
    #[serde(default)]
    pub device: Value,
    /// The peer's RTP capabilities; without them it cannot consume.
    #[serde(default)]
    pub rtp_capabilities: Option<Value>,
    /// SCTP capabilities (ignored: no data channels yet).
    #[serde(default)]
    pub sctp_capabilities: Option<Value>,
}

/// `createWebRtcTransport` arguments.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransportData {
    /// Offer only the TCP candidate.
    #[serde(default)]
    pub force_tcp: bool,
    /// The client will produce on it.
    #[serde(default)]
    pub producing: bool,
    /// The client will consume on it.
    #[serde(default)]
    pub consuming: bool,
    /// SCTP capabilities (ignored: no data channels yet).
    #[serde(default)]
    pub sctp_capabilities: Option<Value>,
}

/// Why a request cannot be turned into a [`ClientRequest`]; answered with a protoo error.
#[derive(Debug, Error, PartialEq)]
pub enum RequestError {
    /// The method is not one this server knows.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The data does not fit the method.
    #[error("invalid data for {method}: {reason}")]
    InvalidData {
        /// The method.
        method: String,
        /// What is wrong.
        reason: String,
    },
}

impl RequestError {
    /// The protoo `errorCode` for this error.
    pub fn code(&self) -> u16 {
        match self {
            RequestError::UnknownMethod(_) => 405,
            RequestError::InvalidData { .. } => 400,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransportRef {
    transport_id: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProducerRef {
    producer_id: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerRef {
    consumer_id: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectData {
    transport_id: String,
    dtls_parameters: Value,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProduceData {
    transport_id: String,
    kind: String,
    rtp_parameters: Value,
    #[serde(default)]
    app_data: Value,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayersData {
    consumer_id: String,
    spatial_layer: u8,
    #[serde(default)]
    temporal_layer: Option<u8>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriorityData {
    consumer_id: String,
    priority: u8,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisplayNameData {
    display_name: String,
}

/// Every request method [`ClientRequest::parse`] knows (the data-channel ones included, which
/// it types as [`ClientRequest::DataChannel`]). `/metrics` labels requests with these names
/// and counts any other method as `other`, so a client cannot add series.
pub const METHODS: [&str; 24] = [
    "getRouterRtpCapabilities",
    "join",
    "createWebRtcTransport",
    "connectWebRtcTransport",
    "restartIce",
    "produce",
    "closeProducer",
    "pauseProducer",
    "resumeProducer",
    "pauseConsumer",
    "resumeConsumer",
    "setConsumerPreferredLayers",
    "setConsumerPriority",
    "requestConsumerKeyFrame",
    "changeDisplayName",
    "getTransportStats",
    "getProducerStats",
    "getConsumerStats",
    "produceData",
    "getDataProducerStats",
    "getDataConsumerStats",
    "closeDataProducer",
    "applyNetworkThrottle",
    "resetNetworkThrottle",
];

impl ClientRequest {
    /// Types a request's method and data.
    pub fn parse(method: &str, data: Value) -> Result<Self, RequestError> {
        fn de<T: serde::de::DeserializeOwned>(
            method: &str,
            data: Value,
        ) -> Result<T, RequestError> {
            let data = if data.is_null() {
                Value::Object(Map::new())
            } else {
                data
            };
            serde_json::from_value(data).map_err(|e| RequestError::InvalidData {
                method: method.to_owned(),
                reason: e.to_string(),
            })
        }
        use ClientRequest as R;
        Ok(match method {
            "getRouterRtpCapabilities" => R::GetRouterRtpCapabilities,
            "join" => R::Join(de(method, data)?),
            "createWebRtcTransport" => R::CreateWebRtcTransport(de(method, data)?),
            "connectWebRtcTransport" => {
                let d: ConnectData = de(method, data)?;
                R::ConnectWebRtcTransport {
                    transport_id: d.transport_id,
                    dtls_parameters: d.dtls_parameters,
                }
            }
            "restartIce" => R::RestartIce {
                transport_id: de::<TransportRef>(method, data)?.transport_id,
            },
            "produce" => {
                let d: ProduceData = de(method, data)?;
                R::Produce {
                    transport_id: d.transport_id,
                    kind: d.kind,
                    rtp_parameters: d.rtp_parameters,
                    app_data: d.app_data,
                }
            }
            "closeProducer" => R::CloseProducer {
                producer_id: de::<ProducerRef>(method, data)?.producer_id,
            },
            "pauseProducer" => R::PauseProducer {
                producer_id: de::<ProducerRef>(method, data)?.producer_id,
            },
            "resumeProducer" => R::ResumeProducer {
                producer_id: de::<ProducerRef>(method, data)?.producer_id,
            },
            "pauseConsumer" => R::PauseConsumer {
                consumer_id: de::<ConsumerRef>(method, data)?.consumer_id,
            },
            "resumeConsumer" => R::ResumeConsumer {
                consumer_id: de::<ConsumerRef>(method, data)?.consumer_id,
            },
            "setConsumerPreferredLayers" => {
                let d: LayersData = de(method, data)?;
                R::SetConsumerPreferredLayers {
                    consumer_id: d.consumer_id,
                    spatial_layer: d.spatial_layer,
                    temporal_layer: d.temporal_layer,
                }
            }
            "setConsumerPriority" => {
                let d: PriorityData = de(method, data)?;
                R::SetConsumerPriority {
                    consumer_id: d.consumer_id,
                    priority: d.priority,
                }
            }
            "requestConsumerKeyFrame" => R::RequestConsumerKeyFrame {
                consumer_id: de::<ConsumerRef>(method, data)?.consumer_id,
            },
            "changeDisplayName" => R::ChangeDisplayName {
                display_name: de::<DisplayNameData>(method, data)?.display_name,
            },
            "getTransportStats" => R::GetTransportStats {
                transport_id: de::<TransportRef>(method, data)?.transport_id,
            },
            "getProducerStats" => R::GetProducerStats {
                producer_id: de::<ProducerRef>(method, data)?.producer_id,
            },
            "getConsumerStats" => R::GetConsumerStats {
                consumer_id: de::<ConsumerRef>(method, data)?.consumer_id,
            },
            "produceData"
            | "getDataProducerStats"
            | "getDataConsumerStats"
            | "closeDataProducer"
            | "applyNetworkThrottle"
            | "resetNetworkThrottle" => R::DataChannel(method.to_owned()),
            other => return Err(RequestError::UnknownMethod(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_method_is_known() {
        for m in METHODS {
            let r = ClientRequest::parse(m, Value::Null);
            assert!(
                !matches!(r, Err(RequestError::UnknownMethod(_))),
                "{m} is listed but unknown"
            );
        }
        let mut sorted = METHODS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), METHODS.len(), "no method listed twice");
    }

    #[test]
    fn parses_the_three_shapes_and_round_trips() {
        let r =
            Message::parse(r#"{"request":true,"id":7,"method":"join","data":{"displayName":"a"}}"#)
                .unwrap();
        assert_eq!(
            r,
            Message::Request {
                id: 7,
                method: "join".into(),
                data: json!({"displayName":"a"})
            }
        );
        assert_eq!(Message::parse(&r.to_text()).unwrap(), r);
        let ok = Message::parse(r#"{"response":true,"id":7,"ok":true,"data":{}}"#).unwrap();
        assert_eq!(
            ok,
            Message::Success {
                id: 7,
                data: json!({})
            }
        );
        let err = Message::Error {
            id: 9,
            code: 404,
            reason: "no such producer".into(),
        };
        assert_eq!(Message::parse(&err.to_text()).unwrap(), err);
        let n =
            Message::parse(r#"{"notification":true,"method":"peerClosed","data":{"peerId":"x"}}"#)
                .unwrap();
        assert!(matches!(n, Message::Notification { ref method, .. } if method == "peerClosed"));
    }

    #[test]
    fn refuses_malformed_frames() {
        assert!(matches!(Message::parse("{"), Err(ProtooError::Json(_))));
        assert_eq!(Message::parse("[1,2]"), Err(ProtooError::NotProtoo));
        assert_eq!(
            Message::parse(r#"{"request":true,"method":"x"}"#),
            Err(ProtooError::BadField("id"))
        );
        assert_eq!(
            Message::parse(r#"{"request":true,"id":-1,"method":"x"}"#),
            Err(ProtooError::BadField("id"))
        );
        assert_eq!(
            Message::parse(r#"{"request":true,"id":1,"method":3}"#),
            Err(ProtooError::BadField("method"))
        );
        assert_eq!(
            Message::parse(r#"{"response":true,"id":1}"#),
            Err(ProtooError::BadField("ok"))
        );
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert_eq!(
            Message::parse(&big),
            Err(ProtooError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
    }

    #[test]
    fn types_requests_and_rejects_bad_data() {
        let r = ClientRequest::parse(
            "createWebRtcTransport",
            json!({"forceTcp": true, "producing": false, "consuming": true}),
        )
        .unwrap();
        assert_eq!(
            r,
            ClientRequest::CreateWebRtcTransport(CreateTransportData {
                force_tcp: true,
                producing: false,
                consuming: true,
                sctp_capabilities: None
            })
        );
        assert_eq!(
            ClientRequest::parse("getRouterRtpCapabilities", Value::Null).unwrap(),
            ClientRequest::GetRouterRtpCapabilities
        );
        let e = ClientRequest::parse("pauseConsumer", json!({"consumerId": 5})).unwrap_err();
        assert_eq!(e.code(), 400);
        let e = ClientRequest::parse("produce", json!({"transportId": "t"})).unwrap_err();
        assert!(e.to_string().contains("produce"));
        let e = ClientRequest::parse("rm -rf", json!({})).unwrap_err();
        assert_eq!(e, RequestError::UnknownMethod("rm -rf".into()));
        assert_eq!(e.code(), 405);
        assert_eq!(
            ClientRequest::parse("produceData", json!({})).unwrap(),
            ClientRequest::DataChannel("produceData".into())
        );
        let l = ClientRequest::parse(
            "setConsumerPreferredLayers",
            json!({"consumerId":"c","spatialLayer":1}),
        )
        .unwrap();
        assert!(matches!(
            l,
            ClientRequest::SetConsumerPreferredLayers {
                spatial_layer: 1,
                temporal_layer: None,
                ..
            }
        ));
    }
}
