//! The live view: an HTTP server on a current-thread runtime, every route
//! behind the guard ([`super::guard`]), every page rendered on the
//! database thread ([`super::worker`]). Without `--allow-actions` there
//! are no POST routes at all.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::actions::{self, ActionForm};
use super::guard::{self, Rules};
use super::pages::{self, Ctx};
use super::worker::Worker;
use super::App;
use crate::exit::{self, ExitStatus};

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    code: u16,
    message: String,
}

#[derive(Template)]
#[template(path = "done.html")]
struct DonePage {
    message: String,
    back: String,
}

/// The routes of the view.
pub fn router(worker: Worker, rules: Rules, actions: bool) -> Router {
    let app = App {
        worker,
        rules: std::sync::Arc::new(rules),
        actions,
    };
    let mut r = Router::new()
        .route("/", get(front))
        .route("/table", get(table))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run))
        .route("/components/{id}", get(component))
        .route("/failures", get(failures))
        .route("/cost", get(cost))
        .route("/hosts", get(hosts))
        .route("/charts", get(charts))
        .route("/charts/{file}", get(chart_csv))
        .route("/static/style.css", get(css))
        .route("/static/app.js", get(js));
    if actions {
        r = r
            .route("/runs/{id}/{action}", post(act_on_run))
            .route("/pause", post(pause))
            .route("/resume", post(resume));
    }
    r.layer(axum::middleware::from_fn_with_state(
        app.clone(),
        guard::guard,
    ))
    .with_state(app)
}

/// An error as a page: a usage error (a bad filter, no such run) is 400 or
/// 404, "try later" 503, the rest 500; the message escaped.
fn error_page(e: &anyhow::Error) -> Response {
    let text = exit::one_line(e);
    let status = match exit::status_of(e) {
        ExitStatus::Usage if text.starts_with("no run") || text.starts_with("no component") => {
            StatusCode::NOT_FOUND
        }
        ExitStatus::Usage | ExitStatus::NothingToDo => StatusCode::BAD_REQUEST,
        ExitStatus::TryLater | ExitStatus::Auth => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = ErrorPage {
        code: status.as_u16(),
        message: text,
    }
    .render()
    .unwrap_or_default();
    (status, Html(body)).into_response()
}

fn html(r: anyhow::Result<anyhow::Result<String>>) -> Response {
    match r.and_then(|r| r) {
        Ok(page) => Html(page).into_response(),
        Err(e) => error_page(&e),
    }
}

async fn front(State(app): State<App>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(app.worker.call(move |s| pages::front::page(s, &ctx)).await)
}

async fn table(State(app): State<App>, Query(q): Query<pages::table::TableQuery>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(
        app.worker
            .call(move |s| pages::table::page(s, &q, &ctx))
            .await,
    )
}

async fn runs(State(app): State<App>, Query(q): Query<pages::runs::RunsQuery>) -> Response {
    let ctx = Ctx::live(app.actions);
    let format = q.format.clone().unwrap_or_default();
    match format.as_str() {
        "csv" | "json" => {
            let got = app
                .worker
                .call(move |s| pages::runs::gather(s, &q))
                .await
                .and_then(|r| r);
            match got {
                Err(e) => error_page(&e),
                Ok(list) if format == "csv" => (
                    [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                    pages::runs::csv(&list),
                )
                    .into_response(),
                Ok(list) => axum::Json(list).into_response(),
            }
        }
        "" | "html" => html(
            app.worker
                .call(move |s| pages::runs::page(s, &q, &ctx))
                .await,
        ),
        other => error_page(&exit::usage(format!(
            "format={other}: one of html, csv, json"
        ))),
    }
}

async fn run(State(app): State<App>, Path(id): Path<i64>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(
        app.worker
            .call(move |s| pages::run::page(s, id, &ctx))
            .await,
    )
}

async fn component(State(app): State<App>, Path(id): Path<i64>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(
        app.worker
            .call(move |s| pages::component::page(s, id, &ctx))
            .await,
    )
}

async fn failures(
    State(app): State<App>,
    Query(q): Query<pages::failures::FailuresQuery>,
) -> Response {
    let ctx = Ctx::live(app.actions);
    html(
        app.worker
            .call(move |s| pages::failures::page(s, &q, &ctx))
            .await,
    )
}

async fn cost(State(app): State<App>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(app.worker.call(move |s| pages::cost::page(s, &ctx)).await)
}

async fn charts(State(app): State<App>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(app.worker.call(move |s| pages::charts::page(s, &ctx)).await)
}

/// `/charts/NAME.csv`: one chart's numbers.
async fn chart_csv(State(app): State<App>, Path(file): Path<String>) -> Response {
    let Some(name) = file.strip_suffix(".csv").map(str::to_string) else {
        return error_page(&crate::exit::usage(format!(
            "no chart file '{file}': the numbers of a chart are at /charts/NAME.csv"
        )));
    };
    match app
        .worker
        .call(move |s| pages::charts::csv(s, &name))
        .await
        .and_then(|r| r)
    {
        Ok(Some(text)) => {
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such chart\n").into_response(),
        Err(e) => error_page(&e),
    }
}

async fn hosts(State(app): State<App>) -> Response {
    let ctx = Ctx::live(app.actions);
    html(app.worker.call(move |s| pages::hosts::page(s, &ctx)).await)
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::JS,
    )
        .into_response()
}

/// The page that follows an action: what it did, and the way back.
fn acted(app: &App, done: anyhow::Result<anyhow::Result<actions::Done>>) -> Response {
    match done.and_then(|d| d) {
        Err(e) => error_page(&e),
        Ok(d) => {
            let ctx = Ctx::live(app.actions);
            let body = match (DonePage {
                message: d.message,
                back: d.to,
            })
            .render()
            {
                Ok(b) => b,
                Err(e) => return error_page(&e.into()),
            };
            match pages::framed(&ctx, "Done", &body, false) {
                Ok(p) => Html(p).into_response(),
                Err(e) => error_page(&e),
            }
        }
    }
}

async fn act_on_run(
    State(app): State<App>,
    Path((id, action)): Path<(i64, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    let done = app
        .worker
        .call(move |s| actions::act(s, &action, Some(id), &f))
        .await;
    acted(&app, done)
}

async fn pause(State(app): State<App>, Form(f): Form<ActionForm>) -> Response {
    let done = app
        .worker
        .call(move |s| actions::act(s, "pause", None, &f))
        .await;
    acted(&app, done)
}

async fn resume(State(app): State<App>, Form(f): Form<ActionForm>) -> Response {
    let done = app
        .worker
        .call(move |s| actions::act(s, "resume", None, &f))
        .await;
    acted(&app, done)
}
