//! The frame every dashboard page shares: head (phone viewport, the embedded stylesheet and
//! script), navigation, the banner when auth is off, and a place for action errors.

use hestia_actors::events::ActivityKind;

use crate::http::html::escape;

/// Which navigation entry is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Services,
    Machines,
}

/// What a page puts into the frame.
pub struct Frame<'a> {
    pub title: &'a str,
    pub nav: Nav,
    pub auth_enabled: bool,
    /// The logout form, when the caller is logged in.
    pub logout: &'a str,
    /// `data-only` of `<body>`: the live stream is filtered to this service.
    pub service: Option<&'a str>,
}

/// The whole page around `content`.
pub fn page(frame: &Frame<'_>, content: &str) -> String {
    let kinds: Vec<&str> = ActivityKind::ALL.iter().map(|k| k.as_str()).collect();
    let link = |nav: Nav, href: &str, label: &str| {
        let class = if nav == frame.nav {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    };
    let banner = if frame.auth_enabled {
        String::new()
    } else {
        "<div class=\"banner\" id=\"auth-off\">Auth is off: anyone who can reach this address can \
         use every service, this dashboard and the API. Turn it on with <code>auth.enabled: \
         true</code>.</div>"
            .to_owned()
    };
    let service = frame
        .service
        .map(|id| format!(" data-only=\"{}\"", escape(id)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Hestia</title>\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\
         <script src=\"/dashboard/assets/dashboard.js\" defer></script></head>\
         <body data-kinds=\"{kinds}\"{service}>\
         <header><a class=\"brand\" href=\"/dashboard\">Hestia</a>{services}{machines}\
         <span id=\"live\" class=\"muted\"></span>{logout}</header>{banner}\
         <main>{content}</main><div id=\"flash\" role=\"alert\"></div></body></html>",
        title = escape(frame.title),
        kinds = kinds.join(" "),
        services = link(Nav::Services, "/dashboard", "Services"),
        machines = link(Nav::Machines, "/dashboard/machines", "Machines"),
        logout = frame.logout,
    )
}
