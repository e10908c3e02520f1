//! The OpenAI-compatible endpoint (`/openai/v1`) through the real gateway, with clients that know
//! nothing of Hestia: curl, and the `openai` Python package (pip, in the venv `.ci/python-tools`
//! sets up). Each gets a streamed chat completion from a simulated model server Hestia starts on
//! demand, and lists the models.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::{Sim, TestServer};

/// Two services: `llm` serves llama3 (two names), `coder` serves qwen-coder. Both start cold.
async fn two_model_servers() -> TestServer {
    let llm = Sim::new("llm")
        .startup_delay_ms(300)
        .key("models: [llama3, \"llama3:8b\"]");
    let coder = Sim::new("coder").key("models: [qwen-coder]");
    TestServer::start(&[&llm, &coder], "").await
}

async fn curl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .expect("curl runs (install it: apt-get install curl)");
    assert!(output.status.success(), "curl {args:?} failed: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_a_streamed_chat_completion_from_a_model_started_on_demand() {
    // Given two cold model servers behind the OpenAI-compatible base URL
    let server = two_model_servers().await;
    let base = format!("{}/openai/v1", server.url);

    // When curl lists the models, then each configured model is there with its service and state
    let list: Value =
        serde_json::from_str(&curl(&[&format!("{base}/models")]).await).expect("a JSON model list");
    assert_eq!(list["object"], "list");
    let models: Vec<(String, String, String)> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            let text = |key: &str| m[key].as_str().unwrap_or("").to_owned();
            (text("id"), text("service"), text("state"))
        })
        .collect();
    let cold = |id: &str, service: &str| (id.to_owned(), service.to_owned(), "cold".to_owned());
    assert_eq!(
        models,
        [
            cold("llama3", "llm"),
            cold("llama3:8b", "llm"),
            cold("qwen-coder", "coder")
        ]
    );

    // When curl asks for a streamed chat completion from llama3:8b
    let body = r#"{"model": "llama3:8b", "stream": true, "messages": [{"role": "user", "content": "hi there"}]}"#;
    let stream = curl(&[
        "-N",
        "-H",
        "content-type: application/json",
        "-d",
        body,
        &format!("{base}/chat/completions"),
    ])
    .await;

    // Then the answer streams back event by event from the llm server, which was started for it
    let events: Vec<&str> = stream
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{stream}");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|chunk| {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "llm heard: hi there");
    let status: Value = server
        .get("/v1/services/llm/status")
        .await
        .json()
        .await
        .expect("status");
    assert_eq!(status["state"], "ready");
    let coder: Value = server
        .get("/v1/services/coder/status")
        .await
        .json()
        .await
        .expect("status");
    assert_eq!(coder["state"], "cold", "only the model's service starts");

    // And an unknown model is a 404 problem naming the known ones
    let response = server
        .client()
        .post(format!("{base}/chat/completions"))
        .json(&serde_json::json!({"model": "gpt-5", "messages": []}))
        .send()
        .await
        .expect("hestia answers");
    assert_eq!(response.status(), 404);
    let problem: Value = response.json().await.expect("problem+json");
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("/unknown-model")
    );
    let detail = problem["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("`gpt-5`") && detail.contains("llama3, llama3:8b, qwen-coder"),
        "{detail}"
    );
    server.stop().await;
}

/// The venv `.ci/python-tools` keeps (`HESTIA_VENV`, default `$HOME/.cache/hestia/venv`).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("HESTIA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/hestia/venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run .ci/python-tools (it installs the pinned openai package)",
        python.display()
    );
    python
}

const OPENAI_CLIENT: &str = r#"
import sys
import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="not-checked")
print("models", ",".join(sorted(m.id for m in client.models.list())))
stream = client.chat.completions.create(
    model="qwen-coder",
    messages=[{"role": "user", "content": "write a haiku"}],
    stream=True,
)
print("stream", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
whole = client.chat.completions.create(
    model="llama3", messages=[{"role": "user", "content": "hello"}]
)
print("whole", whole.choices[0].message.content)
print("embedding", len(client.embeddings.create(model="llama3", input="abc").data[0].embedding))
try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as error:
    print("unknown", error.status_code)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_client_works_unchanged_against_the_base_url() {
    // Given two cold model servers behind the OpenAI-compatible base URL
    let server = two_model_servers().await;

    // When the official openai client, pointed at it, lists, streams, asks and embeds
    let output = tokio::process::Command::new(venv_python())
        .args(["-c", OPENAI_CLIENT, &format!("{}/openai/v1", server.url)])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Then every call got its answer from the right model server
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "models llama3,llama3:8b,qwen-coder",
            "stream coder heard: write a haiku",
            "whole llm heard: hello",
            "embedding 3",
            "unknown 404",
        ]
    );
    server.stop().await;
}
