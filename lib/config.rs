//! The configuration file: named databases (what `-dbname gpc1` means) and
//! defaults. Location: `--config PATH`, else `$OFFLOAD_CONFIG`, else
//! `$XDG_CONFIG_HOME/offload/config.toml` (`~/.config/offload/config.toml`).
//!
//! ```toml
//! default_db = "gpc1"          # used when neither --db nor --dbname is given
//! path_base = "/data/offload"  # default folder for runs' generated files
//!
//! [databases.gpc1]
//! url = "postgresql://offload@dbhost/gpc1"
//!
//! [databases.scratch]
//! url = "/var/lib/offload/scratch.db"    # a path or sqlite:// URL is SQLite
//! ```
//!
//! Remote targets go under `[targets.NAME]` (see `target.rs`); stage recipes
//! are read from `recipes = "DIR"` (default `~/.config/offload/recipes`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::exit;

pub const CONFIG_ENV: &str = "OFFLOAD_CONFIG";
pub const DB_ENV: &str = "OFFLOAD_DB";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the database (in `databases`) used by default.
    pub default_db: Option<String>,
    /// Default folder under which runs' files are generated.
    pub path_base: Option<String>,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseEntry>,
    /// Target used by runs defined without `--target`.
    pub default_target: Option<String>,
    /// Folder of stage recipes (`<stage>.toml`).
    pub recipes: Option<PathBuf>,
    #[serde(default)]
    pub targets: BTreeMap<String, crate::target::TargetConfig>,
    /// What each local host claims (`[local_hosts.NAME]`, or
    /// `[local_hosts.default]` for hosts without a section).
    #[serde(default)]
    pub local_hosts: BTreeMap<String, LocalHost>,
    /// Where this configuration was read from (None: no file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A local host's claims: which runs it may take, and which first.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalHost {
    /// A regular expression over "STAGE/LABEL": only matching runs are
    /// claimed by `--next` on this host.
    pub runnable: Option<String>,
    /// The first matching rule gives a run its priority (default 0);
    /// higher is claimed first, then older.
    #[serde(default)]
    pub priorities: Vec<PriorityRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    /// A regular expression over "STAGE/LABEL".
    pub pattern: String,
    pub priority: i32,
}

/// A host's claims, compiled.
#[derive(Debug, Default, Clone)]
pub struct ClaimPolicy {
    pub runnable: Option<regex::Regex>,
    pub priorities: Vec<(regex::Regex, i32)>,
}

impl ClaimPolicy {
    pub fn is_trivial(&self) -> bool {
        self.runnable.is_none() && self.priorities.is_empty()
    }

    /// None: this host does not take the run; else its priority.
    pub fn rank(&self, stage: &str, label: &str) -> Option<i32> {
        let key = format!("{stage}/{label}");
        if self.runnable.as_ref().is_some_and(|r| !r.is_match(&key)) {
            return None;
        }
        Some(
            self.priorities
                .iter()
                .find(|(re, _)| re.is_match(&key))
                .map(|(_, p)| *p)
                .unwrap_or(0),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEntry {
    pub url: String,
}

/// The default configuration file location.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("offload").join("config.toml"))
}

/// The default SQLite database: `$XDG_DATA_HOME/offload/offload.db`
/// (`~/.local/share/offload/offload.db`).
pub fn default_db_path() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("offload")
        .join("offload.db")
}

impl Config {
    /// Load from an explicit path (must exist), else from `$OFFLOAD_CONFIG`
    /// (must exist), else from the default location (may be absent).
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
        let (path, required) = match explicit {
            Some(p) => (Some(p.to_path_buf()), true),
            None => match std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
                Some(p) => (Some(PathBuf::from(p)), true),
                None => (default_path(), false),
            },
        };
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(e) => {
                return Err(exit::usage(format!(
                    "cannot read configuration file {}: {e} (give an existing file with --config or {CONFIG_ENV})",
                    path.display()
                )))
            }
        };
        Config::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            exit::usage(format!(
                "configuration file {} is not valid: {}",
                path.display(),
                e.to_string().trim().replace('\n', " ")
            ))
        })?;
        cfg.source = Some(path.to_path_buf());
        if let Some(name) = &cfg.default_db {
            cfg.database_url(name)
                .with_context(|| format!("default_db in {} names no database", path.display()))?;
        }
        Ok(cfg)
    }

    /// The claims of `host`: its `[local_hosts.HOST]`, else
    /// `[local_hosts.default]`, else everything at priority 0.
    pub fn claim_policy(&self, host: &str) -> anyhow::Result<ClaimPolicy> {
        let Some((name, h)) = self
            .local_hosts
            .get_key_value(host)
            .or_else(|| self.local_hosts.get_key_value("default"))
        else {
            return Ok(ClaimPolicy::default());
        };
        let compile = |what: &str, p: &str| {
            regex::Regex::new(p).map_err(|e| {
                exit::usage(format!(
                    "local_hosts.{name}: {what} {p:?} is not a valid regular expression ({}) in {}",
                    e.to_string().lines().last().unwrap_or_default().trim(),
                    self.describe_source()
                ))
            })
        };
        Ok(ClaimPolicy {
            runnable: h
                .runnable
                .as_deref()
                .map(|p| compile("runnable", p))
                .transpose()?,
            priorities: h
                .priorities
                .iter()
                .map(|r| Ok((compile("priority pattern", &r.pattern)?, r.priority)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// The recipes folder: the flag, else `recipes`, else the default.
    pub fn recipes_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.recipes.clone())
            .or_else(|| dirs::config_dir().map(|d| d.join("offload").join("recipes")))
            .unwrap_or_else(|| PathBuf::from("recipes"))
    }

    /// A configured target by name, checked and compiled.
    pub fn target(&self, name: &str) -> anyhow::Result<crate::target::Target> {
        match self.targets.get(name) {
            Some(t) => crate::target::Target::new(name, t.clone()),
            None => {
                let known: Vec<&str> = self.targets.keys().map(|s| s.as_str()).collect();
                let known = if known.is_empty() {
                    "none are configured".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                };
                Err(exit::usage(format!(
                    "unknown target '{name}' ({known}); add [targets.{name}] to {}",
                    self.describe_source()
                )))
            }
        }
    }

    /// The target of a run: its own, else `default_target`.
    pub fn run_target(
        &self,
        run_target: Option<&str>,
        remote_id: i64,
    ) -> anyhow::Result<crate::target::Target> {
        match run_target.or(self.default_target.as_deref()) {
            Some(name) => self.target(name),
            None => Err(exit::usage(format!(
                "run {remote_id} has no target: define it with --target, or set default_target in {}",
                self.describe_source()
            ))),
        }
    }

    fn describe_source(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => match default_path() {
                Some(p) => format!("{} (absent)", p.display()),
                None => "no configuration file".to_string(),
            },
        }
    }

    /// URL of a named database.
    pub fn database_url(&self, name: &str) -> anyhow::Result<&str> {
        match self.databases.get(name) {
            Some(e) => Ok(&e.url),
            None => {
                let known: Vec<&str> = self.databases.keys().map(|s| s.as_str()).collect();
                let known = if known.is_empty() {
                    "none are configured".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                };
                Err(exit::usage(format!(
                    "unknown database name '{name}' ({known}); add [databases.{name}] with a url to {}",
                    self.describe_source()
                )))
            }
        }
    }

    /// Which database to open: `--db` (a URL, a path, or a configured name),
    /// else `--dbname`, else `$OFFLOAD_DB`, else `default_db`, else the
    /// default SQLite file.
    pub fn resolve_database(
        &self,
        db: Option<&str>,
        dbname: Option<&str>,
    ) -> anyhow::Result<String> {
        if let Some(v) = db {
            return Ok(self.url_or_name(v));
        }
        if let Some(name) = dbname {
            return self.database_url(name).map(str::to_string);
        }
        if let Some(v) = std::env::var(DB_ENV).ok().filter(|v| !v.is_empty()) {
            return Ok(self.url_or_name(&v));
        }
        if let Some(name) = &self.default_db {
            return self.database_url(name).map(str::to_string);
        }
        Ok(default_db_path().to_string_lossy().into_owned())
    }

    fn url_or_name(&self, v: &str) -> String {
        match self.databases.get(v) {
            Some(e) => e.url.clone(),
            None => v.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_unknown_is_a_usage_error() {
        let cfg = Config::parse(
            "default_db = \"a\"\n[databases.a]\nurl = \"/tmp/a.db\"\n[databases.gpc1]\nurl = \"postgresql://x/y\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            cfg.resolve_database(None, Some("gpc1")).unwrap(),
            "postgresql://x/y"
        );
        assert_eq!(
            cfg.resolve_database(Some("gpc1"), None).unwrap(),
            "postgresql://x/y"
        );
        assert_eq!(cfg.resolve_database(Some("/p.db"), None).unwrap(), "/p.db");
        let e = cfg.resolve_database(None, Some("nope")).unwrap_err();
        assert_eq!(exit::status_of(&e), exit::ExitStatus::Usage);
        let msg = e.to_string();
        assert!(
            msg.contains("'nope'") && msg.contains("a, gpc1") && msg.contains("c.toml"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_default_are_refused() {
        let e = Config::parse("databses = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(exit::one_line(&e).contains("databses"), "{e}");
        let e = Config::parse("default_db = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(exit::one_line(&e).contains("default_db"), "{e}");
    }
}
