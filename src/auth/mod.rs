//! Identity: the signing keys, the app tokens Switchboard issues (as Entra does), the validation
//! of every bearer token on a Graph route, and the JWT on every notification (as the calling
//! platform does).

pub mod keys;
pub mod signer;
pub mod tokens;

pub use keys::KeyRing;
pub use tokens::{AuthError, Principal, Validator};

/// The audiences a Graph token may carry.
pub const GRAPH_AUDIENCES: [&str; 2] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];
