//! `remotetool web`: every page rendered against each backend, in process
//! (the router the server runs, behind its guard), and the real server:
//! the token exchanged for a cookie, the Host header, cross-origin
//! changes refused, hostile log tails shown as text, actions only with
//! `--allow-actions` and recorded as the tool `web`, the snapshot file.

mod common;

use std::io::{BufRead, BufReader, Read, Write};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use offload::remotetool::web::{guard::Rules, server, worker::Worker};
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef";
const HOST: &str = "127.0.0.1:8080";
use common::HOSTILE;

fn router(db: &common::TestDb, cfg: &std::path::Path, actions: bool) -> axum::Router {
    let global = offload::cli::GlobalArgs {
        db: Some(db.url.clone()),
        dbname: None,
        config: Some(cfg.to_path_buf()),
        json: false,
        quiet: true,
        verbose: false,
    };
    let worker = Worker::start(&global).expect("the database thread opens");
    server::router(
        worker,
        Rules::for_tcp(HOST.parse().unwrap(), TOKEN.into()),
        actions,
    )
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    })
}

/// A GET as the browser sends it once it has the cookie.
fn get(app: &axum::Router, path: &str) -> Answer {
    send(
        app,
        Request::get(path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, format!("offload_token={TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
}

/// A page with what moves with the clock replaced: times, dates, the
/// charts' hours and days, ages ("3h 05m", "42s"), and the host and
/// process that wrote a history row.
fn without_the_clock(html: &str) -> String {
    let rules = [
        (
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?",
            "[time]",
        ),
        (r"\d{4}-\d{2}-\d{2}", "[date]"),
        (r"\b\d{2}-\d{2} \d{2}:00\b", "[hour]"),
        (r">\d{2}-\d{2}<", ">[day]<"),
        (
            r"\b-?\d+d \d{2}h\b|\b-?\d+h \d{2}m\b|\b-?\d+[ms]\b",
            "[age]",
        ),
        // The test's own folder.
        (r"/tmp/\.tmp\w+", "[tmp]"),
        // Who wrote a history row: this machine and a process of the test.
        (
            r"\b(remotetool|web|poll|exec|prepare) [^<\s:]+:\d+\b",
            "$1 [host:pid]",
        ),
    ];
    let mut out = html.to_string();
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}

fn post(app: &axum::Router, path: &str, form: &str, site: &str) -> Answer {
    send(
        app,
        Request::post(path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, format!("offload_token={TOKEN}"))
            .header("sec-fetch-site", site)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap(),
    )
}

each_backend! {
    fn every_page_renders_what_the_commands_say(db) {
        let cfg = db.web_scene();
        let app = router(db, &cfg, false);
        for path in ["/", "/table", "/table?since=24h", "/runs", "/runs/1", "/runs/2", "/failures", "/failures?since=all", "/cost", "/hosts", "/charts"] {
            let a = get(&app, path);
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
            let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
            assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(a.headers[header::REFERRER_POLICY], "no-referrer");
            assert!(a.body.contains("read-only"), "{path}");
            // The database URL's password never appears.
            assert!(!a.body.contains("offload:offload@"), "{path}");
        }
        // The front page lists run 1 under "needs a person", with its remedy.
        let front = get(&app, "/").body;
        let attention = &front[front.find("id=\"attention\"").expect("a table of runs needing a person")..];
        assert!(attention.contains("href=\"/runs/1\"") && attention.contains("remotetool retry 1"), "{front}");
        assert!(front.contains("data-refresh=\"45\""));
        // The run page names the failed component; its page shows the hostile
        // tail as text, never as markup.
        let run = get(&app, "/runs/1").body;
        let cid = run
            .split("href=\"/components/")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("a link to the failed component");
        let comp = get(&app, &format!("/components/{cid}")).body;
        assert!(comp.contains("&#60;script&#62;document.title="), "{comp}");
        assert!(!comp.contains(HOSTILE), "the tail went out as markup");
        let failures = get(&app, "/failures?since=all").body;
        assert!(failures.contains("&#60;img src=x onerror=alert(1)&#62;") && !failures.contains("<img src=x"), "{failures}");
        // A run or component that is not there is 404, a bad filter 400.
        assert_eq!(get(&app, "/runs/999").status, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/runs?state=sideways").status, StatusCode::BAD_REQUEST);
        assert!(get(&app, "/runs?state=sideways").body.contains("unknown run state &#39;sideways&#39;"));
    }

    fn pages_keep_their_html_and_pictures(db) {
        // Every page of the scene pinned, with what moves with the clock
        // (times, dates, ages, chart hours) replaced by placeholders. The
        // pictures are in the pages (the stacked bars, the charts' frames).
        let cfg = db.web_scene();
        let app = router(db, &cfg, true);
        let pages = [
            ("front", "/"),
            ("table", "/table"),
            ("runs", "/runs"),
            ("run", "/runs/1"),
            ("component", "/components/1"),
            ("failures", "/failures?since=all"),
            ("cost", "/cost"),
            ("hosts", "/hosts"),
            ("charts", "/charts"),
        ];
        // One snapshot a page: every backend renders it the same.
        for (name, path) in pages {
            let a = get(&app, path);
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
            insta::assert_snapshot!(format!("page_{name}"), without_the_clock(&a.body));
        }
    }

    fn charts_draw_what_their_numbers_say(db) {
        let cfg = db.web_scene();
        let recipes = common::fixtures().join("recipes");
        std::fs::write(&cfg, format!("recipes = \"{}\"\n", recipes.display())).unwrap();
        let hour_ago = db.chart_scene();
        db.assert_tallies_match();
        let app = router(db, &cfg, false);
        let page = get(&app, "/charts");
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for id in ["chart-throughput", "chart-runtimes-chip", "chart-core-hours", "chart-transfers"] {
            assert!(page.body.contains(&format!("id=\"{id}\"")), "{id} missing");
        }
        // The recipe's time_cost is marked: too few samples to replace it.
        assert!(page.body.contains("time_cost 150 s"), "{}", page.body);
        assert!(page.body.contains("recipe "), "where the figure came from");
        // A host name is text, not markup, in the picture and the table.
        assert!(!page.body.contains("fe1<b>") && page.body.contains("fe1&#60;b&#62; pull"), "{}", page.body);
        let csv = |name: &str| {
            let a = get(&app, &format!("/charts/{name}.csv"));
            assert_eq!(a.status, StatusCode::OK, "{name}: {}", a.body);
            assert!(a.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
            a.body
        };
        let hour = &hour_ago[..13];
        let throughput = csv("throughput");
        assert_eq!(throughput.lines().count(), 49, "a header and 48 hours");
        assert!(throughput.contains(&format!("{hour}:00,2\n")), "{throughput}");
        let runtimes = csv("runtimes-chip");
        assert!(runtimes.lines().any(|l| l.ends_with(",2") && l.contains("-")), "both 40 s components in one bin: {runtimes}");
        let core = csv("core-hours");
        assert!(core.contains(&format!("{},2.00,1\n", &hour_ago[..10])), "{core}");
        let rates = csv("transfers");
        assert!(rates.contains(&format!("{hour}:00,fe1<b>,pull,1,50.0,25.0")), "{rates}");
        assert_eq!(get(&app, "/charts/nothing.csv").status, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/charts/throughput").status, StatusCode::BAD_REQUEST);
        // The table's pace: the two done in the last hour count, a failed
        // attempt applied then does not, nor one done two days ago.
        db.batch(&format!(
            "INSERT INTO results (component_id, remote_id, work_item_id, attempt, state, outputs, applied_at) \
               SELECT id, remote_id, work_item_id, 1, 'failed', '[]', '{hour_ago}' FROM remote_components WHERE remote_id = 1 AND state = 'failed'; \
             INSERT INTO results (component_id, remote_id, work_item_id, attempt, state, outputs, applied_at) \
               SELECT id, remote_id, work_item_id, 1, 'done', '[]', '2020-01-01 00:00:00' FROM remote_components WHERE remote_id = 1 AND state <> 'failed';"
        ))
        .unwrap();
        let table = get(&app, "/table").body;
        assert!(
            table.contains("<tr><td>WEB</td><td class=\"n\">4</td><td class=\"n\">2</td><td>in 2d"),
            "{table}"
        );
    }

    fn the_runs_list_filters_sorts_and_pages_in_the_url(db) {
        let cfg = db.web_scene();
        let app = router(db, &cfg, false);
        let error = get(&app, "/runs?state=error").body;
        assert!(error.contains("href=\"/runs/1\"") && !error.contains("href=\"/runs/2\""), "{error}");
        let page2 = get(&app, "/runs?per=1&page=2&sort=oldest").body;
        assert!(page2.contains("href=\"/runs/2\"") && page2.contains("Runs 2–2 of 2"), "{page2}");
        assert!(page2.contains("rel=\"prev\"") && page2.contains("sort=oldest"));
        let found = get(&app, "/runs?q=2").body;
        assert!(found.contains("href=\"/runs/2\"") && !found.contains("href=\"/runs/1\""));
        let csv = get(&app, "/runs?state=error,new&format=csv");
        assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
        let lines: Vec<&str> = csv.body.lines().collect();
        assert!(lines[0].starts_with("remote_id,state,label"), "{}", csv.body);
        assert_eq!(lines.len(), 3, "{}", csv.body);
        let json: serde_json::Value = serde_json::from_str(&get(&app, "/runs?label=WEB&format=json").body).unwrap();
        assert_eq!(json["total"], 2);
        assert_eq!(json["runs"][0]["remote_id"], 2);
    }

    fn the_guard_wants_the_token_the_host_and_the_same_origin(db) {
        let cfg = db.web_scene();
        let app = router(db, &cfg, true);
        let bare = |path: &str, host: &str| {
            send(&app, Request::get(path).header(header::HOST, host).body(Body::empty()).unwrap())
        };
        assert_eq!(bare("/", HOST).status, StatusCode::UNAUTHORIZED);
        assert_eq!(bare("/?token=wrong", HOST).status, StatusCode::UNAUTHORIZED);
        let swap = bare(&format!("/runs?state=error&token={TOKEN}"), HOST);
        assert_eq!(swap.status, StatusCode::SEE_OTHER);
        assert_eq!(swap.headers[header::LOCATION], "/runs?state=error");
        let cookie = swap.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        // Another name for this address (DNS rebinding) is refused.
        let evil = send(&app, Request::get("/").header(header::HOST, "evil.example:8080")
            .header(header::COOKIE, format!("offload_token={TOKEN}")).body(Body::empty()).unwrap());
        assert_eq!(evil.status, StatusCode::MISDIRECTED_REQUEST);
        // A change from another site is refused and changes nothing.
        let cross = post(&app, "/runs/1/unfault", "reason=x&confirm=yes", "cross-site");
        assert_eq!(cross.status, StatusCode::FORBIDDEN);
        let foreign = send(&app, Request::post("/runs/1/unfault").header(header::HOST, HOST)
            .header(header::COOKIE, format!("offload_token={TOKEN}"))
            .header(header::ORIGIN, "http://evil.example")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("reason=x&confirm=yes")).unwrap());
        assert_eq!(foreign.status, StatusCode::FORBIDDEN);
        let history = db.open().read(|s| s.history(Some(1), 100)).unwrap();
        assert!(history.iter().all(|h| h.tool != "web"), "{history:?}");
    }

    fn actions_need_allow_actions_a_reason_and_are_recorded(db) {
        let cfg = db.web_scene();
        let read_only = router(db, &cfg, false);
        assert!(!get(&read_only, "/runs/1").body.contains("action=\"/runs/1/retry\""));
        let refused = post(&read_only, "/runs/1/retry", "reason=fixed&confirm=yes", "same-origin");
        assert!(refused.status == StatusCode::METHOD_NOT_ALLOWED || refused.status == StatusCode::NOT_FOUND, "{}", refused.status);
        let app = router(db, &cfg, true);
        let page = get(&app, "/runs/1").body;
        assert!(page.contains("action=\"/runs/1/retry\"") && page.contains("actions allowed"), "{page}");
        let no_reason = post(&app, "/runs/1/retry", "reason=&confirm=yes", "same-origin");
        assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
        assert!(no_reason.body.contains("say why"));
        let done = post(&app, "/runs/1/retry", "reason=calibration+files+restored&confirm=yes", "same-origin");
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.body.contains("run 1:"), "{}", done.body);
        // As `remotetool retry` would: run 1 withdrawn, its work items free
        // again; the history says who, where and why.
        let mut c = db.open();
        let run = c.read(|s| s.run(1)).unwrap().unwrap();
        assert_eq!(run.state, offload::state::RunState::Cancelled);
        let history = c.read(|s| s.history(Some(1), 100)).unwrap();
        let web: Vec<_> = history.iter().filter(|h| h.tool == "web").collect();
        assert!(web.iter().any(|h| h.message.as_deref().unwrap_or("").contains("calibration files restored")), "{history:?}");
        assert!(web.iter().all(|h| h.host == offload::host::this_host()));
        // The same refusals as the command: retrying it again.
        let again = post(&app, "/runs/1/retry", "reason=twice&confirm=yes", "same-origin");
        assert!(again.status.is_client_error(), "{}", again.body);
    }
}

/// The real server: the URL on its first line, the token swapped for a
/// cookie, and a snapshot file with no script in it.
#[test]
fn the_server_and_the_snapshot() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let cfg = db.web_scene();
    let mut child = db
        .std_remotetool()
        .args(["--config"])
        .arg(&cfg)
        .args(["web", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/?token="),
        "{url}"
    );
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let token = url.split("token=").nth(1).unwrap().to_string();
    let raw = |req: String| {
        let mut s = std::net::TcpStream::connect(&hostport).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let swap = raw(format!(
        "GET /?token={token} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    ));
    assert!(swap.starts_with("HTTP/1.1 303"), "{swap}");
    assert!(
        swap.contains(&format!("offload_token={token}; HttpOnly; SameSite=Strict")),
        "{swap}"
    );
    let front = raw(format!(
        "GET / HTTP/1.1\r\nHost: {hostport}\r\nCookie: offload_token={token}\r\nConnection: close\r\n\r\n"
    ));
    assert!(
        front.starts_with("HTTP/1.1 200") && front.contains("Needs a person"),
        "{front}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let file = db.home.path().join("pub/offload.html");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    db.remotetool()
        .arg("--config")
        .arg(&cfg)
        .args(["web", "--snapshot"])
        .arg(&file)
        .assert()
        .success();
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(
        html.contains("<style>") && !html.contains("<script"),
        "the snapshot needs no script"
    );
    assert!(
        html.contains("id=\"status\"")
            && html.contains("id=\"run-1\"")
            && html.contains("href=\"#run-1\"")
    );
    assert!(html.contains("&#60;script&#62;document.title=") && !html.contains(HOSTILE));
    // Written whole: no temporary name left beside it.
    let left: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// On a unix socket: made 0600 in a folder made 0700, answering without a
/// token (the permissions are the guard), removed when stopped; a folder
/// others may enter is refused.
#[test]
fn a_unix_socket_is_guarded_by_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let db = common::TestDb::new(common::Kind::Sqlite);
    let cfg = db.web_scene();
    let open = db.home.path().join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    db.remotetool()
        .arg("--config")
        .arg(&cfg)
        .args(["web", "--listen"])
        .arg(format!("unix:{}", open.join("web.sock").display()))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("must be 0700"));

    let dir = db.home.path().join("private/web");
    let sock = dir.join("web.sock");
    let mut child = db
        .std_remotetool()
        .arg("--config")
        .arg(&cfg)
        .args(["web", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), format!("unix:{}", sock.display()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&sock), 0o600);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("Needs a person"),
        "{answer}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(
        !sock.exists(),
        "the socket is removed when the server stops"
    );
}

/// A snapshot that cannot be written for this machine's reason is exit 6
/// and leaves nothing half-written.
#[test]
fn a_snapshot_on_a_read_only_disk_is_exit_6() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let cfg = db.web_scene();
    let disk = common::Tmpfs::mount(&db.home.path().join("pub"), "size=1m");
    disk.remount("ro");
    db.remotetool()
        .arg("--config")
        .arg(&cfg)
        .args(["web", "--snapshot"])
        .arg(disk.0.join("offload.html"))
        .assert()
        .code(6)
        .stderr(predicates::str::contains("cannot write the snapshot"));
    assert_eq!(std::fs::read_dir(&disk.0).unwrap().count(), 0);
}
