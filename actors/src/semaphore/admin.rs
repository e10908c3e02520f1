//! The Semaphore API calls that set a project up (used by `hestia semaphore bootstrap`): list and
//! create projects, access keys, inventories, repositories, Variable Groups (`environment`),
//! templates and API tokens, and read the current user. Shapes follow the v2.16 `api-docs.yml`
//! and its Go handlers: every create is a `POST` answered `201` with the object, every list a
//! `GET` answered with an array (`null` read as empty), project-scoped bodies carry a
//! `project_id` equal to the one in the path. Unknown fields are ignored both ways.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{SemaphoreClient, SemaphoreError};

/// `db.Project` (the fields Hestia reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Project {
    pub id: i64,
    #[serde(default)]
    pub name: String,
}

/// `db.AccessKey` (secrets are never returned).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessKey {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// `db.Inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Inventory {
    pub id: i64,
    #[serde(default)]
    pub name: String,
}

/// `db.Repository`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub git_url: String,
}

/// `db.Environment` (a Variable Group).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Environment {
    pub id: i64,
    #[serde(default)]
    pub name: String,
}

/// `db.Template` (the fields Hestia reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Template {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub playbook: String,
}

/// `db.APIToken`. `id` is the token itself in the answer to its creation; lists show it
/// truncated (2.13+), so a token can only be learnt when it is created.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct ApiToken {
    pub id: String,
    #[serde(default)]
    pub expired: bool,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("id", &"<redacted>")
            .field("expired", &self.expired)
            .finish()
    }
}

/// `db.User` (the fields Hestia reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub admin: bool,
}

/// The body of `POST …/templates` (an Ansible template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTemplate {
    pub name: String,
    pub playbook: String,
    pub description: String,
    pub inventory_id: i64,
    pub repository_id: i64,
    pub environment_id: i64,
}

impl SemaphoreClient {
    /// `GET /api/user`: who these credentials are.
    pub async fn current_user(&self) -> Result<User, SemaphoreError> {
        self.call_json(Method::GET, "/api/user", None, &|_| None)
            .await
    }

    /// `GET /api/projects`.
    pub async fn projects(&self) -> Result<Vec<Project>, SemaphoreError> {
        self.list("/api/projects".to_owned()).await
    }

    /// `POST /api/projects` (the creating user becomes its owner).
    pub async fn create_project(&self, name: &str) -> Result<Project, SemaphoreError> {
        let body = json!({"name": name, "alert": false, "max_parallel_tasks": 0});
        self.create("/api/projects".to_owned(), &body).await
    }

    /// `GET /api/project/{pid}/keys`.
    pub async fn access_keys(&self, project_id: i64) -> Result<Vec<AccessKey>, SemaphoreError> {
        self.list(format!(
            "/api/project/{project_id}/keys?sort=name&order=asc"
        ))
        .await
    }

    /// `POST /api/project/{pid}/keys` with type `none` (local connections need no secret).
    pub async fn create_none_key(
        &self,
        project_id: i64,
        name: &str,
    ) -> Result<AccessKey, SemaphoreError> {
        let body = json!({"name": name, "type": "none", "project_id": project_id});
        self.create(format!("/api/project/{project_id}/keys"), &body)
            .await
    }

    /// `GET /api/project/{pid}/inventory`.
    pub async fn inventories(&self, project_id: i64) -> Result<Vec<Inventory>, SemaphoreError> {
        self.list(format!(
            "/api/project/{project_id}/inventory?sort=name&order=asc"
        ))
        .await
    }

    /// `POST /api/project/{pid}/inventory`: a `static` (INI) inventory.
    pub async fn create_static_inventory(
        &self,
        project_id: i64,
        name: &str,
        inventory: &str,
        ssh_key_id: i64,
    ) -> Result<Inventory, SemaphoreError> {
        let body = json!({
            "name": name, "project_id": project_id, "type": "static",
            "inventory": inventory, "ssh_key_id": ssh_key_id,
        });
        self.create(format!("/api/project/{project_id}/inventory"), &body)
            .await
    }

    /// `GET /api/project/{pid}/repositories`.
    pub async fn repositories(&self, project_id: i64) -> Result<Vec<Repository>, SemaphoreError> {
        self.list(format!(
            "/api/project/{project_id}/repositories?sort=name&order=asc"
        ))
        .await
    }

    /// `POST /api/project/{pid}/repositories`. A `git_url` that is an absolute path is a local
    /// directory Semaphore uses as it is (no clone).
    pub async fn create_repository(
        &self,
        project_id: i64,
        name: &str,
        git_url: &str,
        ssh_key_id: i64,
    ) -> Result<Repository, SemaphoreError> {
        let body = json!({
            "name": name, "project_id": project_id, "git_url": git_url,
            "git_branch": "", "ssh_key_id": ssh_key_id,
        });
        self.create(format!("/api/project/{project_id}/repositories"), &body)
            .await
    }

    /// `GET /api/project/{pid}/environment`.
    pub async fn environments(&self, project_id: i64) -> Result<Vec<Environment>, SemaphoreError> {
        self.list(format!(
            "/api/project/{project_id}/environment?sort=name&order=asc"
        ))
        .await
    }

    /// `POST /api/project/{pid}/environment`: a Variable Group with no variables (a template
    /// needs one for a task's `environment` to be accepted; see the contract, §4).
    pub async fn create_empty_environment(
        &self,
        project_id: i64,
        name: &str,
    ) -> Result<Environment, SemaphoreError> {
        let body = json!({
            "name": name, "project_id": project_id, "json": "{}", "env": "{}", "secrets": [],
        });
        self.create(format!("/api/project/{project_id}/environment"), &body)
            .await
    }

    /// `GET /api/project/{pid}/templates`.
    pub async fn templates(&self, project_id: i64) -> Result<Vec<Template>, SemaphoreError> {
        self.list(format!(
            "/api/project/{project_id}/templates?sort=name&order=asc"
        ))
        .await
    }

    /// `POST /api/project/{pid}/templates`.
    pub async fn create_template(
        &self,
        project_id: i64,
        template: &NewTemplate,
    ) -> Result<Template, SemaphoreError> {
        let mut body = serde_json::to_value(template).map_err(|error| SemaphoreError::Decode {
            base_url: self.shown_url().to_owned(),
            method: "POST",
            path: format!("/api/project/{project_id}/templates"),
            reason: error.to_string(),
        })?;
        if let Some(map) = body.as_object_mut() {
            map.insert("project_id".into(), project_id.into());
            map.insert("app".into(), "ansible".into());
            map.insert("arguments".into(), "[]".into());
            map.insert("type".into(), "".into());
        }
        self.create(format!("/api/project/{project_id}/templates"), &body)
            .await
    }

    /// `POST /api/user/tokens` (no body): a new API token of the current user.
    pub async fn create_api_token(&self) -> Result<ApiToken, SemaphoreError> {
        self.call_json(Method::POST, "/api/user/tokens", None, &|_| None)
            .await
    }

    async fn list<T: DeserializeOwned>(&self, path: String) -> Result<Vec<T>, SemaphoreError> {
        let items: Option<Vec<T>> = self.call_json(Method::GET, &path, None, &|_| None).await?;
        Ok(items.unwrap_or_default())
    }

    async fn create<T: DeserializeOwned>(
        &self,
        path: String,
        body: &Value,
    ) -> Result<T, SemaphoreError> {
        self.call_json(Method::POST, &path, Some(body), &|_| None)
            .await
    }
}
