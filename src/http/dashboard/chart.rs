//! The cold-start history chart of a service page: one bar per start attempt (oldest left),
//! its height the attempt's duration, failed and timed-out attempts in red with a cross.
//! Rendered on the server as SVG, so it needs no script and no library.

use std::fmt::Write;

use hestia_actors::persistence::{AttemptOutcome, AttemptRecord};

use crate::http::html::escape;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 20.0;

/// The chart of `attempts` (newest first, as the database returns them).
pub fn cold_starts(attempts: &[AttemptRecord]) -> String {
    if attempts.is_empty() {
        return "<p class=\"muted\">No start recorded yet.</p>".to_owned();
    }
    let longest = attempts
        .iter()
        .map(|a| a.duration_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let slot = WIDTH / attempts.len() as f64;
    let bar = (slot * 0.7).clamp(2.0, 24.0);
    let plot = HEIGHT - TOP - BOTTOM;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"Duration of the last {n} start attempts\" \
         preserveAspectRatio=\"none\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line x1=\"0\" y1=\"{base}\" x2=\"{WIDTH}\" y2=\"{base}\" class=\"axis\"/>\
         <text x=\"2\" y=\"11\" class=\"label\">{top}</text>",
        n = attempts.len(),
        base = HEIGHT - BOTTOM,
        top = seconds(longest as u64),
    );
    for (i, attempt) in attempts.iter().rev().enumerate() {
        let height = (attempt.duration_ms as f64 / longest * plot).max(1.0);
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let y = HEIGHT - BOTTOM - height;
        let failed = attempt.outcome != AttemptOutcome::Success;
        let title = format!(
            "{} · attempt {} · {} · {}{}",
            attempt.started_at.format("%Y-%m-%d %H:%M:%S"),
            attempt.attempt,
            seconds(attempt.duration_ms),
            attempt.outcome.as_str(),
            attempt
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
        );
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" \
             class=\"{class}\" data-outcome=\"{outcome}\"><title>{title}</title></rect>",
            class = if failed { "bar failed" } else { "bar" },
            outcome = attempt.outcome.as_str(),
            title = escape(&title),
        );
        if failed {
            let cx = x + bar / 2.0;
            let cy = HEIGHT - BOTTOM + 10.0;
            let _ = write!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{cy:.1}\" class=\"cross\" text-anchor=\"middle\">×</text>"
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn attempt(ms: u64, outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord {
            service_id: "llm".into(),
            attempt: 1,
            machine_id: None,
            target_url: "http://x".into(),
            starter: "command".into(),
            started_at: Utc::now(),
            duration_ms: ms,
            outcome,
            error: (outcome != AttemptOutcome::Success).then(|| "exited <1>".into()),
        }
    }

    #[test]
    fn one_bar_per_attempt_scaled_to_the_longest_with_failures_marked() {
        let svg = cold_starts(&[
            attempt(2000, AttemptOutcome::Success),
            attempt(500, AttemptOutcome::Failed),
            attempt(1000, AttemptOutcome::Success),
        ]);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches("class=\"bar failed\"").count(), 1);
        assert_eq!(svg.matches('×').count(), 1);
        // Oldest first: the 1 s start, then the failure, then the 2 s start at full height.
        let first = svg.find("data-outcome=\"success\"").unwrap();
        let failed = svg.find("data-outcome=\"failed\"").unwrap();
        assert!(first < failed);
        assert!(svg.contains("height=\"124.0\""), "{svg}");
        assert!(svg.contains("exited &lt;1&gt;"), "error text is escaped");
        assert!(svg.contains(">2.0 s</text>"));
    }

    #[test]
    fn no_history_is_said_in_words() {
        assert!(cold_starts(&[]).contains("No start recorded yet"));
    }
}
