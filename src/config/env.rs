//! Environment overrides (`HESTIA_*`, `SEMAPHORE_*`, and the prototype's per-service
//! `<SERVICE_ID>_<FIELD>`), which win over the file. They are read through the [`Source`] trait so
//! tests inject a map instead of touching the process environment.

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
/// The prototype's Semaphore API timeout, in seconds (fractions allowed).
pub const SEMAPHORE_TIMEOUT: &str = "SEMAPHORE_TIMEOUT";

/// Where environment variables come from.
pub trait Source {
    /// The variable's value, or `None` when it is unset.
    fn get(&self, key: &str) -> Option<String>;

    /// Every variable that is set (names and values that are not UTF-8 are left out): the
    /// per-service variables are found by their suffix.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }

    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
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

    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A service setting the prototype reads from `<SERVICE_ID>_<FIELD>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceField {
    BaseUrl,
    HealthUrl,
    RetryCount,
    RetryDelayMs,
    WarmupMs,
    IdleTimeoutMs,
    FallbackUrl,
    QueueSize,
    RequestTimeoutSeconds,
    SemaphoreEnabled,
    SemaphoreMachineId,
    SemaphoreStartTemplateId,
    SemaphoreStopTemplateId,
    SemaphoreTaskTimeout,
    SemaphorePollInterval,
}

impl ServiceField {
    /// Every field with its variable suffix; the flat key it sets is the suffix lower-cased.
    pub const ALL: [(ServiceField, &'static str); 15] = [
        (ServiceField::BaseUrl, "BASE_URL"),
        (ServiceField::HealthUrl, "HEALTH_URL"),
        (ServiceField::RetryCount, "RETRY_COUNT"),
        (ServiceField::RetryDelayMs, "RETRY_DELAY_MS"),
        (ServiceField::WarmupMs, "WARMUP_MS"),
        (ServiceField::IdleTimeoutMs, "IDLE_TIMEOUT_MS"),
        (ServiceField::FallbackUrl, "FALLBACK_URL"),
        (ServiceField::QueueSize, "QUEUE_SIZE"),
        (
            ServiceField::RequestTimeoutSeconds,
            "REQUEST_TIMEOUT_SECONDS",
        ),
        (ServiceField::SemaphoreEnabled, "SEMAPHORE_ENABLED"),
        (ServiceField::SemaphoreMachineId, "SEMAPHORE_MACHINE_ID"),
        (
            ServiceField::SemaphoreStartTemplateId,
            "SEMAPHORE_START_TEMPLATE_ID",
        ),
        (
            ServiceField::SemaphoreStopTemplateId,
            "SEMAPHORE_STOP_TEMPLATE_ID",
        ),
        (ServiceField::SemaphoreTaskTimeout, "SEMAPHORE_TASK_TIMEOUT"),
        (
            ServiceField::SemaphorePollInterval,
            "SEMAPHORE_POLL_INTERVAL",
        ),
    ];
}

/// One `<SERVICE_ID>_<FIELD>` variable, e.g. `OPEN_WEBUI_QUEUE_SIZE=50`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceVar {
    /// The variable's name.
    pub var: String,
    /// `OPEN_WEBUI`: the service id upper-cased, `-` and `.` written `_`.
    pub prefix: String,
    pub field: ServiceField,
    pub value: String,
}

impl ServiceVar {
    /// The variable's parts, when its name is `<PREFIX>_<FIELD>` with a prefix of upper-case
    /// letters, digits and `_`.
    fn parse(var: &str, value: &str) -> Option<ServiceVar> {
        let (field, prefix) = ServiceField::ALL.iter().find_map(|(field, suffix)| {
            let prefix = var.strip_suffix(suffix)?.strip_suffix('_')?;
            Some((*field, prefix))
        })?;
        let valid = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        valid.then(|| ServiceVar {
            var: var.to_owned(),
            prefix: prefix.to_owned(),
            field,
            value: value.to_owned(),
        })
    }
}

/// The prefix of a service's variables: `open-webui` → `OPEN_WEBUI`.
pub fn service_prefix(service_id: &str) -> String {
    service_id
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
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
    pub semaphore_timeout: Option<Override<String>>,
    /// `<SERVICE_ID>_<FIELD>` variables, sorted by name.
    pub services: Vec<ServiceVar>,
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
            semaphore_timeout: get(SEMAPHORE_TIMEOUT),
            services: service_vars(source),
        }
    }
}

/// The per-service variables that are set (an empty value counts as unset).
fn service_vars(source: &dyn Source) -> Vec<ServiceVar> {
    let mut vars: Vec<ServiceVar> = source
        .vars()
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .filter_map(|(var, value)| ServiceVar::parse(&var, value.trim()))
        .collect();
    vars.sort_by(|a, b| a.var.cmp(&b.var));
    vars
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
    fn given_per_service_variables_when_read_then_prefix_and_field_are_split() {
        let env: MapSource = [
            ("OPEN_WEBUI_QUEUE_SIZE", "50"),
            ("GPU_SD_SEMAPHORE_POLL_INTERVAL", "2.5"),
            ("MY_SVC_BASE_URL", ""),
            ("lower_BASE_URL", "http://x"),
            ("_BASE_URL", "http://x"),
            ("PATH", "/usr/bin"),
        ]
        .into_iter()
        .collect();
        let vars = Overrides::read(&env).services;
        let parts: Vec<_> = vars
            .iter()
            .map(|v| (v.prefix.as_str(), v.field, v.value.as_str()))
            .collect();
        assert_eq!(
            parts,
            [
                ("GPU_SD", ServiceField::SemaphorePollInterval, "2.5"),
                ("OPEN_WEBUI", ServiceField::QueueSize, "50"),
            ]
        );
        assert_eq!(service_prefix("open-webui"), "OPEN_WEBUI");
    }

    #[test]
    fn given_an_empty_variable_when_read_then_it_counts_as_unset() {
        let env: MapSource = [(HESTIA_LISTEN, " ")].into_iter().collect();
        assert!(Overrides::read(&env).listen.is_none());
    }
}
