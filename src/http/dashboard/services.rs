//! The services page: every service with its state, machine, queue, in flight, last use, time
//! until idle shutdown and last error, with start and stop buttons. The script keeps each row
//! current from the event stream.

use std::fmt::Write;

use crate::http::AppState;
use crate::http::api::services::StatusBody;
use crate::http::html::escape;

/// The page's content; `csrf` is the hidden input every form carries.
pub fn content(state: &AppState, csrf: &str) -> String {
    let mut rows = String::new();
    for service in state.engine.services() {
        let status = StatusBody::of(&service);
        let _ = write!(rows, "{}", row(state, &status, csrf));
    }
    format!(
        "<h1>Services</h1>\
         <table class=\"cards\" id=\"services\"><thead><tr><th>Service</th><th>State</th>\
         <th>Machine</th><th>Queue</th><th>In flight</th><th>Last used</th>\
         <th>Idle shutdown in</th><th>Last error</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

fn row(state: &AppState, status: &StatusBody, csrf: &str) -> String {
    let id = escape(&status.service_id);
    let idle_ms = state
        .engine
        .spec()
        .services
        .iter()
        .find(|s| s.id == status.service_id)
        .and_then(|s| s.idle_timeout)
        .map_or(0, |idle| idle.as_millis() as u64);
    let text = |value: Option<&str>| escape(value.unwrap_or("-"));
    let state_name = status.state.as_str();
    let last_used = status.last_used_at.map(|at| at.to_rfc3339());
    format!(
        "<tr data-service=\"{id}\" data-state=\"{state_name}\" data-idle-ms=\"{idle_ms}\" \
         data-last-used=\"{last_used_attr}\" data-in-flight=\"{in_flight}\">\
         <td data-label=\"Service\"><a href=\"/dashboard/services/{id}\">{id}</a></td>\
         <td data-label=\"State\" data-field=\"state\"><span class=\"state {state_name}\">{state_name}</span></td>\
         <td data-label=\"Machine\" data-field=\"machine\">{machine}</td>\
         <td data-label=\"Queue\" class=\"num\" data-field=\"queue\">{queue}</td>\
         <td data-label=\"In flight\" class=\"num\" data-field=\"inflight\">{in_flight}</td>\
         <td data-label=\"Last used\" data-field=\"lastused\">{last_used}</td>\
         <td data-label=\"Idle shutdown in\" data-field=\"idle\">-</td>\
         <td data-label=\"Last error\" class=\"error\" data-field=\"error\">{error}</td>\
         <td class=\"actions\">{start} {stop}</td></tr>",
        last_used_attr = escape(last_used.as_deref().unwrap_or("")),
        machine = text(status.machine_id.as_deref()),
        queue = status.queue_pending,
        in_flight = status.in_flight,
        last_used = text(
            status
                .last_used_at
                .map(|at| at.format("%H:%M:%S").to_string())
                .as_deref()
        ),
        error = text(status.last_error.as_deref()),
        start = action_button(&status.service_id, "start", csrf),
        stop = action_button(&status.service_id, "stop", csrf),
    )
}

/// A start or stop button: a form that works without script, sent in the background with it.
pub fn action_button(service: &str, action: &str, csrf: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" data-live action=\"/dashboard/services/{id}/{action}\">\
         {csrf}<button type=\"submit\" name=\"do\" value=\"{action}\" data-action=\"{action}\">{label}</button></form>",
        id = escape(service),
        label = if action == "start" { "Start" } else { "Stop" },
    )
}
