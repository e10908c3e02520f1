//! A service's page: its status, start and stop, the cold-start history chart, the current and
//! last Semaphore task, its activity timeline (kept current from the event stream) and the tail
//! of its log, with follow.

use std::fmt::Write;

use hestia_actors::events::ActivityEvent;
use hestia_actors::persistence::ActivityFilter;
use hestia_actors::service::ServiceHandle;
use hestia_actors::starters::semaphore::AutomationTask;

use super::chart;
use super::services::action_button;
use crate::http::AppState;
use crate::http::api::services::StatusBody;
use crate::http::html::escape;

/// How many start attempts the chart shows.
const CHART_ATTEMPTS: u64 = 40;
/// How many recorded events the timeline starts with.
const TIMELINE_EVENTS: u64 = 50;

/// The page's content.
pub async fn content(state: &AppState, service: &ServiceHandle, csrf: &str) -> String {
    let status = StatusBody::of(service);
    let id = escape(&status.service_id);
    let persistence = state.engine.persistence();
    let attempts = persistence
        .start_attempts(service.id(), CHART_ATTEMPTS)
        .await
        .unwrap_or_default();
    let events = persistence
        .activity(ActivityFilter {
            service: Some(service.id().to_owned()),
            limit: TIMELINE_EVENTS,
            ..ActivityFilter::default()
        })
        .await
        .unwrap_or_default();
    let text = |value: Option<&str>| escape(value.unwrap_or("-"));
    let state_name = status.state.as_str();
    let facts = format!(
        "<dl class=\"facts\" data-service=\"{id}\" data-state=\"{state_name}\">\
         <dt>State</dt><dd data-field=\"state\"><span class=\"state {state_name}\">{state_name}</span></dd>\
         <dt>Machine</dt><dd data-field=\"machine\">{machine}</dd>\
         <dt>Queue</dt><dd data-field=\"queue\">{queue}</dd>\
         <dt>In flight</dt><dd data-field=\"inflight\">{in_flight}</dd>\
         <dt>Starter</dt><dd>{starter}</dd>\
         <dt>Last started</dt><dd>{started}</dd>\
         <dt>Last error</dt><dd class=\"error\" data-field=\"error\">{error}</dd></dl>\
         <p>{start} {stop}</p>",
        machine = text(status.machine_id.as_deref()),
        queue = status.queue_pending,
        in_flight = status.in_flight,
        starter = escape(status.starter),
        started = text(
            status
                .last_started_at
                .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .as_deref()
        ),
        error = text(status.last_error.as_deref()),
        start = action_button(&status.service_id, "start", csrf),
        stop = action_button(&status.service_id, "stop", csrf),
    );
    let automation = if status.automation.enabled {
        format!(
            "<dl class=\"facts\"><dt>Current task</dt><dd id=\"task-current\">{}</dd>\
             <dt>Last task</dt><dd id=\"task-last\">{}</dd></dl>",
            task(status.automation.current_task.as_ref()),
            task(status.automation.last_task.as_ref()),
        )
    } else {
        "<p class=\"muted\">This service is not started through Semaphore.</p>".to_owned()
    };
    format!(
        "<h1>{id}</h1><div class=\"grid\"><section class=\"card\">{facts}</section>\
         <section class=\"card\"><h2>Semaphore</h2>{automation}</section></div>\
         <h2>Cold starts</h2><section class=\"card\">{chart}</section>\
         <div class=\"grid\"><section><h2>Activity</h2><ol class=\"timeline\" id=\"timeline\">{timeline}</ol></section>\
         <section><h2>Log <label class=\"muted\"><input type=\"checkbox\" id=\"follow\" checked> follow</label></h2>\
         <pre class=\"log\" id=\"log\" data-log=\"{id}\">loading…</pre></section></div>",
        chart = chart::cold_starts(&attempts),
        timeline = timeline(&events),
    )
}

fn task(task: Option<&AutomationTask>) -> String {
    match task {
        None => "none".to_owned(),
        Some(task) => escape(&format!(
            "#{} {} (template {}) {} since {}{}",
            task.task_id,
            task.action,
            task.template_id,
            task.status,
            task.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            task.duration_ms
                .map(|ms| format!(", took {:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default(),
        )),
    }
}

/// The recorded events, newest first (as the script adds new ones).
fn timeline(events: &[ActivityEvent]) -> String {
    let mut items = String::new();
    for event in events {
        let detail = match &event.detail {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let _ = write!(
            items,
            "<li><time datetime=\"{at}\">{time}</time><span class=\"kind\">{kind}</span>\
             <span class=\"muted\">{detail}</span></li>",
            at = event.at.to_rfc3339(),
            time = event.at.format("%H:%M:%S"),
            kind = event.kind.as_str(),
            detail = escape(&detail),
        );
    }
    items
}
