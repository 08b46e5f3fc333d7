//! Installing offload like any other tool: every binary prints its shell
//! completions and its man page, generated from its command line
//! definition; `remotetool auth status` warns about a ControlPath that
//! several local hosts sharing a home folder would share.

mod common;

const TOOLS: &[&str] = &["remotetool", "prepare", "exec", "poll", "xfer"];

fn run(tool: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin(tool))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_tool_prints_its_completions_for_each_shell() {
    for tool in TOOLS {
        for (shell, mark) in [
            ("bash", format!("_{tool}()")),
            ("zsh", format!("#compdef {tool}")),
            ("fish", format!("complete -c {tool}")),
        ] {
            let (code, out, err) = run(tool, &["--completions", shell]);
            assert_eq!(code, 0, "{tool} {shell}: {err}");
            assert!(out.contains(&mark), "{tool} {shell}: no {mark:?}");
            // Every tool's global options are there (fish spells them without dashes).
            assert!(out.contains("json"), "{tool} {shell} lacks --json");
            assert!(out.contains("dbname"), "{tool} {shell} lacks --dbname");
        }
    }
    let (_, out, _) = run("remotetool", &["--completions", "bash"]);
    for sub in ["results", "unfault", "refresh-auth", "status"] {
        assert!(out.contains(sub), "remotetool's completions lack {sub}");
    }
    let (code, _, err) = run("xfer", &["--completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(err.contains("bash, zsh, fish"), "{err}");
}

#[test]
fn every_tool_names_its_version_and_commit() {
    // The commit as git names it here (build.rs asks the same).
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&git.stdout).trim().to_string();
    for tool in TOOLS {
        let (code, out, err) = run(tool, &["--version"]);
        assert_eq!(code, 0, "{tool}: {err}");
        let line = out.trim_end();
        let want = format!("{tool} {} (", env!("CARGO_PKG_VERSION"));
        assert!(line.starts_with(&want), "{tool}: {line:?}");
        let commit = &line[want.len()..line.len() - 1];
        assert!(line.ends_with(')'), "{tool}: {line:?}");
        if git.status.success() {
            assert!(
                commit == head || commit == format!("{head}+dirty"),
                "{tool}: commit {commit:?}, HEAD is {head}"
            );
        } else {
            assert_eq!(commit, "unknown", "{tool}");
        }
    }
}

#[test]
fn every_tool_prints_its_man_page() {
    for tool in TOOLS {
        let (code, out, err) = run(tool, &["--man"]);
        assert_eq!(code, 0, "{tool}: {err}");
        assert!(
            out.contains(&format!(".TH {tool} 1")),
            "{tool}: {}",
            &out[..out.len().min(200)]
        );
        assert!(
            out.contains(".SH OPTIONS") || out.contains(".SH SUBCOMMANDS"),
            "{tool}"
        );
    }
    let (_, out, _) = run("poll", &["--man"]);
    assert!(out.contains("interval"), "poll's page lacks --interval");
}

#[test]
fn a_control_path_without_the_local_host_draws_a_warning() {
    let db = common::TestDb::new(common::Kind::Sqlite);
    let home = db.home.path();
    let cfg = home.join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host shared\n  HostName 127.0.0.1\n  Port 2201\n  ControlPath {}/cm-%h-%p\n\
             Host mine\n  HostName 127.0.0.1\n  Port 2201\n  ControlPath {}/cm-%l-%h-%p\n",
            home.display(),
            home.display()
        ),
    )
    .unwrap();
    let site = db.site_with(&format!(
        "hosts = [\"shared\", \"mine\"]\nssh_config = \"{}\"",
        cfg.display()
    ));
    let _ = site;
    let out = db.remotetool().args(["auth", "status"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("shared: its ControlPath"), "{err}");
    assert!(err.contains("%l_%h_%p_%r"), "{err}");
    assert!(!err.contains("mine: its ControlPath"), "{err}");
}
