//! A Command's script with its `{{name}}` parameters. Each placeholder is replaced by a
//! reference to the environment variable `NODEOPS_PARAM_<name>` that carries the value, so
//! the value itself never becomes script text and cannot break out of its quoting.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::api::command::Interpreter;

/// Prefix of the environment variables that carry parameter values.
pub const PARAM_ENV_PREFIX: &str = "NODEOPS_PARAM_";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParameterError {
    #[error("the command does not enable parameters, but parameters were given: {0}")]
    NotEnabled(String),
    #[error("unknown parameters (not in the script): {0}")]
    Unknown(String),
    #[error("parameters without a value (give them, or a default in the Command): {0}")]
    Missing(String),
    #[error(
        "invalid placeholder at byte {0}: a name is letters, digits and _, not starting with a digit"
    )]
    BadPlaceholder(usize),
}

/// Placeholder names used in `content`, sorted and distinct.
pub fn placeholders(content: &str) -> Result<BTreeSet<String>, ParameterError> {
    let mut names = BTreeSet::new();
    for (at, name) in scan(content) {
        names.insert(
            valid_name(name)
                .ok_or(ParameterError::BadPlaceholder(at))?
                .to_string(),
        );
    }
    Ok(names)
}

/// The argv and the parameter environment of a rendered script.
pub type Rendered = (Vec<String>, Vec<(String, String)>);

/// The argv and environment that run `content` with `given` parameters merged over
/// `defaults`.
pub fn render(
    interpreter: Interpreter,
    content: &str,
    enabled: bool,
    defaults: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> Result<Rendered, ParameterError> {
    let names = if enabled {
        placeholders(content)?
    } else {
        BTreeSet::new()
    };
    if !enabled && !given.is_empty() {
        return Err(ParameterError::NotEnabled(join(given.keys())));
    }
    let unknown: Vec<&String> = given.keys().filter(|k| !names.contains(*k)).collect();
    if !unknown.is_empty() {
        return Err(ParameterError::Unknown(join(unknown)));
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !given.contains_key(*n) && !defaults.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(ParameterError::Missing(join(missing)));
    }
    let env = names
        .iter()
        .map(|n| {
            let value = given
                .get(n)
                .or_else(|| defaults.get(n))
                .cloned()
                .unwrap_or_default();
            (format!("{PARAM_ENV_PREFIX}{n}"), value)
        })
        .collect();
    let script = if enabled {
        substitute(interpreter, content)
    } else {
        content.to_string()
    };
    let argv = match interpreter {
        Interpreter::Shell => vec!["/bin/sh".into(), "-c".into(), script],
        Interpreter::Bash => vec!["/bin/bash".into(), "-c".into(), script],
        Interpreter::Python3 => vec!["python3".into(), "-c".into(), script],
    };
    Ok((argv, env))
}

/// `content` with each `{{name}}` replaced by a quoted reference to the parameter's
/// environment variable.
pub fn substitute(interpreter: Interpreter, content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut last = 0;
    for (at, raw) in scan(content) {
        let Some(name) = valid_name(raw) else {
            continue;
        };
        out.push_str(&content[last..at]);
        match interpreter {
            // Double-quoted expansion: the value is one word and never re-parsed.
            Interpreter::Shell | Interpreter::Bash => {
                out.push_str(&format!("\"${{{PARAM_ENV_PREFIX}{name}}}\""))
            }
            Interpreter::Python3 => out.push_str(&format!(
                "__import__('os').environ['{PARAM_ENV_PREFIX}{name}']"
            )),
        }
        last = at + raw.len() + 4;
    }
    out.push_str(&content[last..]);
    out
}

/// `(byte offset of "{{", text between the braces)` of every `{{...}}`.
fn scan(content: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut from = 0;
    std::iter::from_fn(move || {
        let start = from + content[from..].find("{{")?;
        let end = start + 2 + content[start + 2..].find("}}")?;
        from = end + 2;
        Some((start, &content[start + 2..end]))
    })
}

fn valid_name(raw: &str) -> Option<&str> {
    let name = raw.trim();
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64)
        .then_some(name)
}

fn join<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_placeholders() {
        let names = placeholders("df -h {{path}}; du {{ path }} | tail -n {{top}}").expect("ok");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["path", "top"]);
        assert_eq!(
            placeholders("echo {{1x}}"),
            Err(ParameterError::BadPlaceholder(5))
        );
        assert!(
            placeholders("no placeholders, {single} braces")
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn values_travel_in_the_environment_not_the_script() {
        let (argv, env) = render(
            Interpreter::Shell,
            "df -h {{path}}",
            true,
            &map(&[("path", "/")]),
            &map(&[("path", "/var\"; rm -rf / #")]),
        )
        .expect("ok");
        assert_eq!(argv, ["/bin/sh", "-c", "df -h \"${NODEOPS_PARAM_path}\""]);
        assert_eq!(
            env,
            [(
                "NODEOPS_PARAM_path".to_string(),
                "/var\"; rm -rf / #".to_string()
            )]
        );
    }

    #[test]
    fn a_hostile_value_stays_one_word_when_run() {
        let (argv, env) = render(
            Interpreter::Shell,
            "printf '[%s]' {{v}}",
            true,
            &BTreeMap::new(),
            &map(&[("v", "a b; echo pwned $(id)")]),
        )
        .expect("ok");
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env)
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "[a b; echo pwned $(id)]"
        );
    }

    #[test]
    fn defaults_fill_missing_values_and_errors_are_named() {
        let (_, env) = render(
            Interpreter::Bash,
            "{{a}} {{b}}",
            true,
            &map(&[("a", "1"), ("b", "2")]),
            &map(&[("b", "3")]),
        )
        .expect("ok");
        assert_eq!(
            env,
            [
                ("NODEOPS_PARAM_a".into(), "1".into()),
                ("NODEOPS_PARAM_b".into(), "3".into())
            ]
        );
        assert_eq!(
            render(
                Interpreter::Shell,
                "{{a}}",
                true,
                &BTreeMap::new(),
                &BTreeMap::new()
            ),
            Err(ParameterError::Missing("a".into()))
        );
        assert_eq!(
            render(
                Interpreter::Shell,
                "{{a}}",
                true,
                &BTreeMap::new(),
                &map(&[("a", "1"), ("zz", "2")])
            ),
            Err(ParameterError::Unknown("zz".into()))
        );
        assert_eq!(
            render(
                Interpreter::Shell,
                "echo hi",
                false,
                &BTreeMap::new(),
                &map(&[("a", "1")])
            ),
            Err(ParameterError::NotEnabled("a".into()))
        );
    }

    #[test]
    fn without_parameters_enabled_braces_are_left_alone() {
        let (argv, env) = render(
            Interpreter::Shell,
            "echo {{literal}}",
            false,
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .expect("ok");
        assert_eq!(argv[2], "echo {{literal}}");
        assert!(env.is_empty());
    }

    #[test]
    fn python_placeholders_read_the_environment() {
        let (argv, _) = render(
            Interpreter::Python3,
            "print({{x}})",
            true,
            &map(&[("x", "1")]),
            &BTreeMap::new(),
        )
        .expect("ok");
        assert_eq!(
            argv[2],
            "print(__import__('os').environ['NODEOPS_PARAM_x'])"
        );
    }
}
