//! Shell text, quoted once: every value offload puts into a command line or
//! a script that a shell reads (here or on the front end) goes through
//! [`quote`], so file names with spaces, quotes, `$()` or unicode stay one
//! word and are never run.

/// `s` as one shell word (POSIX quoting). A value holding a NUL byte cannot
/// be a shell word at all: it yields `''` (see [`try_quote`] to refuse it).
pub fn quote(s: &str) -> String {
    try_quote(s).unwrap_or_else(|_| "''".to_string())
}

/// `s` as one shell word, or an error when it holds a NUL byte.
pub fn try_quote(s: &str) -> Result<String, NulByte> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|_| NulByte)
}

/// Words joined into one command line that a shell splits back into them.
pub fn join<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// A value with a NUL byte, which no shell word can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a NUL byte cannot be passed to a shell")]
pub struct NulByte;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_one_word() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a b"), "'a b'");
        for v in ["it's $(rm -rf /)", "tab\there", "`x`;y|z", "ünï cödé", "-n"] {
            assert_eq!(shlex::split(&quote(v)), Some(vec![v.to_string()]), "{v}");
        }
        assert_eq!(quote(""), "''");
        assert_eq!(try_quote("nul\0byte"), Err(NulByte));
        assert_eq!(quote("nul\0byte"), "''");
        assert_eq!(
            join(["exec", "--remote-id", "7 8"]),
            "exec --remote-id '7 8'"
        );
    }
}
