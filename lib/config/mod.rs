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
//!
//! Each section's types and methods are in their own file: `databases.rs`,
//! `targets.rs`, `local_hosts.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::exit;

mod databases;
mod local_hosts;
mod targets;

pub use databases::{default_db_path, DatabaseEntry, DB_ENV};
pub use local_hosts::{ClaimPolicy, LocalHost, PriorityRule};

pub const CONFIG_ENV: &str = "OFFLOAD_CONFIG";

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

/// The default configuration file location.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("offload").join("config.toml"))
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

    /// The recipes folder: the flag, else `recipes`, else the default.
    pub fn recipes_dir(&self, flag: Option<&Path>) -> PathBuf {
        flag.map(Path::to_path_buf)
            .or_else(|| self.recipes.clone())
            .or_else(|| dirs::config_dir().map(|d| d.join("offload").join("recipes")))
            .unwrap_or_else(|| PathBuf::from("recipes"))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_default_are_refused() {
        let e = Config::parse("databses = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(exit::one_line(&e).contains("databses"), "{e}");
        let e = Config::parse("default_db = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(exit::one_line(&e).contains("default_db"), "{e}");
    }
}
