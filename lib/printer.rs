//! Where output goes: data on stdout, messages on stderr; progress bars only
//! on a terminal and never when quiet or verbose. The printer carries the
//! output format (`--json` or text), so a command hands it a model and a
//! text renderer and never asks which.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// What stdout carries: text for people, or JSON for scripts (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Printer {
    pub tool: &'static str,
    pub verbosity: Verbosity,
    pub format: Format,
}

impl Printer {
    pub fn new(tool: &'static str, quiet: bool, verbose: bool, json: bool) -> Printer {
        let verbosity = if quiet {
            Verbosity::Quiet
        } else if verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let format = if json { Format::Json } else { Format::Text };
        Printer {
            tool,
            verbosity,
            format,
        }
    }

    /// Does stdout carry JSON (`--json`)?
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// A model on stdout: as JSON with `--json`, else as the text `render`
    /// makes of it.
    pub fn model<T: serde::Serialize>(
        &self,
        model: &T,
        render: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Json => self.json(model),
            Format::Text => Ok(self.data(render(model))?),
        }
    }

    /// What a command that acts on runs prints: the rows as JSON, or their
    /// ids one a line.
    pub fn ids<T: serde::Serialize>(
        &self,
        rows: &[T],
        id: impl Fn(&T) -> i64,
    ) -> anyhow::Result<()> {
        self.model(&rows, |rows| {
            let ids: Vec<String> = rows.iter().map(|r| id(r).to_string()).collect();
            ids.join("\n")
        })
    }

    /// A message for the person (stderr), hidden when quiet.
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.verbosity != Verbosity::Quiet {
            eprintln!("{}: {}", self.tool, msg.as_ref());
        }
    }

    /// Detail shown only with --verbose.
    pub fn debug(&self, msg: impl AsRef<str>) {
        if self.verbosity == Verbosity::Verbose {
            eprintln!("{}: {}", self.tool, msg.as_ref());
        }
    }

    /// A warning (stderr), shown even when quiet.
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("{}: warning: {}", self.tool, msg.as_ref());
    }

    /// Columns of the terminal stdout is, None when it is not a terminal
    /// (then tables are never cut).
    pub fn width(&self) -> Option<usize> {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        console::Term::stdout()
            .size_checked()
            .map(|(_, cols)| cols as usize)
    }

    /// Data for scripts: stdout.
    pub fn data(&self, text: impl AsRef<str>) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_ref().as_bytes())?;
        if !text.as_ref().ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Bytes as they are on stdout (JSON Lines, say), flushed.
    pub fn data_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }

    /// JSON for scripts: one document on stdout.
    pub fn json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        Ok(self.data(text)?)
    }

    /// A byte-counting bar for transfers (bytes, rate, files in the message).
    pub fn bytes_progress(&self, what: impl std::fmt::Debug) -> ProgressBar {
        let visible = self.verbosity == Verbosity::Normal && std::io::stderr().is_terminal();
        if !visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{what:?}").to_lowercase());
        bar
    }

    /// A progress bar on stderr, or a hidden one when stderr is not a
    /// terminal or the printer is quiet or verbose.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        let visible = self.verbosity == Verbosity::Normal && std::io::stderr().is_terminal();
        if !visible {
            return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }
}

/// "3h 05m", "12m", "-1h 10m" (overdue).
pub fn human_duration(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let s = seconds.unsigned_abs();
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{sign}{d}d {h:02}h")
    } else if h > 0 {
        format!("{sign}{h}h {m:02}m")
    } else if m > 0 {
        format!("{sign}{m}m")
    } else {
        format!("{sign}{s}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_well() {
        use super::human_duration as h;
        assert_eq!(h(42), "42s");
        assert_eq!(h(12 * 60), "12m");
        assert_eq!(h(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(h(-(3600 + 600)), "-1h 10m");
        assert_eq!(h(2 * 86_400 + 3600), "2d 01h");
    }
}
