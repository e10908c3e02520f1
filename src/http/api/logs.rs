//! `GET /v1/services/{id}/logs?lines=N[&follow=true]`: the tail of a service's own output (its
//! log file in the data directory), as `text/plain`, secrets masked. With `follow=true` the
//! answer stays open and carries each new line as the service writes it.

use std::time::Duration;

use crate::http::extract::ApiPath;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, body::Bytes};
use hestia_actors::service_log::ServiceLog;

use crate::http::extract::ApiQuery;
use crate::http::problem::Problem;
use crate::http::{ApiError, AppState};

/// Lines answered when `lines` is not given.
const DEFAULT_LINES: usize = 100;
/// The most lines one answer carries.
const MAX_LINES: usize = 10_000;
/// How often a followed log is looked at for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/services/{id}/logs", get(logs))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct LogsQuery {
    /// How many of the last lines (default 100, at most 10,000).
    pub lines: Option<usize>,
    /// Keep the answer open and send new lines as they come.
    #[serde(default)]
    pub follow: bool,
}

async fn logs(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let log = state.engine.service_log(&id)?;
    let lines = query.lines.unwrap_or(DEFAULT_LINES);
    if lines > MAX_LINES {
        let detail = format!("`lines` is at most {MAX_LINES} (got {lines})");
        return Ok(
            Problem::new("invalid-request", StatusCode::BAD_REQUEST, detail).into_response(),
        );
    }
    // The offset is taken before the tail, so a line written in between is sent twice at worst.
    let offset = log.len();
    let tail = match log.tail(lines) {
        Ok(tail) => tail,
        Err(error) => return Ok(unreadable(&id, &log, &error)),
    };
    let head = Bytes::from(joined(&tail));
    let body = if query.follow {
        let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) });
        let until_stopping = state.stopping.clone().cancelled_owned();
        let lines = futures_util::StreamExt::chain(first, follow(log, offset));
        Body::from_stream(futures_util::StreamExt::take_until(lines, until_stopping))
    } else {
        Body::from(head)
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// New lines of `log` from `offset` on, for as long as the client listens.
fn follow(
    log: ServiceLog,
    offset: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((log, offset), |(log, offset)| async move {
        let mut offset = offset;
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            match log.read_from(offset) {
                Ok((lines, next)) => {
                    offset = next;
                    if !lines.is_empty() {
                        return Some((Ok(Bytes::from(joined(&lines))), (log, offset)));
                    }
                }
                Err(error) => return Some((Err(error), (log, offset))),
            }
        }
    })
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

fn unreadable(id: &str, log: &ServiceLog, error: &std::io::Error) -> Response {
    let detail = format!(
        "the log of service `{id}` ({}) cannot be read: {error}",
        log.path().display()
    );
    Problem::new("unavailable", StatusCode::SERVICE_UNAVAILABLE, detail)
        .service(id)
        .into_response()
}
