//! Environment overrides (`HESTIA_*`, `SEMAPHORE_*`), which win over the file. They are read
//! through the [`Source`] trait so tests inject a map instead of touching the process environment.

use std::collections::BTreeMap;

use super::secret::Secret;

pub const HESTIA_LISTEN: &str = "HESTIA_LISTEN";
pub const HESTIA_DATABASE_URL: &str = "HESTIA_DATABASE_URL";
pub const HESTIA_LOG: &str = "HESTIA_LOG";
/// Same as `auth.dashboard_password_hash`.
pub const HESTIA_DASHBOARD_PASSWORD_HASH: &str = "HESTIA_DASHBOARD_PASSWORD_HASH";
/// API keys as digests, added to `auth.keys`: whitespace-separated `name:sha256:scope,scope`.
pub const HESTIA_API_KEYS: &str = "HESTIA_API_KEYS";
pub const SEMAPHORE_BASE_URL: &str = "SEMAPHORE_BASE_URL";
pub const SEMAPHORE_API_TOKEN: &str = "SEMAPHORE_API_TOKEN";
/// The prototype's name for `SEMAPHORE_API_TOKEN`; the latter wins when both are set.
pub const SEMAPHORE_API_KEY: &str = "SEMAPHORE_API_KEY";
pub const SEMAPHORE_USERNAME: &str = "SEMAPHORE_USERNAME";
pub const SEMAPHORE_PASSWORD: &str = "SEMAPHORE_PASSWORD";

/// Where environment variables come from.
pub trait Source {
    /// The variable's value, or `None` when it is unset.
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed set of variables (tests, embedding).
#[derive(Debug, Clone, Default)]
pub struct MapSource(pub BTreeMap<String, String>);

impl MapSource {
    /// No variables at all.
    pub fn empty() -> MapSource {
        MapSource::default()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapSource {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> MapSource {
        MapSource(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Source for MapSource {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// One override: the variable it came from and its value.
#[derive(Debug, Clone)]
pub struct Override<T> {
    pub var: &'static str,
    pub value: T,
}

/// Every override that is set (an empty value counts as unset).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<Override<String>>,
    pub database_url: Option<Override<String>>,
    pub log: Option<Override<String>>,
    pub semaphore_base_url: Option<Override<String>>,
    pub semaphore_api_token: Option<Override<Secret>>,
    pub semaphore_username: Option<Override<String>>,
    pub semaphore_password: Option<Override<Secret>>,
    pub dashboard_password_hash: Option<Override<Secret>>,
    pub api_keys: Option<Override<Secret>>,
}

impl Overrides {
    pub fn read(source: &dyn Source) -> Overrides {
        let get = |var: &'static str| {
            source
                .get(var)
                .filter(|value| !value.trim().is_empty())
                .map(|value| Override { var, value })
        };
        let secret = |o: Override<String>| Override {
            var: o.var,
            value: Secret::new(o.value),
        };
        Overrides {
            listen: get(HESTIA_LISTEN),
            database_url: get(HESTIA_DATABASE_URL),
            log: get(HESTIA_LOG),
            semaphore_base_url: get(SEMAPHORE_BASE_URL),
            semaphore_api_token: get(SEMAPHORE_API_TOKEN)
                .or_else(|| get(SEMAPHORE_API_KEY))
                .map(secret),
            semaphore_username: get(SEMAPHORE_USERNAME),
            semaphore_password: get(SEMAPHORE_PASSWORD).map(secret),
            dashboard_password_hash: get(HESTIA_DASHBOARD_PASSWORD_HASH).map(secret),
            api_keys: get(HESTIA_API_KEYS).map(secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_only_the_prototype_alias_when_read_then_it_sets_the_api_token() {
        let env: MapSource = [(SEMAPHORE_API_KEY, "old")].into_iter().collect();
        let overrides = Overrides::read(&env);
        let token = overrides.semaphore_api_token.expect("alias read");
        assert_eq!(
            (token.var, token.value.expose()),
            (SEMAPHORE_API_KEY, "old")
        );
    }

    #[test]
    fn given_both_token_names_when_read_then_the_new_name_wins() {
        let env: MapSource = [(SEMAPHORE_API_KEY, "old"), (SEMAPHORE_API_TOKEN, "new")]
            .into_iter()
            .collect();
        let token = Overrides::read(&env)
            .semaphore_api_token
            .expect("token read");
        assert_eq!(token.value.expose(), "new");
    }

    #[test]
    fn given_an_empty_variable_when_read_then_it_counts_as_unset() {
        let env: MapSource = [(HESTIA_LISTEN, " ")].into_iter().collect();
        assert!(Overrides::read(&env).listen.is_none());
    }
}
