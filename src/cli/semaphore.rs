//! `hestia semaphore bootstrap`: makes a Semaphore ready for Hestia through its API — a project,
//! an access key of type `none`, a local inventory, a repository holding the example playbooks
//! (a directory Semaphore can read), a Variable Group, the start and stop templates, and an API
//! token — then writes the project id, the token and the template ids where the config reads
//! them (`semaphore.project_id`, `semaphore.api_token`,
//! `services.<service>.{start,stop}.semaphore.template_id`), editing only those values.
//!
//! Idempotent: everything is found by name before anything is created, a configured token that
//! still works is kept, and a file that already holds the values is not rewritten. A second run
//! therefore makes no change in Semaphore or in the file.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};

use hestia_actors::semaphore::{NewTemplate, SemaphoreClient, SemaphoreError};
use hestia_actors::spec::SemaphoreConnection;

use crate::config::{self, ConfigError, SemaphoreConfig, edit::EditError, env::Source};

/// `hestia semaphore …`.
#[derive(Debug, clap::Subcommand)]
pub enum SemaphoreAction {
    /// Create Hestia's project, inventory, playbook repository, start/stop templates and API
    /// token in Semaphore (idempotent), and write their ids and the token into the config file.
    Bootstrap(BootstrapArgs),
}

/// Flags of `hestia semaphore bootstrap`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// The Semaphore project to find or create.
    #[arg(long, default_value = "hestia")]
    pub project: String,
    /// The service whose `start`/`stop` Semaphore template ids are written.
    #[arg(long, default_value = "semaphore-demo")]
    pub service: String,
    /// The directory holding the example playbooks, as Semaphore sees it (a local repository).
    #[arg(long, default_value = "/opt/hestia/playbooks")]
    pub playbooks: String,
}

/// Names of what the bootstrap creates; found by these names on later runs.
pub const KEY_NAME: &str = "hestia-none";
pub const INVENTORY_NAME: &str = "hestia-local";
pub const REPOSITORY_NAME: &str = "hestia-examples";
pub const ENVIRONMENT_NAME: &str = "hestia";
pub const START_TEMPLATE: &str = "hestia-demo-start";
pub const STOP_TEMPLATE: &str = "hestia-demo-stop";
/// The inventory: this host, through a local connection with Ansible's own Python.
pub const LOCAL_INVENTORY: &str = "localhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n";

/// Why the bootstrap stopped.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no Semaphore is configured: set `semaphore.base_url` in {path} or SEMAPHORE_BASE_URL")]
    NoSemaphore { path: PathBuf },
    /// The bootstrap writes ids and a token into the file in place, which it does for YAML only.
    #[error(
        "{}: the bootstrap writes the ids and the token into the configuration file in place, \
         which it can do for YAML only; run it on a YAML configuration (the same keys), then \
         copy the values it wrote",
        path.display()
    )]
    NotYaml { path: PathBuf },
    #[error(
        "no credentials for Semaphore at {base_url}: set SEMAPHORE_USERNAME and \
         SEMAPHORE_PASSWORD (an admin, to create the project), or a working \
         `semaphore.api_token`"
    )]
    NoCredentials { base_url: String },
    #[error(transparent)]
    Semaphore(#[from] SemaphoreError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the ids into {path}: {source}")]
    Edit {
        path: PathBuf,
        #[source]
        source: EditError,
    },
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Created,
    Existing,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fate::Created => "created",
            Fate::Existing => "already there",
        })
    }
}

/// The bootstrap's result, one line per object (printed by the command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub project_id: i64,
    pub start_template_id: i64,
    pub stop_template_id: i64,
    /// `(what, name, id, fate)`.
    pub objects: Vec<(&'static str, String, i64, Fate)>,
    pub token: Fate,
    /// The config keys whose values changed in the file (empty: the file was not written).
    pub written: Vec<String>,
}

/// Runs the bootstrap for the config at `path` (environment overrides from `env`).
pub async fn bootstrap(
    path: &Path,
    args: &BootstrapArgs,
    env: &dyn Source,
) -> Result<Report, BootstrapError> {
    if config::is_toml(path) {
        return Err(BootstrapError::NotYaml {
            path: path.to_path_buf(),
        });
    }
    let loaded = config::load(path, env)?;
    let semaphore = loaded
        .semaphore
        .clone()
        .ok_or_else(|| BootstrapError::NoSemaphore {
            path: path.to_path_buf(),
        })?;
    let admin = admin_client(&semaphore)?;
    admin.ping().await?;

    let mut objects = Vec::new();
    let (project_id, fate) = ensure(
        admin.projects().await?,
        &args.project,
        |p| (&p.name, p.id),
        || admin.create_project(&args.project),
    )
    .await?;
    objects.push(("project", args.project.clone(), project_id, fate));

    let (key_id, fate) = ensure(
        admin.access_keys(project_id).await?,
        KEY_NAME,
        |k| (&k.name, k.id),
        || admin.create_none_key(project_id, KEY_NAME),
    )
    .await?;
    objects.push(("access key", KEY_NAME.to_owned(), key_id, fate));

    let (inventory_id, fate) = ensure(
        admin.inventories(project_id).await?,
        INVENTORY_NAME,
        |i| (&i.name, i.id),
        || admin.create_static_inventory(project_id, INVENTORY_NAME, LOCAL_INVENTORY, key_id),
    )
    .await?;
    objects.push(("inventory", INVENTORY_NAME.to_owned(), inventory_id, fate));

    let (repository_id, fate) = ensure(
        admin.repositories(project_id).await?,
        REPOSITORY_NAME,
        |r| (&r.name, r.id),
        || admin.create_repository(project_id, REPOSITORY_NAME, &args.playbooks, key_id),
    )
    .await?;
    objects.push((
        "repository",
        REPOSITORY_NAME.to_owned(),
        repository_id,
        fate,
    ));

    let (environment_id, fate) = ensure(
        admin.environments(project_id).await?,
        ENVIRONMENT_NAME,
        |e| (&e.name, e.id),
        || admin.create_empty_environment(project_id, ENVIRONMENT_NAME),
    )
    .await?;
    objects.push((
        "variable group",
        ENVIRONMENT_NAME.to_owned(),
        environment_id,
        fate,
    ));

    let templates = admin.templates(project_id).await?;
    let mut template_ids = Vec::new();
    for (name, description) in [
        (START_TEMPLATE, "Hestia: start the demo service"),
        (STOP_TEMPLATE, "Hestia: stop the demo service"),
    ] {
        let new = NewTemplate {
            name: name.to_owned(),
            playbook: format!("{name}.yml"),
            description: description.to_owned(),
            inventory_id,
            repository_id,
            environment_id,
        };
        let (id, fate) = ensure(
            templates.clone(),
            name,
            |t| (&t.name, t.id),
            || admin.create_template(project_id, &new),
        )
        .await?;
        objects.push(("template", name.to_owned(), id, fate));
        template_ids.push(id);
    }
    let (start_template_id, stop_template_id) = (template_ids[0], template_ids[1]);

    let mut edits = vec![("semaphore.project_id".to_owned(), project_id.to_string())];
    let token = if configured_token_works(&semaphore).await? {
        Fate::Existing
    } else {
        let token = admin.create_api_token().await?;
        edits.push(("semaphore.api_token".to_owned(), quoted(&token.id)));
        Fate::Created
    };
    let service = &args.service;
    edits.push((
        format!("services.{service}.start.semaphore.template_id"),
        start_template_id.to_string(),
    ));
    edits.push((
        format!("services.{service}.stop.semaphore.template_id"),
        stop_template_id.to_string(),
    ));
    let written = write_values(path, &edits)?;
    Ok(Report {
        project_id,
        start_template_id,
        stop_template_id,
        objects,
        token,
        written,
    })
}

/// A client for the setup calls: an admin login when one is given (a token may belong to a
/// user who cannot create projects), else the configured token.
fn admin_client(semaphore: &SemaphoreConfig) -> Result<SemaphoreClient, BootstrapError> {
    let login = semaphore.username.clone().zip(semaphore.password.clone());
    let (api_token, username, password) = match (login, &semaphore.api_token) {
        (Some((user, password)), _) => (None, Some(user), Some(password.expose().to_owned())),
        (None, Some(token)) => (Some(token.expose().to_owned()), None, None),
        (None, None) => {
            return Err(BootstrapError::NoCredentials {
                base_url: semaphore.base_url.clone(),
            });
        }
    };
    Ok(SemaphoreClient::new(SemaphoreConnection {
        base_url: semaphore.base_url.clone(),
        api_token,
        username,
        password,
        project_id: semaphore.project_id,
        timeout: semaphore.timeout,
    }))
}

/// Whether the configured API token (file or SEMAPHORE_API_TOKEN) is accepted by Semaphore.
async fn configured_token_works(semaphore: &SemaphoreConfig) -> Result<bool, BootstrapError> {
    let Some(token) = &semaphore.api_token else {
        return Ok(false);
    };
    let client = SemaphoreClient::new(SemaphoreConnection {
        base_url: semaphore.base_url.clone(),
        api_token: Some(token.expose().to_owned()),
        username: None,
        password: None,
        project_id: semaphore.project_id,
        timeout: semaphore.timeout,
    });
    match client.current_user().await {
        Ok(_) => Ok(true),
        Err(SemaphoreError::BadToken { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The id of the item called `name` in `existing`, or of a new one made by `create`.
async fn ensure<T, Fut>(
    existing: Vec<T>,
    name: &str,
    name_and_id: impl Fn(&T) -> (&String, i64),
    create: impl FnOnce() -> Fut,
) -> Result<(i64, Fate), BootstrapError>
where
    Fut: Future<Output = Result<T, SemaphoreError>>,
{
    if let Some(id) = existing.iter().find_map(|item| {
        let (item_name, id) = name_and_id(item);
        (item_name == name).then_some(id)
    }) {
        return Ok((id, Fate::Existing));
    }
    let created = create().await?;
    Ok((name_and_id(&created).1, Fate::Created))
}

/// A YAML double-quoted scalar (tokens are `[a-z0-9_=-]`, but quote anything safely).
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Sets the values in the file, in place (the same file, so a bind-mounted file works), only if
/// one of them changes. Returns the keys that changed.
fn write_values(path: &Path, edits: &[(String, String)]) -> Result<Vec<String>, BootstrapError> {
    let before = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut text = before.clone();
    let mut changed = Vec::new();
    for (key, value) in edits {
        let next =
            config::edit::set_scalar(&text, key, value).map_err(|source| BootstrapError::Edit {
                path: path.to_path_buf(),
                source,
            })?;
        if next != text {
            changed.push(key.clone());
            text = next;
        }
    }
    if text != before {
        std::fs::write(path, text).map_err(|source| BootstrapError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(changed)
}

impl Report {
    /// What the command prints: one line per object, then the token and the file.
    pub fn lines(&self, path: &Path) -> Vec<String> {
        let mut lines: Vec<String> = self
            .objects
            .iter()
            .map(|(what, name, id, fate)| format!("{what} `{name}`: id {id}, {fate}"))
            .collect();
        lines.push(match self.token {
            Fate::Created => "API token: created".to_owned(),
            Fate::Existing => "API token: the configured one works, kept".to_owned(),
        });
        lines.push(if self.written.is_empty() {
            format!("{}: unchanged", path.display())
        } else {
            format!("{}: set {}", path.display(), self.written.join(", "))
        });
        lines
    }
}
