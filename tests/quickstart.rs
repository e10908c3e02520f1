//! docs/quickstart.md, run: a live `hestia serve` on the sample config (the real binary, its own
//! `hestia sim` backends, SQLite in a tempdir) and every `curl` example of the page, in order,
//! each output compared with the block under it (`…` matches anything within a line).

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{free_port, hestia_exe};

/// One example: a shell command and the output the page promises.
struct Example {
    command: String,
    expected: String,
}

/// ```` ```sh ```` blocks made of one `curl` command and followed by a ```` ```text ```` block.
fn examples(page: &str) -> Vec<Example> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push((lang.trim().to_owned(), body.join("\n")));
        }
    }
    blocks
        .windows(2)
        .filter(|pair| pair[0].0 == "sh" && pair[0].1.starts_with("curl ") && pair[1].0 == "text")
        .map(|pair| Example {
            command: pair[0].1.clone(),
            expected: pair[1].1.clone(),
        })
        .collect()
}

/// Whether `actual` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = parts.split_first().expect("split yields one part");
    let Some(mut tail) = actual.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return tail.ends_with(part);
        }
        match tail.find(part) {
            Some(at) => tail = &tail[at + part.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}

#[test]
fn the_ellipsis_matches_anything_within_a_line() {
    assert!(matches(
        "status 200, waited … ms",
        "status 200, waited 1519 ms"
    ));
    assert!(matches("{\"a\":1,…\"c\":3}", "{\"a\":1,\"b\":2,\"c\":3}"));
    assert!(!matches("{\"a\":1,…\"c\":3}", "{\"a\":1,\"b\":2,\"c\":4}"));
    assert!(!matches("202", "409"));
    assert!(matches("a…b…", "a-b-c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curl_example_of_the_quickstart_gives_the_output_shown() {
    let root = env!("CARGO_MANIFEST_DIR");
    let page = std::fs::read_to_string(format!("{root}/docs/quickstart.md")).expect("the page");
    let examples = examples(&page);
    assert!(
        examples.len() >= 10,
        "the quickstart lost its examples ({} left)",
        examples.len()
    );

    // Given Hestia serving the sample config, as the page's first step does
    let dir = tempfile::tempdir().expect("tempdir");
    let address = format!("127.0.0.1:{}", free_port());
    let mut serve = tokio::process::Command::new(hestia_exe())
        .current_dir(root)
        .args(["serve", "--config", "hestia_config.yml"])
        .env("HESTIA_LISTEN", &address)
        .env(
            "HESTIA_DATABASE_URL",
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("hestia.db").display()
            ),
        )
        .env("HESTIA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("hestia serve starts");
    let ready = format!("http://{address}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(&ready).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Hestia never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // When each example runs in order, then it prints what the page shows
    let mut failures = Vec::new();
    for example in &examples {
        let command = example.command.replace("127.0.0.1:8080", &address);
        let output = tokio::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .await
            .expect("sh runs");
        let actual = String::from_utf8_lossy(&output.stdout);
        let actual: Vec<&str> = actual.trim_end().lines().collect();
        let expected: Vec<&str> = example.expected.lines().collect();
        let same = actual.len() == expected.len()
            && expected.iter().zip(&actual).all(|(e, a)| matches(e, a));
        if !same {
            failures.push(format!(
                "$ {}\nexpected:\n{}\ngot:\n{}",
                example.command,
                example.expected,
                actual.join("\n")
            ));
        }
    }
    // SIGTERM: Hestia stops the backends it started before it exits
    if let Some(pid) = serve.id() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(15), serve.wait())
        .await
        .is_err()
    {
        serve.start_kill().expect("kill hestia");
    }
    assert!(
        failures.is_empty(),
        "docs/quickstart.md disagrees with Hestia:\n\n{}",
        failures.join("\n\n")
    );
}
