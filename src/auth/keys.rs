//! API keys: `hst_<prefix>_<secret>`, shown once at creation. The database keeps the prefix (to
//! find the row) and the hex SHA-256 of the whole key; a presented key is hashed and compared in
//! constant time. Keys from the config or the environment are SHA-256 digests of any string.
//!
//! [`KeyRing`] is the snapshot the HTTP layer checks against; `serve` rebuilds it from the
//! database every [`REFRESH`], so `hestia keys create|revoke` take effect within a second.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hestia_actors::persistence::entities::auth_keys;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scope::Scope;

/// What every generated key starts with.
pub const KEY_MARK: &str = "hst_";

/// How often `serve` re-reads the keys from the database.
pub const REFRESH: Duration = Duration::from_millis(500);

/// Hex characters of the lookup prefix (48 bits: collisions are refused by the unique index).
const PREFIX_LEN: usize = 12;

/// A key just made: the key itself (print it once, then forget it), its prefix and digest.
pub struct NewKey {
    pub key: String,
    pub prefix: String,
    /// Hex SHA-256 of `key`: what is stored.
    pub digest_hex: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator failing is not something a gateway can carry on without.
    getrandom::fill(&mut bytes).expect("the operating system's random generator works");
    bytes
}

/// A new random key: 48 bits of prefix, 256 bits of secret.
pub fn generate() -> NewKey {
    let prefix = hex::encode(random_bytes::<{ PREFIX_LEN / 2 }>());
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let key = format!("{KEY_MARK}{prefix}_{secret}");
    let digest_hex = hex::encode(digest(&key));
    NewKey {
        key,
        prefix,
        digest_hex,
    }
}

/// SHA-256 of a key (or session cookie).
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The lookup prefix of a generated key, if `key` has that shape.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_MARK)?;
    let (prefix, _) = rest.split_once('_')?;
    (prefix.len() == PREFIX_LEN).then_some(prefix)
}

/// Parses a 64-hex-digit SHA-256.
pub fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Where a key is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Database,
    Config,
}

/// A key the ring knows, without the key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub name: String,
    /// The lookup prefix of a database key; config keys have none.
    pub prefix: Option<String>,
    digest: [u8; 32],
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub source: KeySource,
}

impl KeyEntry {
    /// A key from the config or the environment: a name, a digest and scopes.
    pub fn from_digest(name: &str, digest: [u8; 32], scopes: Vec<Scope>) -> KeyEntry {
        KeyEntry {
            name: name.to_owned(),
            prefix: None,
            digest,
            scopes,
            expires_at: None,
            revoked: false,
            source: KeySource::Config,
        }
    }

    /// What logs and events may say about this key: its name and prefix, never the key.
    pub fn label(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("{} ({KEY_MARK}{prefix})", self.name),
            None => self.name.clone(),
        }
    }

    fn from_row(row: &auth_keys::Model) -> Option<KeyEntry> {
        Some(KeyEntry {
            name: row.name.clone(),
            prefix: Some(row.prefix.clone()),
            digest: parse_digest(&row.hash)?,
            // Rows are written by `hestia keys create`, which validates scopes; a row edited by
            // hand into nonsense grants nothing.
            scopes: Scope::parse_list(&row.scopes).unwrap_or_default(),
            expires_at: row.expires_at,
            revoked: row.revoked_at.is_some(),
            source: KeySource::Database,
        })
    }
}

/// What the ring says about a presented key.
#[derive(Debug, Clone, Copy)]
pub enum Verdict<'a> {
    Valid(&'a KeyEntry),
    /// No key has this prefix or digest.
    Unknown,
    /// The prefix is a key's, the rest is not.
    Altered(&'a KeyEntry),
    Revoked(&'a KeyEntry),
    Expired(&'a KeyEntry),
}

impl Verdict<'_> {
    /// The reason recorded in `auth_denied` events.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Valid(_) => "valid",
            Verdict::Unknown => "unknown_key",
            Verdict::Altered(_) => "altered_key",
            Verdict::Revoked(_) => "revoked_key",
            Verdict::Expired(_) => "expired_key",
        }
    }
}

/// Every key that can be checked right now.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_prefix: HashMap<String, KeyEntry>,
    config: Vec<KeyEntry>,
}

impl KeyRing {
    /// The database rows (revoked ones too, so a revoked key is told apart) and the config keys.
    pub fn new(rows: &[auth_keys::Model], config: Vec<KeyEntry>) -> KeyRing {
        let by_prefix = rows
            .iter()
            .filter_map(KeyEntry::from_row)
            .filter_map(|entry| Some((entry.prefix.clone()?, entry)))
            .collect();
        KeyRing { by_prefix, config }
    }

    /// True when no key could pass: none configured, none live in the database.
    pub fn nothing_could_pass(&self, now: DateTime<Utc>) -> bool {
        self.config.is_empty()
            && self
                .by_prefix
                .values()
                .all(|k| k.revoked || k.expires_at.is_some_and(|at| at <= now))
    }

    /// Checks `presented` (hashed once, compared in constant time).
    pub fn check(&self, presented: &str, now: DateTime<Utc>) -> Verdict<'_> {
        let digest = digest(presented);
        if let Some(entry) = prefix_of(presented).and_then(|p| self.by_prefix.get(p)) {
            if !bool::from(entry.digest.ct_eq(&digest)) {
                return Verdict::Altered(entry);
            }
            if entry.revoked {
                return Verdict::Revoked(entry);
            }
            if entry.expires_at.is_some_and(|at| at <= now) {
                return Verdict::Expired(entry);
            }
            return Verdict::Valid(entry);
        }
        // Every config digest is compared, so timing does not tell which one matched.
        let mut found = None;
        for entry in &self.config {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found.map_or(Verdict::Unknown, Verdict::Valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &NewKey, revoked: bool, expires_at: Option<DateTime<Utc>>) -> auth_keys::Model {
        auth_keys::Model {
            id: "1".into(),
            name: "ci".into(),
            prefix: key.prefix.clone(),
            hash: key.digest_hex.clone(),
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: revoked.then(Utc::now),
            scopes: "read control:*".into(),
            expires_at,
        }
    }

    #[test]
    fn given_a_generated_key_when_checked_then_it_is_valid_and_an_altered_copy_is_not() {
        let key = generate();
        assert_eq!(prefix_of(&key.key), Some(key.prefix.as_str()));
        let ring = KeyRing::new(&[row(&key, false, None)], Vec::new());
        let now = Utc::now();
        assert!(matches!(ring.check(&key.key, now), Verdict::Valid(k) if k.scopes.len() == 2));
        let mut altered = key.key.clone();
        let last = altered.pop().expect("non-empty");
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(ring.check(&altered, now), Verdict::Altered(_)));
        assert!(matches!(
            ring.check("hst_nothing_here", now),
            Verdict::Unknown
        ));
    }

    #[test]
    fn given_revoked_and_expired_keys_when_checked_then_each_says_why() {
        let (revoked, expired) = (generate(), generate());
        let past = Utc::now() - chrono::Duration::seconds(1);
        let ring = KeyRing::new(
            &[row(&revoked, true, None), row(&expired, false, Some(past))],
            Vec::new(),
        );
        assert!(matches!(
            ring.check(&revoked.key, Utc::now()),
            Verdict::Revoked(_)
        ));
        assert!(matches!(
            ring.check(&expired.key, Utc::now()),
            Verdict::Expired(_)
        ));
        assert!(ring.nothing_could_pass(Utc::now()));
    }

    #[test]
    fn given_a_config_digest_when_its_key_is_presented_then_it_is_valid() {
        let entry = KeyEntry::from_digest("deploy", digest("any string at all"), vec![Scope::Read]);
        let ring = KeyRing::new(&[], vec![entry]);
        assert!(
            matches!(ring.check("any string at all", Utc::now()), Verdict::Valid(k) if k.name == "deploy")
        );
        assert!(matches!(
            ring.check("another", Utc::now()),
            Verdict::Unknown
        ));
        assert!(!ring.nothing_could_pass(Utc::now()));
    }
}
