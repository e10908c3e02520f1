//! The machines page: each machine, whether it is awake, when Hestia last saw it, and the
//! services placed there now (from `GET /v1/machines`' own reading).

use std::fmt::Write;

use crate::http::AppState;
use crate::http::api::machines::machines;
use crate::http::html::escape;

/// The page's content.
pub async fn content(state: &AppState) -> String {
    let machines = match machines(state).await {
        Ok(machines) => machines,
        Err(problem) => {
            return format!(
                "<h1>Machines</h1><p class=\"error\">{}</p>",
                escape(&problem.detail)
            );
        }
    };
    if machines.is_empty() {
        return "<h1>Machines</h1><p class=\"muted\">No machines are configured: services run \
                where their URLs point.</p>"
            .to_owned();
    }
    let mut rows = String::new();
    for machine in &machines {
        let awake = match machine.awake {
            Some(true) => "<span class=\"state ready\">awake</span>",
            Some(false) => "<span class=\"state failed\">asleep</span>",
            None => "<span class=\"state\">unknown</span>",
        };
        let services = machine
            .services
            .iter()
            .map(|id| {
                let id = escape(id);
                format!("<a href=\"/dashboard/services/{id}\">{id}</a>")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            rows,
            "<tr data-machine=\"{id}\"><td data-label=\"Machine\">{id}</td>\
             <td data-label=\"Role\">{role}</td><td data-label=\"Address\">{address}</td>\
             <td data-label=\"Awake\">{awake}</td><td data-label=\"Last seen\">{seen}</td>\
             <td data-label=\"Wake\">{wake}</td><td data-label=\"Services\">{services}</td></tr>",
            id = escape(&machine.id),
            role = escape(&format!("{:?}", machine.role).to_lowercase()),
            address = escape(&machine.address),
            seen = machine.last_seen_at.map_or("-".to_owned(), |at| at
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()),
            wake = machine.wake.unwrap_or("-"),
            services = if services.is_empty() {
                "-".to_owned()
            } else {
                services
            },
        );
    }
    format!(
        "<h1>Machines</h1><table class=\"cards\" id=\"machines\"><thead><tr><th>Machine</th>\
         <th>Role</th><th>Address</th><th>Awake</th><th>Last seen</th><th>Wake</th>\
         <th>Services</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}
