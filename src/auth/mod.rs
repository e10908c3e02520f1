//! Auth without HTTP: API keys (their format, SHA-256 digests and the live key ring), scopes,
//! dashboard password hashes and the limiter of failed attempts. `http::auth` enforces them on
//! routes; `cli::keys` creates, lists and revokes keys. Keys are never hashed with argon2 (a
//! slow hash per request would be a denial-of-service lever); passwords always are.

pub mod keys;
pub mod limiter;
pub mod password;
pub mod scope;

pub use keys::{KeyRing, Verdict};
pub use scope::Scope;
