//! The fake's project-setup endpoints, as `hestia semaphore bootstrap` uses them: projects,
//! access keys, inventories, repositories, Variable Groups (`environment`), templates, API tokens
//! and the current user. They follow Semaphore's handlers (see `semaphore-contract.md` and the
//! v2.16 `api-docs.yml`): `201` with the object on create, arrays on list, `400` with an empty
//! body for bad JSON, `400 {"error":…}` for a body whose `project_id` differs from the path's and
//! for an empty template name, API tokens listed truncated to 8 characters in the 2.16 shape.
//! A template created here is runnable: it is added to the fake's scripted templates (succeeding).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::USER_ID;
use super::http::{empty, error_body, json_body, timestamp};
use super::options::{ApiShape, FakeTemplate};
use super::projects::check_project;
use super::state::{FakeState, lock};

/// Everything created through these endpoints.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    projects: BTreeMap<i64, CreatedProject>,
    /// Keys, inventories, repositories and Variable Groups by kind, each with its own id series
    /// (Semaphore's tables), as the JSON Semaphore returns.
    objects: BTreeMap<Kind, BTreeMap<i64, Value>>,
    /// Created templates: id → (project, fields the template JSON shows).
    templates: BTreeMap<i64, (i64, Value)>,
    tokens: Vec<CreatedToken>,
}

#[derive(Debug, Clone)]
pub(super) struct CreatedProject {
    id: i64,
    name: String,
    created: DateTime<Utc>,
}

impl CreatedProject {
    pub(super) fn json(&self, shape: ApiShape) -> Value {
        match shape {
            ApiShape::V2_16 => json!({
                "id": self.id, "name": self.name, "created": timestamp(self.created), "type": "",
            }),
            ApiShape::V2_10 => json!({
                "id": self.id, "name": self.name, "created": timestamp(self.created),
                "alert": false, "alert_chat": null, "max_parallel_tasks": 0, "type": "",
            }),
        }
    }
}

#[derive(Debug, Clone)]
struct CreatedToken {
    id: String,
    created: DateTime<Utc>,
}

/// The project-scoped objects, each listed and created at its own path the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Key,
    Inventory,
    Repository,
    Environment,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Key,
        Kind::Inventory,
        Kind::Repository,
        Kind::Environment,
    ];

    fn path(self) -> &'static str {
        match self {
            Kind::Key => "/api/project/{pid}/keys",
            Kind::Inventory => "/api/project/{pid}/inventory",
            Kind::Repository => "/api/project/{pid}/repositories",
            Kind::Environment => "/api/project/{pid}/environment",
        }
    }

    /// A new object's fields (its id comes first when it is stored), after the checks this
    /// kind's Semaphore handler makes beyond [`scoped_body`]'s.
    fn fields(self, pid: i64, request: &Value) -> Result<Value, Box<Response>> {
        let name = text(request, "name");
        match self {
            Kind::Key => {
                let kind = text(request, "type");
                if !matches!(kind.as_str(), "none" | "ssh" | "login_password") {
                    return Err(Box::new(error_body(
                        StatusCode::BAD_REQUEST,
                        "Invalid access key type",
                    )));
                }
                // Secrets are stored, never returned.
                Ok(json!({"name": name, "type": kind, "project_id": pid}))
            }
            Kind::Inventory => {
                let kind = text(request, "type");
                if !matches!(
                    kind.as_str(),
                    "static" | "static-yaml" | "file" | "terraform-workspace"
                ) {
                    return Err(Box::new(error_body(
                        StatusCode::BAD_REQUEST,
                        "Not supported inventory type",
                    )));
                }
                Ok(json!({
                    "name": name, "project_id": pid,
                    "inventory": text(request, "inventory"),
                    "ssh_key_id": number(request, "ssh_key_id"),
                    "become_key_id": number(request, "become_key_id"), "type": kind,
                }))
            }
            Kind::Repository => Ok(json!({
                "name": name, "project_id": pid,
                "git_url": text(request, "git_url"), "git_branch": text(request, "git_branch"),
                "ssh_key_id": number(request, "ssh_key_id"),
            })),
            Kind::Environment => {
                let json_text = text(request, "json");
                if serde_json::from_str::<Value>(&json_text).map_or(true, |v| !v.is_object()) {
                    return Err(Box::new(error_body(
                        StatusCode::BAD_REQUEST,
                        "Extra variables must be valid JSON",
                    )));
                }
                Ok(json!({
                    "name": name, "project_id": pid, "password": "",
                    "json": json_text, "env": text(request, "env"), "secrets": [],
                }))
            }
        }
    }
}

impl Catalog {
    pub(super) fn project(&self, pid: i64) -> Option<CreatedProject> {
        lock(&self.inner).projects.get(&pid).cloned()
    }

    pub(super) fn projects_json(&self, shape: ApiShape) -> Vec<Value> {
        lock(&self.inner)
            .projects
            .values()
            .map(|p| p.json(shape))
            .collect()
    }

    pub(super) fn has_token(&self, token: &str) -> bool {
        lock(&self.inner).tokens.iter().any(|t| t.id == token)
    }

    /// Whether template `id` belongs to the project in the path (`seed_project` for the fake's
    /// scripted templates).
    pub(super) fn template_in_project(&self, id: i64, pid: &str, seed_project: i64) -> bool {
        let Ok(pid) = pid.parse::<i64>() else {
            return false;
        };
        match lock(&self.inner).templates.get(&id) {
            Some((project, _)) => *project == pid,
            None => pid == seed_project,
        }
    }

    /// Puts a created template's own fields into its JSON.
    pub(super) fn describe_template(&self, id: i64, value: &mut Value) {
        if let (Some((_, fields)), Some(map)) =
            (lock(&self.inner).templates.get(&id), value.as_object_mut())
            && let Some(fields) = fields.as_object()
        {
            for (key, field) in fields {
                map.insert(key.clone(), field.clone());
            }
        }
    }
}

pub(super) fn routes(router: Router<Arc<FakeState>>) -> Router<Arc<FakeState>> {
    let router = router
        .route("/api/user", get(user))
        .route("/api/user/tokens", get(tokens).post(create_token))
        .route("/api/projects", axum::routing::post(create_project))
        .route(
            "/api/project/{pid}/templates",
            axum::routing::post(create_template),
        );
    Kind::ALL.into_iter().fold(router, |router, kind| {
        let lister = move |State(state): State<Arc<FakeState>>, Path(pid): Path<String>| async move {
            list(&state, kind, &pid)
        };
        let creator = move |State(state): State<Arc<FakeState>>,
                           Path(pid): Path<String>,
                           body: Bytes| async move {
            create(&state, kind, &pid, &body)
        };
        router.route(kind.path(), get(lister).post(creator))
    })
}

async fn user(State(state): State<Arc<FakeState>>) -> Response {
    let username = state
        .users
        .first()
        .map_or("admin", |(name, _)| name.as_str());
    json_body(
        StatusCode::OK,
        &json!({
            "id": USER_ID, "name": "Admin", "username": username, "email": "admin@localhost",
            "created": timestamp(state.created), "admin": true, "external": false,
            "alert": false, "pro": false,
        }),
    )
}

fn token_json(token: &CreatedToken, shape: ApiShape, listed: bool) -> Value {
    // 2.13+ lists only the first 8 characters; the whole token is shown once, on creation.
    let id = if listed && shape == ApiShape::V2_16 {
        token.id.chars().take(8).collect()
    } else {
        token.id.clone()
    };
    json!({"id": id, "created": timestamp(token.created), "expired": false, "user_id": USER_ID})
}

async fn tokens(State(state): State<Arc<FakeState>>) -> Response {
    let list: Vec<Value> = lock(&state.catalog.inner)
        .tokens
        .iter()
        .map(|t| token_json(t, state.shape, true))
        .collect();
    json_body(StatusCode::OK, &Value::Array(list))
}

/// 32 random bytes, URL-safe base64, lower-cased: Semaphore's token format.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
    base64::engine::general_purpose::URL_SAFE
        .encode(bytes)
        .to_ascii_lowercase()
}

async fn create_token(State(state): State<Arc<FakeState>>) -> Response {
    let token = CreatedToken {
        id: new_token(),
        created: Utc::now(),
    };
    let body = token_json(&token, state.shape, false);
    lock(&state.catalog.inner).tokens.push(token);
    json_body(StatusCode::CREATED, &body)
}

#[derive(Deserialize)]
struct NewProject {
    #[serde(default)]
    name: String,
}

async fn create_project(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<NewProject>(&body) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let mut inner = lock(&state.catalog.inner);
    let seed = if state.fresh { 0 } else { state.project_id };
    let id = inner
        .projects
        .keys()
        .copied()
        .chain([seed])
        .max()
        .unwrap_or(0)
        + 1;
    let project = CreatedProject {
        id,
        name: request.name,
        created: Utc::now(),
    };
    let body = project.json(state.shape);
    inner.projects.insert(id, project);
    json_body(StatusCode::CREATED, &body)
}

/// The project id of the path, or Semaphore's answer for it.
fn project_of(state: &FakeState, pid: &str) -> Result<i64, Box<Response>> {
    check_project(state, pid)?;
    pid.parse::<i64>()
        .map_err(|_| Box::new(empty(StatusCode::BAD_REQUEST)))
}

/// Parses a project-scoped body and checks its `project_id` against the path's, as the
/// handlers of keys, inventories, repositories and Variable Groups do.
fn scoped_body(state: &FakeState, pid: &str, body: &Bytes) -> Result<(i64, Value), Box<Response>> {
    let pid = project_of(state, pid)?;
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Err(Box::new(empty(StatusCode::BAD_REQUEST)));
    };
    if !value.is_object() {
        return Err(Box::new(empty(StatusCode::BAD_REQUEST)));
    }
    if value.get("project_id").and_then(Value::as_i64) != Some(pid) {
        return Err(Box::new(error_body(
            StatusCode::BAD_REQUEST,
            "Project ID in body and URL must be the same",
        )));
    }
    Ok((pid, value))
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(value: &Value, key: &str) -> Value {
    value
        .get(key)
        .and_then(Value::as_i64)
        .map_or(Value::Null, Value::from)
}

/// Stores a created object of `kind` under the next id of its table; answers it, id first.
fn store(state: &FakeState, kind: Kind, fields: Value) -> Response {
    let mut inner = lock(&state.catalog.inner);
    let table = inner.objects.entry(kind).or_default();
    let id = table.keys().next_back().copied().unwrap_or(0) + 1;
    let mut object = serde_json::Map::from_iter([("id".to_owned(), Value::from(id))]);
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    let value = Value::Object(object);
    table.insert(id, value.clone());
    json_body(StatusCode::CREATED, &value)
}

/// `POST` of a project-scoped object: the checks every kind shares, then its own.
fn create(state: &FakeState, kind: Kind, pid: &str, body: &Bytes) -> Response {
    let (pid, request) = match scoped_body(state, pid, body) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    match kind.fields(pid, &request) {
        Ok(fields) => store(state, kind, fields),
        Err(response) => *response,
    }
}

fn list(state: &FakeState, kind: Kind, pid: &str) -> Response {
    let pid = match project_of(state, pid) {
        Ok(pid) => pid,
        Err(response) => return *response,
    };
    let items: Vec<Value> = lock(&state.catalog.inner)
        .objects
        .get(&kind)
        .map(|table| {
            table
                .values()
                .filter(|v| v["project_id"].as_i64() == Some(pid))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    json_body(StatusCode::OK, &Value::Array(items))
}

async fn create_template(
    State(state): State<Arc<FakeState>>,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    let pid = match project_of(&state, &pid) {
        Ok(pid) => pid,
        Err(response) => return *response,
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let name = text(&request, "name");
    if name.is_empty() {
        return error_body(StatusCode::BAD_REQUEST, "template name can not be empty");
    }
    let mut templates = lock(&state.templates);
    let mut inner = lock(&state.catalog.inner);
    let id = templates
        .keys()
        .chain(inner.templates.keys())
        .copied()
        .max()
        .unwrap_or(0)
        + 1;
    // The handler takes the project from the path.
    let fields = json!({
        "project_id": pid, "inventory_id": number(&request, "inventory_id"),
        "repository_id": number(&request, "repository_id"),
        "environment_id": number(&request, "environment_id"), "name": name,
        "playbook": text(&request, "playbook"), "description": text(&request, "description"),
        "arguments": request.get("arguments").cloned().unwrap_or(Value::Null),
        "app": request.get("app").and_then(Value::as_str).unwrap_or("ansible"),
    });
    templates.insert(id, FakeTemplate::succeeding(&name));
    inner.templates.insert(id, (pid, fields));
    drop(inner);
    drop(templates);
    let found = lock(&state.templates).get(&id).cloned();
    match found {
        Some(template) => json_body(
            StatusCode::CREATED,
            &super::projects::template_json(&state, id, &template),
        ),
        None => empty(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FakeSemaphoreOptions, spawn};

    #[tokio::test]
    async fn given_a_fresh_fake_then_setup_calls_follow_semaphores_handlers() {
        let fake = spawn(FakeSemaphoreOptions::with_token("tok").fresh())
            .await
            .expect("fake");
        let client = reqwest::Client::new();
        let post = |path: &str, body: &str| {
            client
                .post(format!("{}{path}", fake.url()))
                .bearer_auth("tok")
                .body(body.to_owned())
                .send()
        };
        // No project yet: project 1 is a 404 until created
        let missing = post("/api/project/1/keys", "{}").await.expect("answer");
        assert_eq!(missing.status(), 404);
        let created = post("/api/projects", r#"{"name":"hestia"}"#)
            .await
            .expect("answer");
        assert_eq!(created.status(), 201);
        // A body whose project_id differs from the path's is refused with Semaphore's message
        let mismatch = post(
            "/api/project/1/keys",
            r#"{"name":"k","type":"none","project_id":2}"#,
        )
        .await
        .expect("answer");
        assert_eq!(mismatch.status(), 400);
        assert_eq!(
            mismatch.text().await.expect("body"),
            "{\"error\":\"Project ID in body and URL must be the same\"}\n"
        );
        // A token is shown whole once, then listed truncated (2.16)
        let token: serde_json::Value = post("/api/user/tokens", "")
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        let token = token["id"].as_str().expect("id").to_owned();
        assert_eq!(token.len(), 44);
        let listed: serde_json::Value = client
            .get(format!("{}/api/user/tokens", fake.url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("the new token authenticates")
            .json()
            .await
            .expect("json");
        assert_eq!(listed[0]["id"], token[..8]);
    }
}
