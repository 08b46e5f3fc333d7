//! The web view in a real browser: Debian's chromium, driven through its
//! chromedriver (both from `scripts/testbed up`, one version) against the
//! real `remotetool web`. What an operator does: a failing run under
//! "needs a person", click through to its failed component and read its
//! log tail (a hostile one shown as text, never run); filter the runs
//! list, the filter in the URL, kept going back; retry from the page and
//! see it in `remotetool show`; no token, no page; a change from another
//! site refused. Screenshots of the main pages are kept in
//! `target/screenshots/` for a person to look at (the book shows them).
//!
//! These tests fail, never skip, when the browser is missing: `scripts/testbed
//! up` installs it.

mod common;

use std::io::BufRead;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a port of its own, once it answers.
fn chromedriver() -> (Killed, u16) {
    let bin = std::env::var("OFFLOAD_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin}: {e}; `scripts/testbed up` installs chromium and chromium-driver (browser tests never skip)")
        });
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// `remotetool web` on a free port; its URL (token included).
fn serve(db: &common::TestDb, cfg: &std::path::Path, actions: bool) -> (Killed, String) {
    let mut c = db.std_remotetool();
    c.arg("--config")
        .arg(cfg)
        .args(["web", "--listen", "127.0.0.1:0"]);
    if actions {
        c.arg("--allow-actions");
    }
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    (Killed(child), url.trim().to_string())
}

async fn browser(port: u16) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1000"]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session through chromedriver")
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Wait until the page's URL satisfies `ok` (a click's navigation may
/// land after the click returns).
async fn wait_url(c: &Client, ok: impl Fn(&url::Url) -> bool) -> url::Url {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let u = c.current_url().await.unwrap();
        if ok(&u) {
            return u;
        }
        assert!(Instant::now() < deadline, "the page stayed at {u}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Click the element `css` finds.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Wait until the page's source holds `needle`; the source then.
async fn wait_source(c: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = c.source().await.unwrap_or_default();
        if body.contains(needle) {
            return body;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn an_operator_clicks_through_filters_and_retries() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let cfg = db.web_scene();
    db.chart_scene();
    std::fs::write(
        &cfg,
        format!(
            "recipes = \"{}\"\n",
            common::fixtures().join("recipes").display()
        ),
    )
    .unwrap();
    let (_driver, port) = chromedriver();
    let (_server, url) = serve(&db, &cfg, true);
    let origin = url.split("/?").next().unwrap().to_string();
    block_on(async {
        let c = browser(port).await;
        // The token swapped for the cookie: the address bar loses it.
        c.goto(&url).await.unwrap();
        assert_eq!(
            c.current_url().await.unwrap().as_str(),
            format!("{origin}/")
        );
        let attention = text(&c, "#attention").await;
        assert!(attention.contains("WEB"), "{attention}");
        assert!(attention.contains("remotetool retry 1"), "{attention}");
        shot(&c, "status").await;

        // Click through to the failed component and its log tail.
        click(&c, "#attention a[href='/runs/1']").await;
        wait_url(&c, |u| u.path() == "/runs/1").await;
        shot(&c, "run").await;
        click(&c, "table.failed a").await;
        wait_url(&c, |u| u.path().starts_with("/components/")).await;
        let tail = text(&c, "#stderr").await;
        assert!(
            tail.contains(common::HOSTILE),
            "the tail is shown as text: {tail}"
        );
        let title = c.execute("return document.title", vec![]).await.unwrap();
        assert_ne!(title, json!("pwned"), "the hostile tail ran");
        shot(&c, "component").await;

        // Filter the runs list: the filter is the URL, and going back keeps it.
        c.goto(&format!("{origin}/runs")).await.unwrap();
        let all = c.find_all(Locator::Css("#runs tr")).await.unwrap().len();
        click(&c, "select[name=state] option[value=error]").await;
        click(&c, "form.filters button").await;
        let filtered = wait_url(&c, |u| u.query().unwrap_or("").contains("state=error")).await;
        let rows = c.find_all(Locator::Css("#runs tr")).await.unwrap().len();
        assert!(rows < all, "{rows} rows of {all}");
        shot(&c, "runs").await;
        click(&c, "#runs a[href='/runs/1']").await;
        wait_url(&c, |u| u.path() == "/runs/1").await;
        c.back().await.unwrap();
        wait_url(&c, |u| *u == filtered).await;
        let selected = c
            .execute(
                "return document.querySelector('select[name=state]').value",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(selected, json!("error"));

        // The charts: drawn, with their numbers a click away.
        c.goto(&format!("{origin}/charts")).await.unwrap();
        let drawn = c
            .execute(
                "return document.querySelectorAll('svg.chart').length",
                vec![],
            )
            .await
            .unwrap();
        assert!(drawn.as_u64().unwrap() >= 4, "{drawn}");
        click(&c, "#chart-runtimes-chip summary").await;
        let numbers = text(&c, "#chart-runtimes-chip table").await;
        assert!(numbers.contains("components"), "{numbers}");
        shot(&c, "charts").await;

        // Rector's table: a row per label and stage, its counts links.
        c.goto(&format!("{origin}/table")).await.unwrap();
        let row = text(&c, "table").await;
        assert!(row.contains("WEB") && row.contains("chip"), "{row}");
        shot(&c, "table").await;

        // Retry from the page: a reason, "sure", and the browser's own
        // question answered.
        c.goto(&format!("{origin}/runs/1")).await.unwrap();
        let form = c
            .find(Locator::Css("form[action='/runs/1/retry']"))
            .await
            .unwrap();
        form.find(Locator::Css("input[name=reason]"))
            .await
            .unwrap()
            .send_keys("flat files restored")
            .await
            .unwrap();
        form.find(Locator::Css("input[name=confirm]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        form.find(Locator::Css("button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let asked = c.get_alert_text().await.unwrap();
        assert!(asked.contains("run 1"), "{asked}");
        c.accept_alert().await.unwrap();
        let done = wait_source(&c, "id=\"done\"").await;
        assert!(done.contains("run 1:"), "{done}");

        // A change from another site: refused, nothing changed.
        let page = format!(
            "data:text/html,<form method=post action='{origin}/runs/2/abort'><input name=reason value=x><input name=confirm value=yes></form><script>document.forms[0].submit()</script>"
        );
        c.goto(&page).await.unwrap();
        wait_source(&c, "refused: a change from another site").await;

        // Without the cookie (nor the token), no page.
        c.delete_all_cookies().await.unwrap();
        c.goto(&format!("{origin}/")).await.unwrap();
        let body = c.source().await.unwrap();
        assert!(body.contains("needs its token"), "{body}");
        c.close().await.unwrap();
    });
    // What the command says after the page's retry: run 1 withdrawn, its
    // work items free; run 2 untouched by the other site's post.
    let show = common::json_of(db.remotetool().args(["show", "1", "--json"]));
    assert_eq!(show["state"], "cancelled", "{show}");
    assert!(show["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["tool"] == "web"
            && h["message"]
                .as_str()
                .unwrap_or("")
                .contains("flat files restored")));
    let two = common::json_of(db.remotetool().args(["show", "2", "--json"]));
    assert_eq!(two["state"], "new");
    let free = db
        .open()
        .read(|s| s.count_free_items("WEB", "chip"))
        .unwrap();
    assert_eq!(
        free, 2,
        "the retried run's work items are free for the next define"
    );
    let again = db
        .remotetool()
        .args([
            "define",
            "--label",
            "WEB",
            "--stage",
            "chip",
            "--path-base",
            "/data/runs",
        ])
        .output()
        .unwrap();
    assert!(again.status.success());
    let id = String::from_utf8_lossy(&again.stdout).trim().to_string();
    let queued = common::json_of(db.remotetool().args(["show", &id, "--json"]));
    assert_eq!(queued["components_by_state"]["queued"], 2, "{queued}");
}
