//! One test per row of the transition table in the module doc: events in, effects out, no
//! runtime, no clock, no I/O.

use std::time::Duration;

use tokio::sync::oneshot;

use super::*;
use crate::events::ActivityKind;
use crate::service::queue::Admission;
use crate::spec::StartPolicy;

const IDLE: Duration = Duration::from_secs(300);

fn target(url: &str, is_fallback_url: bool) -> Target {
    Target {
        machine: None,
        base_url: url.into(),
        rule: None,
        is_fallback_url,
    }
}

fn settings(retry_count: u32, targets: Vec<Target>, queue_size: usize) -> Settings {
    let policy = StartPolicy {
        retry_count,
        retry_delay: Duration::from_millis(100),
        backoff_factor: 1.0,
        ..StartPolicy::default()
    };
    Settings {
        service_id: Arc::from("svc"),
        plan: Arc::new(Plan { targets, policy }),
        starter: "command",
        idle_timeout: Some(IDLE),
        start_timeout: Duration::from_secs(120),
        queue_size,
    }
}

/// A service with one target, no retries, a queue of 2.
fn cold() -> Lifecycle {
    Lifecycle::new(settings(0, vec![target("http://a", false)], 2))
}

/// A fixed point in time and offsets from it: the tests never read the clock twice.
struct Clock {
    start: Now,
}

impl Clock {
    fn new() -> Clock {
        Clock { start: Now::read() }
    }
    fn at(&self, ms: u64) -> Now {
        Now {
            instant: self.start.instant + Duration::from_millis(ms),
            wall: self.start.wall + chrono::Duration::milliseconds(ms as i64),
        }
    }
}

fn waiter(clock: &Clock, id: &str) -> (Waiter, oneshot::Receiver<Admission>) {
    let (reply, answer) = oneshot::channel();
    let waiter = Waiter {
        reply,
        deadline: clock.at(30_000).instant,
        enqueued_at: clock.at(0).instant,
        request_id: Some(id.to_owned()),
    };
    (waiter, answer)
}

/// The kinds of the emitted events, in order.
fn emitted(fx: &[Effect]) -> Vec<ActivityKind> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Emit { detail, .. } => Some(detail.kind()),
            _ => None,
        })
        .collect()
}

/// The effects other than events and persistence, by name.
fn actions(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| {
            Some(match e {
                Effect::Emit { .. } | Effect::Persist => return None,
                Effect::Admit { .. } => "admit",
                Effect::Refuse { .. } => "refuse",
                Effect::Release { .. } => "release",
                Effect::Fail { .. } => "fail",
                Effect::AnswerStart { .. } => "answer-start",
                Effect::AnswerStop { .. } => "answer-stop",
                Effect::Launch { .. } => "launch",
                Effect::AbortTask => "abort",
                Effect::StopBackend { .. } => "stop-backend",
                Effect::ArmRetry { .. } => "arm-retry",
                Effect::ArmIdleCheck { .. } => "arm-idle",
                Effect::ArmHealthCheck { .. } => "arm-health",
                Effect::CheckHealth { .. } => "check-health",
                Effect::CloseIfIdle { .. } => "close-if-idle",
                Effect::WatchExit { .. } => "watch-exit",
                Effect::AwaitReadiness { .. } => "await-readiness",
                Effect::Open(_) => "open",
                Effect::Close => "close",
                Effect::RecordAttempt(_) => "record-attempt",
            })
        })
        .collect()
}

fn persisted(fx: &[Effect]) -> bool {
    fx.iter().any(|e| matches!(e, Effect::Persist))
}

fn attempt_ok(run: u64) -> Event {
    Event::AttemptDone {
        run,
        outcome: Ok(Attempted { exit: None }),
        elapsed: Duration::from_millis(40),
    }
}

fn attempt_failed(run: u64) -> Event {
    Event::AttemptDone {
        run,
        outcome: Err(StartFailure::Exited {
            exit: ExitInfo {
                code: Some(3),
                signal: None,
                stderr_tail: vec!["model file missing".into()],
            },
        }),
        elapsed: Duration::from_millis(40),
    }
}

/// Drives a cold service to `starting` with one queued request.
fn starting(clock: &Clock) -> (Lifecycle, oneshot::Receiver<Admission>) {
    let mut lc = cold();
    let (w, answer) = waiter(clock, "r1");
    lc.step(Event::Acquire(w), clock.at(0));
    assert_eq!(lc.phase(), Phase::Starting);
    (lc, answer)
}

/// Drives a cold service to `ready` (its queued request released).
fn ready(clock: &Clock) -> Lifecycle {
    let (mut lc, _answer) = starting(clock);
    let run = lc.run();
    lc.step(attempt_ok(run), clock.at(50));
    assert_eq!(lc.phase(), Phase::Ready);
    lc
}

fn stopping(clock: &Clock) -> Lifecycle {
    let mut lc = ready(clock);
    let (reply, _) = oneshot::channel();
    lc.step(Event::Stop(reply), clock.at(60));
    assert_eq!(lc.phase(), Phase::Stopping);
    lc
}

fn failed(clock: &Clock) -> Lifecycle {
    let (mut lc, _answer) = starting(clock);
    let run = lc.run();
    lc.step(attempt_failed(run), clock.at(50));
    assert_eq!(lc.phase(), Phase::Failed);
    lc
}

#[test]
fn ready_request_is_admitted_at_once() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let (w, _answer) = waiter(&clock, "r2");
    let fx = lc.step(Event::Acquire(w), clock.at(70));
    assert_eq!(actions(&fx), ["admit"]);
    assert!(emitted(&fx).is_empty());
    assert_eq!(lc.phase(), Phase::Ready);
}

#[test]
fn cold_request_queues_and_starts_once() {
    let clock = Clock::new();
    let mut lc = cold();
    let (w, _answer) = waiter(&clock, "r1");
    let fx = lc.step(Event::Acquire(w), clock.at(0));
    assert_eq!(lc.phase(), Phase::Starting);
    assert_eq!(
        emitted(&fx),
        [
            ActivityKind::Queued,
            ActivityKind::StartRequested,
            ActivityKind::RouteDecision,
            ActivityKind::StartAttempt
        ]
    );
    assert_eq!(actions(&fx), ["launch"]);
    assert!(persisted(&fx));
    assert_eq!(lc.queue().len(), 1);
    assert_eq!(lc.last_started_at(), Some(clock.at(0).wall));
}

#[test]
fn starting_request_only_queues() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let (w, _b) = waiter(&clock, "r2");
    let fx = lc.step(Event::Acquire(w), clock.at(10));
    assert_eq!(emitted(&fx), [ActivityKind::Queued]);
    assert!(
        actions(&fx).is_empty(),
        "no second start: {:?}",
        actions(&fx)
    );
    assert_eq!(lc.queue().len(), 2);
}

#[test]
fn full_queue_refuses_with_queue_full() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let (w2, _b) = waiter(&clock, "r2");
    lc.step(Event::Acquire(w2), clock.at(10));
    let (w3, _c) = waiter(&clock, "r3");
    let fx = lc.step(Event::Acquire(w3), clock.at(20));
    assert_eq!(emitted(&fx), [ActivityKind::QueueRejected]);
    match fx.last() {
        Some(Effect::Refuse { waiter, error }) => {
            assert_eq!(waiter.request_id.as_deref(), Some("r3"));
            assert_eq!(error.problem_type(), "queue-full");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(lc.queue().len(), 2);
}

#[test]
fn cold_start_command_is_initiated() {
    let clock = Clock::new();
    let mut lc = cold();
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Start(reply), clock.at(0));
    assert_eq!(lc.phase(), Phase::Starting);
    assert_eq!(actions(&fx), ["launch", "answer-start"]);
    assert!(matches!(
        fx.last(),
        Some(Effect::AnswerStart {
            answer: Ok(StartAccepted::Initiated),
            ..
        })
    ));
}

#[test]
fn starting_start_command_is_a_conflict() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let run = lc.run();
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Start(reply), clock.at(10));
    match fx.as_slice() {
        [Effect::AnswerStart { answer: Err(e), .. }] => assert_eq!(e.problem_type(), "conflict"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(lc.run(), run, "nothing changed");
}

#[test]
fn stopping_request_or_start_waits_for_the_stop_then_starts() {
    let clock = Clock::new();
    let mut lc = stopping(&clock);
    let (w, _a) = waiter(&clock, "r2");
    let fx = lc.step(Event::Acquire(w), clock.at(70));
    assert_eq!(emitted(&fx), [ActivityKind::Queued]);
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Start(reply), clock.at(71));
    assert!(matches!(
        fx.as_slice(),
        [Effect::AnswerStart { answer: Ok(_), .. }]
    ));
    assert_eq!(lc.phase(), Phase::Stopping);

    let run = lc.run();
    let fx = lc.step(
        Event::StopDone {
            run,
            outcome: Ok(()),
        },
        clock.at(80),
    );
    assert_eq!(lc.phase(), Phase::Starting);
    assert_eq!(
        emitted(&fx),
        [
            ActivityKind::Stopped,
            ActivityKind::StartRequested,
            ActivityKind::RouteDecision,
            ActivityKind::StartAttempt
        ]
    );
}

#[test]
fn starting_attempt_ready_opens_and_releases_the_queue() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let run = lc.run();
    let fx = lc.step(attempt_ok(run), clock.at(50));
    assert_eq!(lc.phase(), Phase::Ready);
    assert_eq!(
        actions(&fx),
        [
            "record-attempt",
            "open",
            "release",
            "arm-idle",
            "arm-health"
        ]
    );
    assert_eq!(
        emitted(&fx),
        [
            ActivityKind::Started,
            ActivityKind::ReadinessChanged,
            ActivityKind::Dequeued
        ]
    );
    let released = fx.iter().find_map(|e| match e {
        Effect::Release { waiters, route } => Some((waiters, route)),
        _ => None,
    });
    let (waiters, route) = released.expect("release");
    assert_eq!(route.base_url, "http://a");
    assert_eq!(waiters.len(), 1);
    assert_eq!(
        waiters[0].1,
        Duration::from_millis(50),
        "waited since queued"
    );
    assert!(lc.queue().is_empty());
    assert!(lc.last_error().is_none());
}

#[test]
fn starting_attempt_failed_with_retries_left_arms_a_retry() {
    let clock = Clock::new();
    let mut lc = Lifecycle::new(settings(1, vec![target("http://a", false)], 2));
    let (w, _a) = waiter(&clock, "r1");
    lc.step(Event::Acquire(w), clock.at(0));
    let run = lc.run();
    let fx = lc.step(attempt_failed(run), clock.at(50));
    assert_eq!(lc.phase(), Phase::Starting);
    assert_eq!(emitted(&fx), [ActivityKind::StartRetry]);
    assert_eq!(actions(&fx), ["record-attempt", "arm-retry"]);
    assert!(matches!(
        fx.last(),
        Some(Effect::ArmRetry { after, .. }) if *after == Duration::from_millis(100)
    ));
    assert_eq!(lc.attempts(), 2);
}

#[test]
fn starting_retry_due_launches_the_next_attempt() {
    let clock = Clock::new();
    let mut lc = Lifecycle::new(settings(1, vec![target("http://a", false)], 2));
    let (w, _a) = waiter(&clock, "r1");
    lc.step(Event::Acquire(w), clock.at(0));
    let run = lc.run();
    lc.step(attempt_failed(run), clock.at(50));
    let fx = lc.step(Event::RetryDue { run }, clock.at(150));
    assert_eq!(emitted(&fx), [ActivityKind::StartAttempt]);
    assert_eq!(actions(&fx), ["launch"]);
}

#[test]
fn starting_attempt_failed_moves_to_the_fallback_at_once() {
    let clock = Clock::new();
    let targets = vec![target("http://a", false), target("http://b", true)];
    let mut lc = Lifecycle::new(settings(0, targets, 2));
    let (w, _a) = waiter(&clock, "r1");
    lc.step(Event::Acquire(w), clock.at(0));
    let run = lc.run();
    let fx = lc.step(attempt_failed(run), clock.at(50));
    assert_eq!(
        emitted(&fx),
        [ActivityKind::StartFallback, ActivityKind::StartAttempt]
    );
    match fx.last() {
        Some(Effect::Launch { target, .. }) => assert_eq!(target.base_url, "http://b"),
        other => panic!("expected a launch on the fallback, got {other:?}"),
    }
}

#[test]
fn starting_attempt_failed_with_nothing_left_fails_the_waiters_with_the_diagnosis() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let run = lc.run();
    let fx = lc.step(attempt_failed(run), clock.at(50));
    assert_eq!(lc.phase(), Phase::Failed);
    assert!(persisted(&fx));
    assert_eq!(emitted(&fx), [ActivityKind::StartFailed]);
    match fx.last() {
        Some(Effect::Fail {
            waiters,
            error:
                ServiceError::StartFailed {
                    attempts,
                    last_error,
                    ..
                },
        }) => {
            assert_eq!(waiters.len(), 1);
            assert_eq!(*attempts, 1);
            let StartFailure::Exited { exit } = last_error else {
                panic!("expected an exit diagnosis, got {last_error:?}");
            };
            assert_eq!(exit.code, Some(3));
            assert_eq!(exit.stderr_tail, ["model file missing"]);
        }
        other => panic!("expected the waiters to fail, got {other:?}"),
    }
    let recorded = fx.iter().find_map(|e| match e {
        Effect::RecordAttempt(r) => Some(r),
        _ => None,
    });
    assert_eq!(recorded.expect("attempt").outcome, AttemptOutcome::Failed);
}

#[test]
fn starting_stop_fails_the_waiters_aborts_and_stops() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Stop(reply), clock.at(10));
    assert_eq!(lc.phase(), Phase::Stopping);
    assert_eq!(
        actions(&fx),
        ["fail", "close", "abort", "stop-backend", "answer-stop"]
    );
}

#[test]
fn ready_stop_closes_and_stops_the_backend() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Stop(reply), clock.at(60));
    assert_eq!(lc.phase(), Phase::Stopping);
    assert_eq!(emitted(&fx), [ActivityKind::StopRequested]);
    assert_eq!(
        actions(&fx),
        ["close", "abort", "stop-backend", "answer-stop"]
    );
}

#[test]
fn cold_stop_is_a_conflict() {
    let clock = Clock::new();
    let mut lc = cold();
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Stop(reply), clock.at(0));
    match fx.as_slice() {
        [Effect::AnswerStop { answer: Err(e), .. }] => assert_eq!(e.problem_type(), "conflict"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(lc.phase(), Phase::Cold);
}

#[test]
fn ready_idle_due_and_idle_shuts_down() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let run = lc.run();
    let fx = lc.step(Event::IdleDue { run }, clock.at(300_000));
    assert!(matches!(fx.as_slice(), [Effect::CloseIfIdle { idle }] if *idle == IDLE));
    let fx = lc.step(Event::IdleChecked(Ok(())), clock.at(300_000));
    assert_eq!(lc.phase(), Phase::Stopping);
    assert_eq!(
        emitted(&fx),
        [ActivityKind::IdleShutdown, ActivityKind::StopRequested]
    );
    assert!(actions(&fx).contains(&"stop-backend"));
}

#[test]
fn ready_idle_due_but_busy_checks_again_later() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let run = lc.run();
    lc.step(Event::IdleDue { run }, clock.at(300_000));
    let fx = lc.step(
        Event::IdleChecked(Err(Duration::from_secs(7))),
        clock.at(300_000),
    );
    assert_eq!(lc.phase(), Phase::Ready);
    assert!(matches!(
        fx.as_slice(),
        [Effect::ArmIdleCheck { after, .. }] if *after == Duration::from_secs(7)
    ));
}

#[test]
fn ready_health_due_or_unreachable_checks_health_once() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let run = lc.run();
    let fx = lc.step(Event::HealthDue { run }, clock.at(1000));
    assert_eq!(actions(&fx), ["check-health"]);
    let fx = lc.step(Event::Unreachable, clock.at(1001));
    assert!(fx.is_empty(), "a check is already in flight");
}

#[test]
fn ready_health_ok_arms_the_next_check() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let run = lc.run();
    lc.step(Event::Unreachable, clock.at(1000));
    let fx = lc.step(
        Event::HealthChecked {
            run,
            outcome: Ok(()),
        },
        clock.at(1010),
    );
    assert_eq!(actions(&fx), ["arm-health"]);
    assert_eq!(lc.phase(), Phase::Ready);
}

#[test]
fn ready_health_failed_or_process_exit_leaves_ready() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let run = lc.run();
    lc.step(Event::HealthDue { run }, clock.at(1000));
    let fx = lc.step(
        Event::HealthChecked {
            run,
            outcome: Err("connection refused".into()),
        },
        clock.at(1010),
    );
    assert_eq!(lc.phase(), Phase::Failed);
    assert_eq!(actions(&fx), ["close"]);
    assert_eq!(emitted(&fx), [ActivityKind::ReadinessChanged]);
    assert!(lc.route().is_none());

    let mut lc = ready(&clock);
    let run = lc.run();
    lc.step(
        Event::ProcessExited {
            run,
            info: ExitInfo {
                code: Some(1),
                signal: None,
                stderr_tail: vec![],
            },
        },
        clock.at(1000),
    );
    assert_eq!(lc.phase(), Phase::Failed);
    let error = lc.last_error().expect("a reason").to_string();
    assert!(error.contains("exited with code 1"), "{error}");
}

#[test]
fn stopping_stop_done_goes_cold() {
    let clock = Clock::new();
    let mut lc = stopping(&clock);
    let run = lc.run();
    let fx = lc.step(
        Event::StopDone {
            run,
            outcome: Err("SIGKILL needed".into()),
        },
        clock.at(100),
    );
    assert_eq!(lc.phase(), Phase::Cold);
    assert_eq!(emitted(&fx), [ActivityKind::Stopped]);
    assert!(actions(&fx).is_empty());
    assert!(
        lc.last_error()
            .expect("stop error")
            .to_string()
            .contains("SIGKILL")
    );
}

#[test]
fn failed_request_starts_afresh() {
    let clock = Clock::new();
    let mut lc = failed(&clock);
    let (w, _a) = waiter(&clock, "r2");
    let fx = lc.step(Event::Acquire(w), clock.at(100));
    assert_eq!(lc.phase(), Phase::Starting);
    assert_eq!(lc.attempts(), 1, "a fresh start counts from 1");
    assert_eq!(actions(&fx), ["launch"]);
}

#[test]
fn failed_stop_stops_the_backend() {
    let clock = Clock::new();
    let mut lc = failed(&clock);
    let (reply, _) = oneshot::channel();
    let fx = lc.step(Event::Stop(reply), clock.at(100));
    assert_eq!(lc.phase(), Phase::Stopping);
    assert!(actions(&fx).contains(&"stop-backend"));
}

#[test]
fn adopting_probed_ready_takes_over_and_opens() {
    let clock = Clock::new();
    let (mut lc, fx) = Lifecycle::adopting(
        settings(0, vec![target("http://a", false)], 2),
        target("http://a", false),
    );
    assert!(persisted(&fx));
    assert_eq!(lc.phase().public(), State::Cold);
    let run = lc.run();
    let fx = lc.step(
        Event::AdoptProbed {
            run,
            ready: true,
            process: None,
        },
        clock.at(10),
    );
    assert_eq!(lc.phase(), Phase::Ready);
    assert!(lc.adopted());
    assert_eq!(actions(&fx), ["open", "release", "arm-idle", "arm-health"]);
}

#[test]
fn adopting_probed_down_with_its_process_alive_waits_for_it_without_a_launch() {
    let clock = Clock::new();
    let (mut lc, _) = Lifecycle::adopting(
        settings(0, vec![target("http://a", false)], 2),
        target("http://a", false),
    );
    let (w, _a) = waiter(&clock, "r1");
    lc.step(Event::Acquire(w), clock.at(1));
    let run = lc.run();
    let (_notifier, exit) = crate::starters::ExitWatch::channel();
    let fx = lc.step(
        Event::AdoptProbed {
            run,
            ready: false,
            process: Some(exit),
        },
        clock.at(10),
    );
    assert_eq!(lc.phase(), Phase::Starting);
    assert!(lc.adopted());
    assert_eq!(actions(&fx), ["await-readiness"]);
    assert!(persisted(&fx));
}

#[test]
fn adopting_probed_down_goes_cold_and_starts_if_wanted() {
    let clock = Clock::new();
    let (mut lc, _) = Lifecycle::adopting(
        settings(0, vec![target("http://a", false)], 2),
        target("http://a", false),
    );
    let (w, _a) = waiter(&clock, "r1");
    let fx = lc.step(Event::Acquire(w), clock.at(1));
    assert_eq!(emitted(&fx), [ActivityKind::Queued]);
    let run = lc.run();
    let fx = lc.step(
        Event::AdoptProbed {
            run,
            ready: false,
            process: None,
        },
        clock.at(10),
    );
    assert_eq!(lc.phase(), Phase::Starting);
    assert_eq!(actions(&fx), ["launch"]);
}

#[test]
fn reports_of_an_older_run_are_ignored() {
    let clock = Clock::new();
    let mut lc = stopping(&clock);
    let stale = lc.run() - 1;
    let run_before = lc.run();
    for event in [
        attempt_ok(stale),
        Event::RetryDue { run: stale },
        Event::IdleDue { run: stale },
        Event::HealthDue { run: stale },
        Event::StopDone {
            run: stale,
            outcome: Ok(()),
        },
        Event::AdoptProbed {
            run: stale,
            ready: true,
            process: None,
        },
    ] {
        let fx = lc.step(event, clock.at(100));
        assert!(fx.is_empty(), "stale report acted on: {fx:?}");
    }
    assert_eq!((lc.phase(), lc.run()), (Phase::Stopping, run_before));
}

#[test]
fn ready_reconfigure_applies_in_place_and_rearms_the_idle_check() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    let mut changed = settings(0, vec![target("http://a", false)], 7);
    changed.idle_timeout = Some(Duration::from_secs(5));
    let fx = lc.step(Event::Reconfigure(changed), clock.at(100));
    assert_eq!(lc.phase(), Phase::Ready, "nothing restarts");
    assert!(matches!(
        fx.as_slice(),
        [Effect::ArmIdleCheck { after, .. }] if *after == Duration::from_secs(5)
    ));
    assert_eq!(lc.queue().capacity(), 7);
}

#[test]
fn shutting_down_answers_the_queue_and_refuses_what_would_wait_or_start() {
    let clock = Clock::new();
    let (mut lc, _a) = starting(&clock);
    let fx = lc.step(Event::ShuttingDown, clock.at(10));
    match fx.as_slice() {
        [Effect::Fail { waiters, error }] => {
            assert_eq!(waiters.len(), 1);
            assert_eq!(error.problem_type(), "shutting-down");
        }
        other => panic!("expected the queue to be failed, got {other:?}"),
    }
    assert_eq!(lc.queue().len(), 0);

    let (w, _b) = waiter(&clock, "r2");
    let fx = lc.step(Event::Acquire(w), clock.at(20));
    match fx.as_slice() {
        [Effect::Refuse { error, .. }] => assert_eq!(error.problem_type(), "shutting-down"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (reply, _c) = oneshot::channel();
    let fx = lc.step(Event::Start(reply), clock.at(30));
    match fx.as_slice() {
        [
            Effect::AnswerStart {
                answer: Err(error), ..
            },
        ] => {
            assert_eq!(error.problem_type(), "shutting-down")
        }
        other => panic!("expected the start refused, got {other:?}"),
    }
}

#[test]
fn shutting_down_ready_still_admits_for_the_grace_period() {
    let clock = Clock::new();
    let mut lc = ready(&clock);
    assert!(actions(&lc.step(Event::ShuttingDown, clock.at(60))).is_empty());
    let (w, _answer) = waiter(&clock, "r2");
    let fx = lc.step(Event::Acquire(w), clock.at(70));
    assert_eq!(actions(&fx), ["admit"]);
}
