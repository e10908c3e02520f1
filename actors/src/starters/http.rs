//! `start: http` (and `stop: http`): one webhook call with the spec's method, URL, headers and
//! body (placeholders expanded) and its own timeout. Any 2xx is success.
//!
//! Header values are never logged or shown: they often carry tokens.

use std::fmt;

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderName, HeaderValue};
use tracing::info;

use super::{StartTarget, Started, Starter, StarterError};
use crate::placeholders::expand;
use crate::redact::redact_url;
use crate::spec::HttpHookSpec;

/// How much of an error response's body goes into the error.
const ERROR_BODY_BYTES: usize = 500;

/// A webhook. Its `stop` does nothing: a stop webhook is its own `HttpStarter`, run by the
/// stop hook that [`super::build`] sets up.
pub struct HttpStarter {
    service_id: String,
    spec: HttpHookSpec,
    /// The engine's shared control-plane client (one connection pool, one TLS setup).
    client: reqwest::Client,
}

impl HttpStarter {
    pub fn new(spec: HttpHookSpec, service_id: &str, client: reqwest::Client) -> HttpStarter {
        HttpStarter {
            service_id: service_id.to_owned(),
            spec,
            client,
        }
    }

    /// Makes the call; `Ok` on any 2xx.
    pub async fn call(&self, target: &StartTarget) -> Result<(), StarterError> {
        let client = &self.client;
        let vars = target.vars();
        let placeholder = |field| StarterError::placeholder(&self.service_id, field);
        let url = expand(&self.spec.url, &vars).map_err(placeholder("webhook url"))?;
        // What logs, errors and events show: no user-info, no query values.
        let shown = redact_url(&url);
        let method_name = self.spec.method.to_ascii_uppercase();
        let invalid = |what: &'static str, name: &str| StarterError::InvalidHook {
            service_id: self.service_id.clone(),
            method: method_name.clone(),
            url: shown.clone(),
            what,
            name: name.to_owned(),
        };
        let method = reqwest::Method::from_bytes(method_name.as_bytes())
            .map_err(|_| invalid("method", &method_name))?;

        let mut request = client.request(method, &url).timeout(self.spec.timeout);
        for (name, value) in &self.spec.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid("header name", name))?;
            let value = expand(value, &vars).map_err(placeholder("webhook header"))?;
            // The error names the header, never its value.
            let value =
                HeaderValue::from_str(&value).map_err(|_| invalid("value for header", name))?;
            request = request.header(header, value);
        }
        if let Some(body) = &self.spec.body {
            request = request.body(expand(body, &vars).map_err(placeholder("webhook body"))?);
        }

        info!(service = %self.service_id, method = %method_name, url = %shown, attempt = target.attempt, "calling webhook");
        // reqwest's error would print the URL as called: it goes without, beside the redacted one.
        let request_error = |source: reqwest::Error| StarterError::HttpRequest {
            service_id: self.service_id.clone(),
            method: method_name.clone(),
            url: shown.clone(),
            source: source.without_url(),
        };
        let mut response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status.is_success() {
            info!(service = %self.service_id, method = %method_name, url = %shown, status = status.as_u16(), "webhook succeeded");
            return Ok(());
        }
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                // The status is the error; a body that cannot be read just stays short.
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(ERROR_BODY_BYTES);
        Err(StarterError::HttpStatus {
            service_id: self.service_id.clone(),
            method: method_name,
            url: shown,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

impl Starter for HttpStarter {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn start<'a>(
        &'a self,
        target: &'a StartTarget,
    ) -> BoxFuture<'a, Result<Started, StarterError>> {
        Box::pin(async move {
            self.call(target).await?;
            Ok(Started { exit: None })
        })
    }

    fn stop<'a>(&'a self, _target: &'a StartTarget) -> BoxFuture<'a, Result<(), StarterError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Header values are left out: they may carry tokens.
impl fmt::Debug for HttpStarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStarter")
            .field("service_id", &self.service_id)
            .field("method", &self.spec.method)
            .field("url", &redact_url(&self.spec.url))
            .field(
                "header_names",
                &self.spec.headers.keys().collect::<Vec<_>>(),
            )
            .field("has_body", &self.spec.body.is_some())
            .field("timeout", &self.spec.timeout)
            .finish()
    }
}
