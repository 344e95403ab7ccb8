//! When an Invoker fires: its schedule parsed (a 5-field cron read in an IANA time zone, or
//! one RFC 3339 time) and the decision of which slot is due, as plain functions of the
//! schedule, the last slot fired and the time passed in.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use thiserror::Error;

use crate::api::invoker::{SchedulePolicy, ScheduleSettings};

/// Most missed slots counted one by one after downtime (beyond it, "more than").
const COUNT_LIMIT: u32 = 10_000;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    Once(Timestamp),
    Recurrence { cron: Box<Cron>, tz: TimeZone },
}

/// Why a schedule cannot be used; the variant names are the condition reasons.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("invalid cron expression {expr:?}: {detail}")]
    InvalidCronExpression { expr: String, detail: String },
    #[error("invalid invokeTime {value:?}: {detail}")]
    InvalidTimeFormat { value: String, detail: String },
    #[error("unknown time zone {0:?}: use an IANA name such as Asia/Shanghai")]
    InvalidTimeZone(String),
    #[error("scheduleSettings.{0} is required for this policy")]
    Missing(&'static str),
}

impl ScheduleError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::InvalidCronExpression { .. } => "InvalidCronExpression",
            ScheduleError::InvalidTimeFormat { .. } => "InvalidTimeFormat",
            ScheduleError::InvalidTimeZone(_) => "InvalidTimeZone",
            ScheduleError::Missing(_) => "InvalidSchedule",
        }
    }
}

/// Parses a cron expression of exactly 5 fields (minute hour day-of-month month
/// day-of-week; lists, ranges, steps and names), as Vixie cron reads them.
pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let fields = expr.split_whitespace().count();
    let err = |detail: String| ScheduleError::InvalidCronExpression {
        expr: expr.to_string(),
        detail,
    };
    if fields != 5 {
        return Err(err(format!(
            "{fields} fields; exactly 5 are needed: minute hour day-of-month month day-of-week"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| err(e.to_string()))
}

/// Parses the schedule of an Invoker.
pub fn parse(settings: &ScheduleSettings) -> Result<Schedule, ScheduleError> {
    match settings.policy {
        SchedulePolicy::Once => {
            let value = settings
                .invoke_time
                .as_deref()
                .ok_or(ScheduleError::Missing("invokeTime"))?;
            let at: Timestamp =
                value
                    .parse()
                    .map_err(|e: jiff::Error| ScheduleError::InvalidTimeFormat {
                        value: value.to_string(),
                        detail: e.to_string(),
                    })?;
            Ok(Schedule::Once(at))
        }
        SchedulePolicy::Recurrence => {
            let expr = settings
                .recurrence
                .as_deref()
                .ok_or(ScheduleError::Missing("recurrence"))?;
            recurrence(expr, settings.time_zone.as_deref())
        }
    }
}

/// Parses a 5-field cron expression read in an IANA time zone (none: UTC).
pub fn recurrence(expr: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
    let cron = parse_cron(expr)?;
    let tz = match time_zone {
        None | Some("UTC") => TimeZone::UTC,
        Some(name) => {
            TimeZone::get(name).map_err(|_| ScheduleError::InvalidTimeZone(name.to_string()))?
        }
    };
    Ok(Schedule::Recurrence {
        cron: Box::new(cron),
        tz,
    })
}

impl Schedule {
    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Once(at) => (*at > t).then_some(*at),
            Schedule::Recurrence { cron, tz } => cron
                .find_next_occurrence(&t.to_zoned(tz.clone()), false)
                .ok()
                .map(|z: Zoned| z.timestamp()),
        }
    }

    /// The last slot at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Once(at) => (*at <= t).then_some(*at),
            Schedule::Recurrence { cron, tz } => cron
                .find_previous_occurrence(&t.to_zoned(tz.clone()), true)
                .ok()
                .map(|z: Zoned| z.timestamp()),
        }
    }
}

/// What is due now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing; the next slot is at `next` (none: the schedule is over).
    NotYet { next: Option<Timestamp> },
    /// Run `slot` now. `skipped` earlier slots were missed (downtime) and are not run:
    /// at most one catch-up run.
    Fire { slot: Timestamp, skipped: u32 },
    /// `slot` (and `skipped` before it) came and went more than the starting deadline ago:
    /// record it as passed without running it.
    Missed { slot: Timestamp, skipped: u32 },
}

/// Decides what is due at `now`, for a schedule whose last fired (or passed) slot is
/// `last` (none yet: slots count from `since`, the Invoker's creation).
pub fn due(
    schedule: &Schedule,
    last: Option<Timestamp>,
    since: Timestamp,
    now: Timestamp,
    deadline: SignedDuration,
) -> Due {
    if matches!(schedule, Schedule::Once(_)) && last.is_some() {
        return Due::NotYet { next: None };
    }
    let from = last.unwrap_or(since);
    let Some(first) = schedule.next_after(from).or_else(|| match schedule {
        // A Once time equal to the creation instant is still due.
        Schedule::Once(at) if last.is_none() && *at == from => Some(*at),
        _ => None,
    }) else {
        return Due::NotYet { next: None };
    };
    if first > now {
        return Due::NotYet { next: Some(first) };
    }
    let latest = schedule
        .latest_at_or_before(now)
        .unwrap_or(first)
        .max(first);
    let mut count = 1u32;
    let mut t = first;
    while t < latest && count < COUNT_LIMIT {
        match schedule.next_after(t) {
            Some(n) if n <= latest => {
                t = n;
                count += 1;
            }
            _ => break,
        }
    }
    if now.duration_since(latest) > deadline {
        Due::Missed {
            slot: latest,
            skipped: count,
        }
    } else {
        Due::Fire {
            slot: latest,
            skipped: count - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn recurrence(expr: &str, tz: Option<&str>) -> Schedule {
        parse(&ScheduleSettings {
            policy: SchedulePolicy::Recurrence,
            invoke_time: None,
            recurrence: Some(expr.into()),
            time_zone: tz.map(str::to_string),
        })
        .expect("schedule")
    }

    fn nexts(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).expect("next");
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn first_of_the_month_in_the_seeds_zone() {
        // The seed's example: 00:00 UTC+8 on the first day of every month.
        let s = recurrence("0 0 1 * *", Some("Asia/Shanghai"));
        assert_eq!(
            nexts(&s, "2026-01-15T00:00:00Z", 3),
            [
                "2026-01-31T16:00:00Z",
                "2026-02-28T16:00:00Z",
                "2026-03-31T16:00:00Z"
            ]
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        let s = recurrence("0 12 31 * *", None);
        assert_eq!(
            nexts(&s, "2026-01-31T13:00:00Z", 2),
            ["2026-03-31T12:00:00Z", "2026-05-31T12:00:00Z"]
        );
        let s = recurrence("0 0 29 2 *", None);
        assert_eq!(
            nexts(&s, "2026-03-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        let s = recurrence("*/20 9-10 * * MON,WED", None);
        // 2026-11-23 is a Monday.
        assert_eq!(
            nexts(&s, "2026-11-23T10:30:00Z", 3),
            [
                "2026-11-23T10:40:00Z",
                "2026-11-25T09:00:00Z",
                "2026-11-25T09:20:00Z"
            ]
        );
        let s = recurrence("0 0 * JAN-MAR SUN", None);
        assert_eq!(
            nexts(&s, "2026-12-31T00:00:00Z", 1),
            ["2027-01-03T00:00:00Z"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_vixie_cron() {
        // Both restricted: either matches.
        let s = recurrence("0 0 13 * FRI", None);
        // 2026-11-13 is a Friday; 2026-11-20 a Friday; 2026-12-13 a Sunday.
        assert_eq!(
            nexts(&s, "2026-11-12T00:00:00Z", 3),
            [
                "2026-11-13T00:00:00Z",
                "2026-11-20T00:00:00Z",
                "2026-11-27T00:00:00Z"
            ]
        );
    }

    #[test]
    fn daylight_saving_time_changes() {
        let s = recurrence("30 1 * * *", Some("America/New_York"));
        // Fall back on 2026-11-01: 01:30 happens twice in wall time, fires once.
        let times = nexts(&s, "2026-10-31T12:00:00Z", 3);
        assert_eq!(times[0], "2026-11-01T05:30:00Z", "01:30 EDT");
        assert_eq!(
            times[1], "2026-11-02T06:30:00Z",
            "the repeated 01:30 EST does not fire again"
        );
        // Spring forward on 2026-03-08: 02:30 does not exist that day.
        let s = recurrence("30 2 * * *", Some("America/New_York"));
        let times = nexts(&s, "2026-03-07T12:00:00Z", 2);
        // As Vixie cron does, a slot in the skipped hour runs once, when the clock jumps
        // (03:00 EDT), rather than being lost.
        assert_eq!(
            times[0], "2026-03-08T07:00:00Z",
            "the missing 02:30 runs at 03:00 EDT"
        );
        assert_eq!(times[1], "2026-03-09T06:30:00Z", "then 02:30 EDT as usual");
        // An hourly schedule keeps one firing per real hour across the change.
        let s = recurrence("0 * * * *", Some("Europe/Berlin"));
        let times = nexts(&s, "2026-10-25T00:30:00Z", 3);
        assert_eq!(
            times,
            [
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z"
            ]
        );
    }

    #[test]
    fn invalid_expressions_say_why() {
        for (expr, needle) in [
            ("0 0 1 *", "4 fields"),
            ("0 0 0 1 * *", "6 fields"),
            ("61 * * * *", "invalid cron expression"),
            ("* 25 * * *", "invalid cron expression"),
            ("* * * FOO *", "invalid cron expression"),
            ("@reboot", "1 fields"),
        ] {
            let err = parse_cron(expr).expect_err(expr);
            assert_eq!(err.reason(), "InvalidCronExpression");
            assert!(err.to_string().contains(needle), "{expr}: {err}");
        }
        let err = parse(&ScheduleSettings {
            policy: SchedulePolicy::Recurrence,
            invoke_time: None,
            recurrence: Some("0 0 * * *".into()),
            time_zone: Some("Mars/Olympus_Mons".into()),
        })
        .expect_err("zone");
        assert_eq!(err.reason(), "InvalidTimeZone");
        let err = parse(&ScheduleSettings {
            policy: SchedulePolicy::Once,
            invoke_time: Some("2021-09-01 00:00".into()),
            recurrence: None,
            time_zone: None,
        })
        .expect_err("time");
        assert_eq!(err.reason(), "InvalidTimeFormat");
    }

    #[test]
    fn once_fires_once() {
        let s = parse(&ScheduleSettings {
            policy: SchedulePolicy::Once,
            invoke_time: Some("2021-09-01T00:00:00+08:00".into()),
            recurrence: None,
            time_zone: None,
        })
        .expect("once");
        let at = ts("2021-08-31T16:00:00Z");
        let created = ts("2021-08-31T15:00:00Z");
        let deadline = SignedDuration::from_secs(60);
        assert_eq!(
            due(&s, None, created, ts("2021-08-31T15:59:59Z"), deadline),
            Due::NotYet { next: Some(at) }
        );
        assert_eq!(
            due(&s, None, created, ts("2021-08-31T16:00:00.2Z"), deadline),
            Due::Fire {
                slot: at,
                skipped: 0
            }
        );
        assert_eq!(
            due(&s, Some(at), created, ts("2021-08-31T16:00:05Z"), deadline),
            Due::NotYet { next: None }
        );
        assert_eq!(
            due(&s, None, created, ts("2021-08-31T16:05:00Z"), deadline),
            Due::Missed {
                slot: at,
                skipped: 1
            }
        );
    }

    #[test]
    fn catch_up_after_downtime_is_one_run_within_the_deadline() {
        let s = recurrence("* * * * *", None);
        let created = ts("2026-01-01T00:00:30Z");
        let deadline = SignedDuration::from_secs(60);
        // Down from 00:00:30 to 00:10:20: ten slots passed; the latest runs, nine are skipped.
        assert_eq!(
            due(&s, None, created, ts("2026-01-01T00:10:20Z"), deadline),
            Due::Fire {
                slot: ts("2026-01-01T00:10:00Z"),
                skipped: 9
            }
        );
        // The latest slot is older than the deadline: nothing runs, all ten are counted.
        assert_eq!(
            due(
                &s,
                Some(ts("2026-01-01T00:00:00Z")),
                created,
                ts("2026-01-01T00:10:20Z"),
                SignedDuration::from_secs(10)
            ),
            Due::Missed {
                slot: ts("2026-01-01T00:10:00Z"),
                skipped: 10
            }
        );
        // On time: the slot just passed fires, none skipped.
        assert_eq!(
            due(
                &s,
                Some(ts("2026-01-01T00:10:00Z")),
                created,
                ts("2026-01-01T00:11:00.05Z"),
                deadline
            ),
            Due::Fire {
                slot: ts("2026-01-01T00:11:00Z"),
                skipped: 0
            }
        );
        assert_eq!(
            due(
                &s,
                Some(ts("2026-01-01T00:11:00Z")),
                created,
                ts("2026-01-01T00:11:30Z"),
                deadline
            ),
            Due::NotYet {
                next: Some(ts("2026-01-01T00:12:00Z"))
            }
        );
    }
}
