//! `[targets.NAME]` and `default_target`: where runs execute.

use super::Config;
use crate::exit;

impl Config {
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
}
