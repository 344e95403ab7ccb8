//! Splits an AsyncCommand's command line into argv. The API only admits letters, digits,
//! `_ . / : -` and spaces, so there is no quoting to interpret: words are separated by
//! spaces, and the argv is exec'd as it is.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgvError {
    #[error("the command is empty")]
    Empty,
    #[error("the command contains {0:?}, which is not a letter, digit, space or one of _ . / : -")]
    Forbidden(char),
    #[error("the command is {0} bytes long; at most 1024 are allowed")]
    TooLong(usize),
}

/// Splits `command` into its words, refusing anything outside the admitted characters (the
/// API server already refuses them; this holds even if it did not).
pub fn split(command: &str) -> Result<Vec<String>, ArgvError> {
    if command.len() > 1024 {
        return Err(ArgvError::TooLong(command.len()));
    }
    if let Some(c) = command
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " _./:-".contains(*c)))
    {
        return Err(ArgvError::Forbidden(c));
    }
    let argv: Vec<String> = command
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    if argv.is_empty() {
        return Err(ArgvError::Empty);
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_runs_of_spaces() {
        assert_eq!(split("ls -l /system").expect("ok"), ["ls", "-l", "/system"]);
        assert_eq!(split("  uptime   ").expect("ok"), ["uptime"]);
        assert_eq!(
            split("curl -s http://127.0.0.1:10248/healthz")
                .expect("ok")
                .len(),
            3
        );
    }

    #[test]
    fn refuses_everything_a_shell_would_interpret() {
        for bad in [
            "ls; rm -rf /",
            "echo $(id)",
            "a|b",
            "a && b",
            "echo `id`",
            "a > /etc/x",
            "echo 'x'",
            "a\tb",
            "a\nb",
            "ls *",
            "echo ~",
        ] {
            assert!(
                matches!(split(bad), Err(ArgvError::Forbidden(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            split("ls\u{00a0}-l"),
            Err(ArgvError::Forbidden('\u{00a0}')),
            "unicode look-alike space"
        );
    }

    #[test]
    fn refuses_empty_and_oversized() {
        assert_eq!(split(""), Err(ArgvError::Empty));
        assert_eq!(split("    "), Err(ArgvError::Empty));
        assert_eq!(split(&"a".repeat(1025)), Err(ArgvError::TooLong(1025)));
    }
}
