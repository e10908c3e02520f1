//! `hestia keys create|list|revoke` and `hestia hash-password`. Keys go straight to the
//! database (through a persistence actor of this process); a running `serve` re-reads them
//! within a second. The key is printed once, alone on standard output; only its prefix and
//! SHA-256 are stored.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Subcommand;
use hestia_actors::persistence::entities::auth_keys;
use hestia_actors::persistence::{self, PersistenceHandle, PersistenceOptions};

use crate::auth::Scope;
use crate::auth::keys::{self, KEY_MARK};

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (once: only its digest is kept).
    Create {
        /// Shown in logs, events and `keys list` instead of the key.
        name: String,
        /// proxy:<service|*>, control:<service|*>, read or admin (repeat for several).
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
        /// Refuse the key after this long: 30d, 12h, 90m, 2w.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys: name, prefix, scopes, created, last used, expiry (never the key).
    List,
    /// Revoke every live key with this name.
    Revoke { name: String },
}

pub async fn run(config_path: &Path, action: KeysAction) -> anyhow::Result<ExitCode> {
    let config = crate::config::load(config_path, &crate::config::env::ProcessEnv)?;
    let db = persistence::open(&config.database_url)
        .await
        .with_context(|| format!("opening {}", config.database_url))?;
    let (store, _) = PersistenceHandle::spawn(db, PersistenceOptions::default()).await?;
    let result = match action {
        KeysAction::Create {
            name,
            scopes,
            expires,
        } => create(&store, &name, &scopes, expires.as_deref()).await,
        KeysAction::List => list(&store).await,
        KeysAction::Revoke { name } => revoke(&store, &name).await,
    };
    store.stop().await?;
    result
}

async fn create(
    store: &PersistenceHandle,
    name: &str,
    scopes: &[String],
    expires: Option<&str>,
) -> anyhow::Result<ExitCode> {
    if name.trim().is_empty() {
        bail!("a key needs a name");
    }
    let scopes = scopes
        .iter()
        .map(|s| Scope::parse_list(s))
        .collect::<Result<Vec<_>, _>>()?
        .concat();
    let expires_at = match expires {
        Some(text) => Some(Utc::now() + parse_duration(text)?),
        None => None,
    };
    let now = Utc::now();
    if store
        .keys()
        .await?
        .iter()
        .any(|k| k.name == name && k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now))
    {
        bail!(
            "a live key named `{name}` exists: revoke it first (`hestia keys revoke {name}`) or pick another name"
        );
    }
    let key = keys::generate();
    store
        .create_key(auth_keys::Model {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.to_owned(),
            prefix: key.prefix.clone(),
            hash: key.digest_hex.clone(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            scopes: Scope::join(&scopes),
            expires_at,
        })
        .await?;
    eprintln!(
        "created key `{name}` ({KEY_MARK}{}) with scopes {}, expires {}. It is shown once, below: store it now.",
        key.prefix,
        Scope::join(&scopes),
        expires_at.map_or_else(|| "never".to_owned(), |at| at.to_rfc3339()),
    );
    println!("{}", key.key);
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &PersistenceHandle) -> anyhow::Result<ExitCode> {
    let rows = store.keys().await?;
    println!(
        "{:<20} {:<17} {:<30} {:<20} {:<20} {:<20} STATUS",
        "NAME", "PREFIX", "SCOPES", "CREATED", "LAST USED", "EXPIRES"
    );
    let now = Utc::now();
    let when = |at: Option<chrono::DateTime<Utc>>, none: &str| {
        at.map_or_else(
            || none.to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    for row in rows {
        let status = if row.revoked_at.is_some() {
            "revoked"
        } else if row.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "live"
        };
        println!(
            "{:<20} {:<17} {:<30} {:<20} {:<20} {:<20} {status}",
            row.name,
            format!("{KEY_MARK}{}", row.prefix),
            row.scopes,
            when(Some(row.created_at), "-"),
            when(row.last_used_at, "never"),
            when(row.expires_at, "never"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(store: &PersistenceHandle, name: &str) -> anyhow::Result<ExitCode> {
    match store.revoke_keys(name).await? {
        0 => {
            eprintln!("no live key is named `{name}` (see `hestia keys list`)");
            Ok(ExitCode::FAILURE)
        }
        n => {
            eprintln!(
                "revoked {n} key(s) named `{name}`; a running Hestia refuses them within a second"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `30d`, `12h`, `90m`, `45s`, `2w`.
pub fn parse_duration(text: &str) -> anyhow::Result<chrono::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 30d, 12h, 90m or 2w"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("`{text}` is not a duration like 30d, 12h, 90m or 2w"),
    };
    if n <= 0 {
        bail!("`{text}`: an expiry must be in the future");
    }
    Ok(chrono::Duration::from_std(Duration::from_secs(
        n.unsigned_abs() * secs,
    ))?)
}

/// `hestia hash-password`: the password from standard input (not echoed on a terminal), its
/// argon2id hash on standard output.
pub fn hash_password() -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        eprint!("Password: ");
        std::io::stderr().flush()?;
        let line = read_without_echo(&stdin)?;
        eprintln!();
        line
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line
    };
    let password = password.trim_end_matches(['\n', '\r']);
    println!("{}", crate::auth::password::hash(password)?);
    Ok(ExitCode::SUCCESS)
}

/// One line from the terminal with echo off (restored afterwards, also on error).
fn read_without_echo(stdin: &std::io::Stdin) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(stdin, SetArg::TCSANOW, &saved).context("turning echo back on")?;
    read?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_expiry_texts_when_parsed_then_units_apply_and_nonsense_is_refused() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(
            parse_duration("90m").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("d").is_err());
    }
}
