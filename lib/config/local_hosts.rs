//! `[local_hosts.NAME]`: which runs a local host claims, and which first.

use serde::Deserialize;

use super::Config;
use crate::exit;

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

impl Config {
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
}
