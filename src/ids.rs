//! Newtype ids. Every id crossing the signaling boundary is a string (mediasoup uses UUIDs);
//! newtypes keep a ProducerId from being passed where a ConsumerId is expected.
//!
//! Ids are `Arc<str>`: the forwarding path clones them (routing tables, fan-out lists), and a
//! clone must not allocate. They borrow as `str`, so maps are searched with a `&str` as is.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Arc<str>);

        impl $name {
            /// A fresh random (UUID v4) id.
            pub fn random() -> Self {
                Self(Arc::from(uuid::Uuid::new_v4().to_string()))
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A room, named by the client in the signaling URL.
    RoomId
);
string_id!(
    /// A peer within a room, named by the client in the signaling URL.
    PeerId
);
string_id!(
    /// A WebRtcTransport.
    TransportId
);
string_id!(
    /// A Producer; keeps its id across nodes when piped.
    ProducerId
);
string_id!(
    /// A Consumer.
    ConsumerId
);
string_id!(
    /// A node of the cluster.
    NodeId
);
