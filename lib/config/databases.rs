//! `[databases.NAME]` and `default_db`: which database a command opens.

use std::path::PathBuf;

use serde::Deserialize;

use super::Config;
use crate::exit;

pub const DB_ENV: &str = "OFFLOAD_DB";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEntry {
    pub url: String,
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
    use std::path::Path;

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
}
