//! Hostile input, generated: whatever string reaches the argv splitter, the parameter
//! renderer, the cron parser or the status logic, nothing panics, nothing the user did not
//! write is run, and no value is ever spliced into text a shell or interpreter parses.
//! (proptest: cargo-fuzz needs a nightly toolchain this project does not require.)

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use nodeops::api::command::Interpreter;
use nodeops::engine::{argv, script};
use nodeops::schedule::{self, Due};
use proptest::prelude::*;

const METACHARACTERS: &str = ";|&$`'\"\\<>(){}[]*?!~#\n\r\t%^=,@";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any string: refused with the offending character, or split into words made only of
    /// the admitted characters, which joined with spaces give the input back.
    #[test]
    fn argv_split_never_lets_a_metacharacter_through(command in "\\PC{0,300}") {
        match argv::split(&command) {
            Ok(words) => {
                prop_assert!(!words.is_empty());
                for w in &words {
                    prop_assert!(!w.is_empty());
                    prop_assert!(w.chars().all(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c)), "{w:?}");
                }
                let squeezed: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
                prop_assert_eq!(words.iter().map(String::as_str).collect::<Vec<_>>(), squeezed);
            }
            Err(argv::ArgvError::Forbidden(c)) => {
                prop_assert!(command.contains(c));
                prop_assert!(!(c.is_ascii_alphanumeric() || " _./:-".contains(c)));
            }
            Err(argv::ArgvError::Empty) => prop_assert!(command.trim().is_empty()),
            Err(argv::ArgvError::TooLong(n)) => prop_assert!(n > 1024),
        }
    }

    /// Any command with a shell metacharacter anywhere is refused.
    #[test]
    fn argv_split_refuses_every_metacharacter(
        prefix in "[a-z ]{0,20}",
        meta in proptest::sample::select(METACHARACTERS.chars().collect::<Vec<_>>()),
        suffix in "[a-z ]{0,20}",
    ) {
        let command = format!("{prefix}{meta}{suffix}");
        prop_assert_eq!(argv::split(&command), Err(argv::ArgvError::Forbidden(meta)));
    }

    /// Parameter values, however hostile, reach the script only through its environment:
    /// the rendered script text never contains a value, and the environment carries it
    /// verbatim.
    #[test]
    fn parameter_values_never_enter_the_script_text(
        value in "\\PC{1,200}",
        interpreter in proptest::sample::select(vec![Interpreter::Shell, Interpreter::Bash, Interpreter::Python3]),
        before in "[a-z ]{0,20}",
        after in "[a-z ]{0,20}",
    ) {
        let content = format!("echo {before}{{{{target}}}}{after}");
        let given = BTreeMap::from([("target".to_string(), value.clone())]);
        let (argv, env) = script::render(interpreter, &content, true, &BTreeMap::new(), &given)
            .expect("renders");
        let text = argv.last().expect("script").clone();
        // The text must not depend on the value at all: rendering a neutral value gives the
        // same text. (Searching the text for the value is wrong: a value such as `'` also
        // occurs in the fixed text the interpreter reads the environment with.)
        let neutral = BTreeMap::from([("target".to_string(), "x".to_string())]);
        let (neutral_argv, _) = script::render(interpreter, &content, true, &BTreeMap::new(), &neutral)
            .expect("renders");
        prop_assert_eq!(&argv, &neutral_argv, "value {:?} changed the script", value);
        prop_assert!(!text.contains("{{"), "{text:?}");
        prop_assert_eq!(env, vec![("NODEOPS_PARAM_target".to_string(), value)]);
    }

    /// Any content: placeholder extraction never panics, and a name it returns is a valid
    /// environment variable suffix.
    #[test]
    fn placeholders_never_panic(content in "\\PC{0,300}") {
        if let Ok(names) = script::placeholders(&content) {
            for n in names {
                prop_assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                prop_assert!(!n.starts_with(|c: char| c.is_ascii_digit()));
            }
        }
    }

    /// Any cron text is either refused as InvalidCronExpression, or accepted with a next
    /// slot (when it has one: `0 0 31 2 *` never comes) that is in the future and matches
    /// the expression.
    #[test]
    fn cron_text_is_refused_by_reason_or_has_a_future_matching_slot(
        expr in prop_oneof![
            "[0-9*/,\\- A-Za-z?#LW]{0,40}",
            // Five cron-shaped fields, in range or not: both branches are exercised.
            "(\\*|[0-9]{1,2})(/[0-9])? (\\*|[0-9]{1,2}) (\\*|[0-9]{1,2}) (\\*|[0-9]{1,2}) (\\*|[0-9])",
        ],
    ) {
        let t: Timestamp = "2026-03-29T00:30:00Z".parse().expect("ts");
        match schedule::parse_cron(&expr) {
            Err(e) => prop_assert_eq!(e.reason(), "InvalidCronExpression"),
            Ok(cron) => {
                let check = cron.clone();
                let utc = jiff::tz::TimeZone::UTC;
                let s = schedule::Schedule::Recurrence { cron: Box::new(cron), tz: utc.clone() };
                if let Some(next) = s.next_after(t) {
                    prop_assert!(next > t, "{expr:?}: next {next} is not after {t}");
                    prop_assert!(
                        check.is_time_matching(&next.to_zoned(utc)).unwrap_or(false),
                        "{expr:?}: next {next} does not match it"
                    );
                }
            }
        }
    }

    /// For schedules that parse, the slot to fire is never in the future, never before the
    /// last fired slot, and firing it then asking again fires nothing until the next slot:
    /// exactly once per slot.
    #[test]
    fn a_slot_fires_once(
        minute in "[0-9*]|[1-5][0-9]|\\*/[1-9]|\\*/1[05]",
        hour in "\\*|[0-9]|1[0-9]|2[0-3]",
        last_offset in 0i64..5_000_000,
        elapsed in 0i64..5_000_000,
    ) {
        let expr = format!("{minute} {hour} * * *");
        // Every expression the strategy makes is valid: one that did not parse would test
        // nothing, so it fails.
        let cron = schedule::parse_cron(&expr)
            .map_err(|e| TestCaseError::fail(format!("{expr:?} does not parse: {e}")))?;
        let s = schedule::Schedule::Recurrence { cron: Box::new(cron), tz: jiff::tz::TimeZone::UTC };
        let since: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let last = since + SignedDuration::from_secs(last_offset);
        let now = last + SignedDuration::from_secs(elapsed);
        let deadline = SignedDuration::from_secs(60);
        match schedule::due(&s, Some(last), since, now, deadline) {
            Due::Fire { slot, .. } | Due::Missed { slot, .. } => {
                prop_assert!(slot <= now && slot > last, "{slot} not in ({last}, {now}]");
                match schedule::due(&s, Some(slot), since, now, deadline) {
                    Due::NotYet { next } => prop_assert!(next.is_none_or(|n| n > now)),
                    other => prop_assert!(false, "fired twice: {other:?}"),
                }
            }
            Due::NotYet { next } => prop_assert!(next.is_none_or(|n| n > now)),
        }
    }
}

proptest! {
    /// Status merging: whatever sequence of condition updates arrives, each type appears
    /// once, and its lastTransitionTime moves exactly when its status changes.
    #[test]
    fn conditions_move_only_on_transitions(
        updates in proptest::collection::vec((0usize..3, any::<bool>(), "[A-Za-z]{1,12}"), 1..60),
    ) {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use nodeops::conditions::{self, Desired};
        let types = ["Ready", "Reconciling", "Stalled"];
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let mut conds = Vec::new();
        let mut expected: BTreeMap<&str, (bool, Timestamp)> = BTreeMap::new();
        for (i, (t, status, reason)) in updates.iter().enumerate() {
            let now = start + SignedDuration::from_secs(i as i64);
            let type_ = types[*t];
            let transitioned = conditions::set(
                &mut conds,
                Desired::new(type_, *status, reason, "m"),
                Some(1),
                &Time(now),
            );
            let was = expected.get(type_).copied();
            let moved = was.is_none_or(|(s, _)| s != *status);
            prop_assert_eq!(transitioned, moved);
            if moved {
                expected.insert(type_, (*status, now));
            }
        }
        prop_assert_eq!(conds.len(), expected.len());
        for c in &conds {
            let (status, at) = expected[c.type_.as_str()];
            prop_assert_eq!(c.status.as_str(), if status { "True" } else { "False" });
            prop_assert_eq!(c.last_transition_time.0, at);
        }
    }
}
