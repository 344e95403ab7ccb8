//! Whether a rollout may start nodes now: its maintenance windows, soak time and health
//! gates (`api::rollout::RolloutPolicy`), as plain functions of the policy, the rollout's
//! progress, the gates' readings and the time passed in. The controllers that start nodes
//! (AgentUpgradeJob, AsyncCommand) ask [`starts`] how many may start, and say why none
//! may.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use k8s_openapi::api::core::v1::Node;

use crate::api::rollout::{MaintenanceWindow, NodeConditionGate, RolloutPolicy};
use crate::plan::Invalid;
use crate::schedule::{self, Schedule};

/// Condition type while no new node may start (spec.paused, outside every window,
/// soaking, a health gate unhealthy).
pub const PAUSED: &str = "Paused";

/// How often an unhealthy gate is looked at again.
const GATE_RECHECK: Duration = Duration::from_secs(10);

/// A policy checked and parsed.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    windows: Vec<Window>,
    soak: SignedDuration,
    node_gates: Vec<NodeConditionGate>,
}

#[derive(Clone, Debug)]
struct Window {
    opens: Schedule,
    length: SignedDuration,
}

/// Parses a window's duration (`1h30m`, `20s`: hours, minutes, seconds, as the schema
/// admits).
fn parse_duration(s: &str) -> Option<SignedDuration> {
    let mut total = 0i64;
    let mut digits = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c),
            'h' | 'm' | 's' => {
                let n: i64 = digits.parse().ok()?;
                digits.clear();
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
            }
            _ => return None,
        }
    }
    (digits.is_empty() && total > 0).then(|| SignedDuration::from_secs(total))
}

fn window(w: &MaintenanceWindow) -> Result<Window, Invalid> {
    let opens = schedule::recurrence(&w.schedule, w.time_zone.as_deref()).map_err(|e| {
        Invalid::new(
            e.reason(),
            format!("maintenance window {:?}: {e}", w.schedule),
        )
    })?;
    let length = parse_duration(&w.duration).ok_or_else(|| {
        Invalid::new(
            "InvalidDuration",
            format!(
                "maintenance window duration {:?}: use hours, minutes and seconds such as 1h30m",
                w.duration
            ),
        )
    })?;
    Ok(Window { opens, length })
}

/// Checks and parses a policy (what the schema cannot: the cron expressions and zones).
pub fn parse(policy: Option<&RolloutPolicy>) -> Result<Policy, Invalid> {
    let Some(p) = policy else {
        return Ok(Policy::default());
    };
    Ok(Policy {
        windows: p
            .maintenance_windows
            .iter()
            .map(window)
            .collect::<Result<_, _>>()?,
        soak: SignedDuration::from_secs(p.soak_seconds.max(0)),
        node_gates: p
            .health_gates
            .iter()
            .filter_map(|g| g.node_condition.clone())
            .collect(),
    })
}

/// A node's conditions as (type, status): what the node gates read.
pub type Conditions = Vec<(String, String)>;

/// The conditions of a Node.
pub fn conditions_of(node: &Node) -> Conditions {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Node names listed in a reading's message, at most this many.
const NAMES_SHOWN: usize = 5;

/// The windows at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// No window is set: any time is fine.
    Always,
    /// A window is open; it closes at `closes` (unless a later one overlaps it).
    Open { closes: Timestamp },
    /// Every window is closed; the next opens at `opens` (none: never again).
    Closed { opens: Option<Timestamp> },
}

impl Policy {
    /// The windows at `now`. A window is open from each of its schedule's times for its
    /// duration; only the latest opening at or before `now` can still be open (an
    /// earlier one of the same window closes before it).
    /// The node gates read over the rollout's nodes: a gate is unhealthy while any of
    /// them has its condition at the unhealthy status.
    pub fn node_readings<'a>(
        &self,
        nodes: impl Iterator<Item = (&'a str, &'a Conditions)> + Clone,
    ) -> Vec<Reading> {
        self.node_gates
            .iter()
            .map(|gate| {
                let bad: Vec<&str> = nodes
                    .clone()
                    .filter(|(_, cs)| {
                        cs.iter()
                            .any(|(t, s)| *t == gate.type_ && *s == gate.status)
                    })
                    .map(|(name, _)| name)
                    .collect();
                let condition = format!("{}={}", gate.type_, gate.status);
                if bad.is_empty() {
                    Reading {
                        healthy: true,
                        message: format!("no node of the rollout has {condition}"),
                    }
                } else {
                    let shown = bad[..bad.len().min(NAMES_SHOWN)].join(", ");
                    let more = bad.len().saturating_sub(NAMES_SHOWN);
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    Reading {
                        healthy: false,
                        message: format!(
                            "{condition} on {} {}: {shown}{more}",
                            bad.len(),
                            if bad.len() == 1 { "node" } else { "nodes" }
                        ),
                    }
                }
            })
            .collect()
    }

    /// Whether the policy reads its nodes (a node gate): its starts depend on them.
    pub fn reads_nodes(&self) -> bool {
        !self.node_gates.is_empty()
    }

    pub fn window_at(&self, now: Timestamp) -> WindowState {
        if self.windows.is_empty() {
            return WindowState::Always;
        }
        let mut closes: Option<Timestamp> = None;
        let mut opens: Option<Timestamp> = None;
        for w in &self.windows {
            if let Some(start) = w.opens.latest_at_or_before(now) {
                let end = start + w.length;
                if end > now {
                    closes = Some(closes.map_or(end, |c| c.max(end)));
                    continue;
                }
            }
            if let Some(next) = w.opens.next_after(now) {
                opens = Some(opens.map_or(next, |o| o.min(next)));
            }
        }
        match closes {
            Some(closes) => WindowState::Open { closes },
            None => WindowState::Closed { opens },
        }
    }
}

/// Why no node may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// `spec.paused`.
    Paused,
    /// Outside every maintenance window.
    OutsideWindow { opens: Option<Timestamp> },
    /// A health gate is unhealthy.
    Unhealthy { message: String },
    /// The last batch finished; the soak time runs until `until`.
    Soaking { until: Timestamp },
}

impl Hold {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::Paused => "Paused",
            Hold::OutsideWindow { .. } => "OutsideMaintenanceWindow",
            Hold::Unhealthy { .. } => "HealthGateUnhealthy",
            Hold::Soaking { .. } => "Soaking",
        }
    }

    /// The condition message.
    pub fn message(&self) -> String {
        match self {
            Hold::Paused => {
                "spec.paused holds the rollout: nodes in flight finish, no new node starts".into()
            }
            Hold::OutsideWindow { opens: Some(t) } => format!(
                "outside every maintenance window: nodes in flight finish, the next node starts when a window opens at {t}"
            ),
            Hold::OutsideWindow { opens: None } => {
                "outside every maintenance window, and no window opens again".into()
            }
            Hold::Unhealthy { message } => {
                format!("a health gate is unhealthy, no new node starts: {message}")
            }
            Hold::Soaking { until } => {
                format!("the last batch finished; soaking until {until} before the next starts")
            }
        }
    }

    /// When the next node may start, when the hold ends at a known time (a window
    /// opening, a soak ending): the status' `nextStartTime`.
    pub fn until(&self) -> Option<Timestamp> {
        match self {
            Hold::OutsideWindow { opens } => *opens,
            Hold::Soaking { until } => Some(*until),
            Hold::Paused | Hold::Unhealthy { .. } => None,
        }
    }

    /// When to look again (none: only on a change of the object).
    pub fn recheck(&self, now: Timestamp) -> Option<Duration> {
        let until = |t: Timestamp| {
            Duration::from_secs(t.duration_since(now).as_secs().max(0) as u64)
                + Duration::from_millis(200)
        };
        match self {
            Hold::Paused | Hold::OutsideWindow { opens: None } => None,
            Hold::OutsideWindow { opens: Some(t) } | Hold::Soaking { until: t } => Some(until(*t)),
            Hold::Unhealthy { .. } => Some(GATE_RECHECK),
        }
    }
}

/// One health gate as read this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub healthy: bool,
    /// What was seen (which nodes have the condition, the object's Ready condition, or
    /// why the object could not be read).
    pub message: String,
}

/// Where the rollout stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The most nodes at once (maxConcurrency, resolved).
    pub limit: usize,
    /// Nodes started and not finished.
    pub in_flight: usize,
    /// When the last node that ran finished (none: none has).
    pub last_finished: Option<Timestamp>,
}

/// How many nodes may start now, and why none may when that is so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Starts {
    pub slots: usize,
    pub hold: Option<Hold>,
}

/// Decides how many nodes may start at `now`. The holds are checked in the order a user
/// acts on them: paused, the window, the gates, the soak. With a soak time the rollout
/// goes in batches: none starts while a batch is in flight.
pub fn starts(
    policy: &Policy,
    paused: bool,
    progress: Progress,
    gates: &[Reading],
    now: Timestamp,
) -> Starts {
    let held = |hold| Starts {
        slots: 0,
        hold: Some(hold),
    };
    if paused {
        return held(Hold::Paused);
    }
    if let WindowState::Closed { opens } = policy.window_at(now) {
        return held(Hold::OutsideWindow { opens });
    }
    let unhealthy: Vec<&str> = gates
        .iter()
        .filter(|g| !g.healthy)
        .map(|g| g.message.as_str())
        .collect();
    if !unhealthy.is_empty() {
        return held(Hold::Unhealthy {
            message: crate::plan::clip(&unhealthy.join("; "), 512),
        });
    }
    if policy.soak > SignedDuration::ZERO {
        if progress.in_flight > 0 {
            return Starts {
                slots: 0,
                hold: None,
            };
        }
        if let Some(done) = progress.last_finished {
            let until = done + policy.soak;
            if until > now {
                return held(Hold::Soaking { until });
            }
        }
    }
    Starts {
        slots: progress.limit.saturating_sub(progress.in_flight),
        hold: None,
    }
}

#[cfg(test)]
mod tests;
