//! The original tools' command lines, still accepted as written:
//!
//! ```text
//! remotetool -definebyquery -label L -stage chip -path_base P [-limit N]
//! remotetool -dbname gpc1 -revertauth -label L
//! ```
//!
//! Single-dash long options are rewritten to the modern spelling before clap
//! sees them; a mode word (`-definebyquery`) becomes the subcommand.

/// Mode words and the subcommand each stands for.
const MODES: &[(&str, &str)] = &[
    ("-definebyquery", "define"),
    ("-revertauth", "revertauth"),
    ("-listrun", "list"),
];

/// Single-dash options and their modern names.
const OPTIONS: &[(&str, &str)] = &[
    ("-dbname", "--dbname"),
    ("-label", "--label"),
    ("-stage", "--stage"),
    ("-path_base", "--path-base"),
    ("-limit", "--limit"),
    ("-remote_id", "--remote-id"),
    ("-state", "--state"),
    ("-job_policy", "--job-policy"),
    ("-target", "--target"),
];

/// Rewrite an argument list written in the original spelling. Lists without
/// a single-dash long option are returned unchanged.
pub fn translate(args: Vec<String>) -> Vec<String> {
    let Some((prog, rest)) = args.split_first() else {
        return args;
    };
    let is_legacy = rest
        .iter()
        .any(|a| MODES.iter().any(|(m, _)| m == a) || OPTIONS.iter().any(|(o, _)| o == a));
    if !is_legacy {
        return args;
    }
    let mut out = vec![prog.clone()];
    let mut mode = None;
    let mut tail = Vec::new();
    for a in rest {
        if let Some((_, sub)) = MODES.iter().find(|(m, _)| m == a) {
            if mode.is_none() {
                mode = Some(sub.to_string());
                continue;
            }
        }
        match OPTIONS.iter().find(|(o, _)| o == a) {
            Some((_, modern)) => tail.push(modern.to_string()),
            None => tail.push(a.clone()),
        }
    }
    // Global options (--dbname) are accepted after the subcommand too.
    out.extend(mode);
    out.extend(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> String {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        translate(v).join(" ")
    }

    #[test]
    fn seed_lines() {
        assert_eq!(
            t("remotetool -definebyquery -label L -stage chip -path_base P -limit 5"),
            "remotetool define --label L --stage chip --path-base P --limit 5"
        );
        assert_eq!(
            t("remotetool -dbname gpc1 -revertauth -label L"),
            "remotetool revertauth --dbname gpc1 --label L"
        );
    }

    #[test]
    fn modern_lines_untouched() {
        assert_eq!(
            t("remotetool list --label -x"),
            "remotetool list --label -x"
        );
        assert_eq!(
            t("remotetool define --label L"),
            "remotetool define --label L"
        );
    }
}
