//! `hestia serve`'s allocator settings (`hestia::allocator`): the real binary sets them for itself
//! by executing itself again, and the services it starts inherit none of them.

mod support;

use hestia::allocator::{JEMALLOC_SETTINGS, TUNABLES};
use hestia_actors::starters::command::{ALLOCATOR_MARKER, GLIBC_TUNABLES, JEMALLOC_CONF};
use support::{HestiaProcess, Sim, config_yaml};

/// A process's environment, from `/proc/PID/environ`.
fn environment(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("readable environ");
    raw.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (key, value) = text.split_once('=').unwrap_or((&text, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn value_of<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_with_its_allocator_settings_and_its_services_inherit_none() {
    // Given Hestia started without any allocator setting of its own, serving a command service
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::new("plain");
    std::fs::write(
        dir.path().join("hestia_config.yml"),
        config_yaml(dir.path(), &[&sim], ""),
    )
    .expect("config");
    let hestia = HestiaProcess::serve(dir.path(), &[]).await;

    // Then it runs (same pid, executed again) with jemalloc's and glibc's settings
    let own = environment(hestia.child.id());
    assert_eq!(value_of(&own, JEMALLOC_CONF), Some(JEMALLOC_SETTINGS));
    // (glibc parses its variable in place, cutting the copy /proc shows after the first tunable)
    let tunables = value_of(&own, GLIBC_TUNABLES).expect("GLIBC_TUNABLES set");
    assert!(
        !tunables.is_empty() && TUNABLES.starts_with(tunables),
        "{tunables}"
    );

    // When it starts the service, the backend's environment has none of them
    let started = hestia.post("/v1/services/plain/start?wait=true").await;
    assert_eq!(started.status(), 200);
    let pid = hestia.status("plain").await.expect("status")["pid"]
        .as_u64()
        .expect("pid") as u32;
    let backend = environment(pid);
    for key in [JEMALLOC_CONF, GLIBC_TUNABLES, ALLOCATOR_MARKER] {
        assert_eq!(value_of(&backend, key), None, "the backend inherited {key}");
    }
    hestia.stop().await;
}
