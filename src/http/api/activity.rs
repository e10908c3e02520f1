//! `GET /v1/activity`: the recorded timeline, newest first, filtered by service, type, time and
//! count. Read from the persistence actor's database after it has written what was cast before.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hestia_actors::events::{ActivityEvent, ActivityKind};
use hestia_actors::persistence::ActivityFilter;
use serde::{Deserialize, Serialize};

use crate::http::AppState;
use crate::http::extract::ApiQuery;
use crate::http::problem::Problem;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/activity", get(list))
}

/// `?service=&type=&since=&limit=`; every filter is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    /// Only this service's events.
    pub service: Option<String>,
    /// Only events of this type (`started`, `queued`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only events at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// At most this many events. Default 100, at most 1000 (larger values are capped).
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ActivityList {
    pub events: Vec<ActivityEvent>,
}

async fn list(State(state): State<AppState>, ApiQuery(query): ApiQuery<ActivityQuery>) -> Response {
    let filter = match filter_of(query) {
        Ok(filter) => filter,
        Err(problem) => return problem.into_response(),
    };
    match state.engine.persistence().activity(filter).await {
        Ok(events) => Json(ActivityList { events }).into_response(),
        Err(error) => Problem::new(
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the activity log cannot be read: {error}"),
        )
        .into_response(),
    }
}

/// The persistence filter for a query, or the problem with it.
fn filter_of(query: ActivityQuery) -> Result<ActivityFilter, Box<Problem>> {
    let invalid = |detail: String| {
        Box::new(Problem::new(
            "invalid-request",
            StatusCode::BAD_REQUEST,
            detail,
        ))
    };
    let kind = query
        .kind
        .map(|name| {
            ActivityKind::parse(&name).ok_or_else(|| {
                let valid: Vec<&str> = ActivityKind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(format!(
                    "`type`: `{name}` is not an activity type; valid types: {}",
                    valid.join(", ")
                ))
            })
        })
        .transpose()?;
    let since = query
        .since
        .map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|e| {
                    invalid(format!(
                        "`since`: `{text}` is not an RFC 3339 time such as \
                         2025-01-31T08:00:00Z: {e}"
                    ))
                })
        })
        .transpose()?;
    Ok(ActivityFilter {
        service: query.service,
        kind,
        since,
        limit: query
            .limit
            .unwrap_or(ActivityFilter::DEFAULT_LIMIT)
            .min(ActivityFilter::MAX_LIMIT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_query_reads_the_newest_hundred() {
        let filter = filter_of(ActivityQuery::default()).expect("valid");
        assert_eq!(filter, ActivityFilter::default());
    }

    #[test]
    fn filters_are_parsed_and_the_limit_capped() {
        let filter = filter_of(ActivityQuery {
            service: Some("echo".into()),
            kind: Some("start_requested".into()),
            since: Some("2025-01-31T09:00:00+01:00".into()),
            limit: Some(5000),
        })
        .expect("valid");
        assert_eq!(filter.kind, Some(ActivityKind::StartRequested));
        assert_eq!(
            filter.since.map(|t| t.to_rfc3339()).as_deref(),
            Some("2025-01-31T08:00:00+00:00")
        );
        assert_eq!(filter.limit, 1000);
    }

    #[test]
    fn an_unknown_type_lists_the_valid_ones() {
        let problem = filter_of(ActivityQuery {
            kind: Some("exploded".into()),
            ..ActivityQuery::default()
        })
        .expect_err("invalid");
        assert_eq!(problem.slug(), "invalid-request");
        assert!(problem.detail.contains("exploded"));
        assert!(problem.detail.contains("start_requested, start_attempt"));
    }
}
