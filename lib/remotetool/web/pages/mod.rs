//! The pages: each gathers what it shows with the same models and queries
//! as the command that prints it (`status`, `show`, `list`, `report`), and
//! renders it with a template of its own (`web/templates/`), every value
//! escaped. A page is a function of the session and its query, so the live
//! view and the snapshot render the same.

pub mod charts;
pub mod component;
pub mod cost;
pub mod failures;
pub mod front;
pub mod hosts;
pub mod run;
pub mod runs;
pub mod table;

use askama::Template;

/// The stylesheet, and the script of the live view (the snapshot needs
/// none).
pub const CSS: &str = include_str!("../static/style.css");
pub const JS: &str = include_str!("../static/app.js");

/// What every page knows about where it is shown.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The live view (links to other pages) or the snapshot (one file:
    /// links to its own sections).
    pub live: bool,
    /// Forms that change things are shown (`--allow-actions`).
    pub actions: bool,
    /// When the page was rendered (UTC).
    pub at: String,
}

impl Ctx {
    pub fn live(actions: bool) -> Ctx {
        Ctx {
            live: true,
            actions,
            at: crate::db::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        }
    }

    pub fn snapshot() -> Ctx {
        Ctx {
            live: false,
            ..Ctx::live(false)
        }
    }

    /// A run's page.
    pub fn run_href(&self, remote_id: &i64) -> String {
        if self.live {
            format!("/runs/{remote_id}")
        } else {
            format!("#run-{remote_id}")
        }
    }

    /// A component's page (in the snapshot: its run's section).
    pub fn component_href(&self, id: &i64, remote_id: &i64) -> String {
        if self.live {
            format!("/components/{id}")
        } else {
            format!("#run-{remote_id}")
        }
    }

    /// The runs list with this query (in the snapshot: the table).
    pub fn runs_href(&self, query: &str) -> String {
        if self.live {
            format!("/runs?{query}")
        } else {
            "#table".to_string()
        }
    }

    /// Another page (in the snapshot: its section).
    pub fn page_href(&self, page: &str) -> String {
        if self.live {
            format!("/{page}")
        } else {
            format!("#{}", if page.is_empty() { "status" } else { page })
        }
    }
}

/// A page in the frame every page shares: its title, the navigation, when
/// it was rendered, read-only or not.
#[derive(Template)]
#[template(path = "frame.html")]
pub struct Frame<'a> {
    pub ctx: &'a Ctx,
    pub title: &'a str,
    /// The page's own HTML (rendered by its template, escaped there).
    pub body: &'a str,
    /// Reload every 45 s while the tab is visible (the front page).
    pub refresh: bool,
    pub css: &'static str,
}

/// A whole page: its body in the frame.
pub fn framed(ctx: &Ctx, title: &str, body: &str, refresh: bool) -> anyhow::Result<String> {
    Ok(Frame {
        ctx,
        title,
        body,
        refresh,
        css: CSS,
    }
    .render()?)
}

/// "3h 05m" for people.
pub fn age(seconds: &i64) -> String {
    crate::printer::human_duration(*seconds)
}

/// Percent-encode a query value (everything but letters, digits and
/// `-_.~`).
pub fn q(value: &str) -> String {
    askama::filters::urlencode_strict(value)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// One CSV line (RFC 4180: a field with a comma, a quote or a line break
/// is quoted, its quotes doubled), with its line break.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let cells: Vec<String> = fields
        .iter()
        .map(|f| {
            let v = f.as_ref();
            if v.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        })
        .collect();
    cells.join(",") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_csv_fields_are_quoted() {
        assert_eq!(q("a b/é&x=1"), "a%20b%2F%C3%A9%26x%3D1");
        assert_eq!(q("label-7_x.y~"), "label-7_x.y~");
        assert_eq!(
            csv_line(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\n"
        );
    }
}
