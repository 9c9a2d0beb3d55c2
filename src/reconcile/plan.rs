//! The core decision as a pure function: desired set × running set × now → actions.

use crate::spec::{DesiredSet, TailerId, TailerSettings};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

/// Where a known tailer is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Running {
        since: Instant,
    },
    /// Exited with an error; may start again at `retry_at`.
    Backoff {
        retry_at: Instant,
        reason: String,
    },
    /// Asked to stop; waiting for its in-flight data to be acknowledged.
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTailer {
    /// The desired tailer's, shared (`DesiredTailer::settings`).
    pub settings: Arc<TailerSettings>,
    pub phase: Phase,
}

pub type RunningSet = BTreeMap<TailerId, RunningTailer>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start {
        id: TailerId,
        settings: Arc<TailerSettings>,
    },
    Stop {
        id: TailerId,
    },
    /// Stop now; the pass after its exit starts it with the new settings.
    Restart {
        id: TailerId,
        reason: String,
    },
    /// Drop a tailer in backoff that is no longer desired.
    Forget {
        id: TailerId,
    },
}

/// Decides what to do so that the running set converges on the desired set. Depends only
/// on its arguments: missing an event is healed by the next pass.
///
/// Both sets are sorted by id, so they are walked side by side (a merge join) instead of
/// looking each id up in the other set: one comparison per step keeps a pass over
/// 10,000 tailers cheap (`benches/plan.rs`; BENCHMARKS.md, "`plan` at 10,000 files").
pub fn plan(desired: &DesiredSet, running: &RunningSet, now: Instant) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut undesired = Vec::new();
    let mut running_iter = running.iter().peekable();
    for (id, want) in desired {
        let start = || Action::Start {
            id: id.clone(),
            settings: want.settings.clone(),
        };
        let mut current = None;
        while let Some((running_id, tailer)) = running_iter.peek() {
            match (*running_id).cmp(id) {
                std::cmp::Ordering::Less => undesired.extend(leave(running_id, tailer)),
                std::cmp::Ordering::Equal => current = Some(*tailer),
                std::cmp::Ordering::Greater => break,
            }
            running_iter.next();
            if current.is_some() {
                break;
            }
        }
        match current {
            None => actions.push(start()),
            Some(RunningTailer {
                phase: Phase::Stopping,
                ..
            }) => {}
            Some(RunningTailer {
                settings,
                phase: Phase::Running { .. },
            }) if *settings != want.settings => actions.push(Action::Restart {
                id: id.clone(),
                reason: "settings changed".into(),
            }),
            Some(RunningTailer {
                phase: Phase::Running { .. },
                ..
            }) => {}
            Some(RunningTailer {
                settings,
                phase: Phase::Backoff { retry_at, .. },
            }) => {
                if *retry_at <= now || *settings != want.settings {
                    actions.push(start());
                }
            }
        }
    }
    undesired.extend(running_iter.filter_map(|(id, tailer)| leave(id, tailer)));
    actions.extend(undesired);
    actions
}

/// What to do with a running tailer that is no longer desired.
fn leave(id: &TailerId, tailer: &RunningTailer) -> Option<Action> {
    match tailer.phase {
        Phase::Running { .. } => Some(Action::Stop { id: id.clone() }),
        Phase::Backoff { .. } => Some(Action::Forget { id: id.clone() }),
        Phase::Stopping => None,
    }
}

/// The earliest moment a tailer in backoff may start again.
pub fn next_retry(running: &RunningSet) -> Option<Instant> {
    running
        .values()
        .filter_map(|t| match t.phase {
            Phase::Backoff { retry_at, .. } => Some(retry_at),
            _ => None,
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DesiredTailer;
    use std::path::Path;
    use std::time::Duration;

    /// The default tail settings with `max_line_bytes` (changing it restarts a tailer).
    fn settings(max_line_bytes: u64) -> Arc<TailerSettings> {
        Arc::new(TailerSettings {
            max_line_bytes,
            ..TailerSettings::from_config(&crate::config::TailConfig::default())
        })
    }

    fn id(path: &str) -> TailerId {
        TailerId::new("app", Path::new(path))
    }

    fn desired(entries: &[(&str, u64)]) -> DesiredSet {
        entries
            .iter()
            .map(|(path, max)| {
                let owners = ["config".into()].into_iter().collect();
                (
                    id(path),
                    DesiredTailer {
                        owners,
                        settings: settings(*max),
                        globs: Default::default(),
                    },
                )
            })
            .collect()
    }

    fn running(entries: &[(&str, u64, Phase)]) -> RunningSet {
        entries
            .iter()
            .map(|(path, max, phase)| {
                (
                    id(path),
                    RunningTailer {
                        settings: settings(*max),
                        phase: phase.clone(),
                    },
                )
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        desired: DesiredSet,
        running: RunningSet,
        expect: Vec<Action>,
    }

    #[test]
    fn plan_table() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let earlier = now - Duration::from_secs(5);
        let up = Phase::Running { since: earlier };
        let backoff = |at| Phase::Backoff {
            retry_at: at,
            reason: "boom".into(),
        };
        let cases = [
            Case {
                name: "plan_should_start_a_desired_tailer_that_is_not_running",
                desired: desired(&[("/a", 10)]),
                running: running(&[]),
                expect: vec![Action::Start {
                    id: id("/a"),
                    settings: (settings(10)),
                }],
            },
            Case {
                name: "plan_should_do_nothing_when_running_matches_desired",
                desired: desired(&[("/a", 10)]),
                running: running(&[("/a", 10, up.clone())]),
                expect: vec![],
            },
            Case {
                name: "plan_should_stop_a_running_tailer_no_longer_desired",
                desired: desired(&[]),
                running: running(&[("/a", 10, up.clone())]),
                expect: vec![Action::Stop { id: id("/a") }],
            },
            Case {
                name: "plan_should_restart_when_settings_changed",
                desired: desired(&[("/a", 20)]),
                running: running(&[("/a", 10, up.clone())]),
                expect: vec![Action::Restart {
                    id: id("/a"),
                    reason: "settings changed".into(),
                }],
            },
            Case {
                name: "plan_should_wait_for_backoff_to_expire",
                desired: desired(&[("/a", 10)]),
                running: running(&[("/a", 10, backoff(later))]),
                expect: vec![],
            },
            Case {
                name: "plan_should_retry_when_backoff_expired",
                desired: desired(&[("/a", 10)]),
                running: running(&[("/a", 10, backoff(earlier))]),
                expect: vec![Action::Start {
                    id: id("/a"),
                    settings: (settings(10)),
                }],
            },
            Case {
                name: "plan_should_retry_at_once_when_settings_changed_during_backoff",
                desired: desired(&[("/a", 20)]),
                running: running(&[("/a", 10, backoff(later))]),
                expect: vec![Action::Start {
                    id: id("/a"),
                    settings: (settings(20)),
                }],
            },
            Case {
                name: "plan_should_forget_a_tailer_in_backoff_no_longer_desired",
                desired: desired(&[]),
                running: running(&[("/a", 10, backoff(later))]),
                expect: vec![Action::Forget { id: id("/a") }],
            },
            Case {
                name: "plan_should_never_start_a_second_task_while_one_is_stopping",
                desired: desired(&[("/a", 10)]),
                running: running(&[("/a", 10, Phase::Stopping)]),
                expect: vec![],
            },
            Case {
                name: "plan_should_leave_a_stopping_tailer_alone_when_undesired",
                desired: desired(&[]),
                running: running(&[("/a", 10, Phase::Stopping)]),
                expect: vec![],
            },
            Case {
                name: "plan_should_handle_starts_and_stops_in_one_pass",
                desired: desired(&[("/a", 10), ("/c", 10)]),
                running: running(&[("/a", 10, up.clone()), ("/b", 10, up.clone())]),
                expect: vec![
                    Action::Start {
                        id: id("/c"),
                        settings: (settings(10)),
                    },
                    Action::Stop { id: id("/b") },
                ],
            },
        ];
        for case in cases {
            assert_eq!(
                plan(&case.desired, &case.running, now),
                case.expect,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn plan_should_be_idempotent_for_the_same_inputs() {
        let now = Instant::now();
        let want = desired(&[("/a", 10), ("/b", 10)]);
        let have = running(&[
            ("/b", 10, Phase::Stopping),
            ("/c", 10, Phase::Running { since: now }),
        ]);
        assert_eq!(plan(&want, &have, now), plan(&want, &have, now));
    }

    #[test]
    fn next_retry_should_be_the_earliest_backoff() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let have = running(&[
            (
                "/a",
                10,
                Phase::Backoff {
                    retry_at: now + Duration::from_secs(9),
                    reason: String::new(),
                },
            ),
            (
                "/b",
                10,
                Phase::Backoff {
                    retry_at: soon,
                    reason: String::new(),
                },
            ),
            ("/c", 10, Phase::Running { since: now }),
        ]);
        assert_eq!(next_retry(&have), Some(soon));
        assert_eq!(next_retry(&running(&[])), None);
    }

    /// The definition `plan` must match: look every desired id up in the running set,
    /// then every running id up in the desired set.
    fn plan_by_lookup(desired: &DesiredSet, running: &RunningSet, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, want) in desired {
            let one = [(id.clone(), want.clone())].into_iter().collect();
            let mine: RunningSet = running
                .get(id)
                .map(|t| (id.clone(), t.clone()))
                .into_iter()
                .collect();
            actions.extend(plan(&one, &mine, now));
        }
        for (id, tailer) in running {
            if !desired.contains_key(id) {
                actions.extend(leave(id, tailer));
            }
        }
        actions
    }

    proptest::proptest! {
        #[test]
        fn plan_should_match_looking_each_id_up(
            want in proptest::collection::btree_map(0u8..24, 1u64..3, 0..16),
            have in proptest::collection::btree_map(0u8..24, (1u64..3, 0u8..4), 0..16),
        ) {
            let now = Instant::now();
            let path = |n: &u8| format!("/logs/{}/{n}.log", n % 3);
            let desired: Vec<(String, u64)> = want.iter().map(|(n, m)| (path(n), *m)).collect();
            let desired = desired
                .iter()
                .map(|(p, m)| (p.as_str(), *m))
                .collect::<Vec<_>>();
            let phase = |k: u8| match k {
                0 => Phase::Running { since: now },
                1 => Phase::Stopping,
                2 => Phase::Backoff { retry_at: now, reason: String::new() },
                _ => Phase::Backoff { retry_at: now + Duration::from_secs(1), reason: String::new() },
            };
            let running_paths: Vec<(String, u64, Phase)> =
                have.iter().map(|(n, (m, k))| (path(n), *m, phase(*k))).collect();
            let running_refs = running_paths
                .iter()
                .map(|(p, m, ph)| (p.as_str(), *m, ph.clone()))
                .collect::<Vec<_>>();
            let (desired, running) = (self::desired(&desired), self::running(&running_refs));
            proptest::prop_assert_eq!(
                plan(&desired, &running, now),
                plan_by_lookup(&desired, &running, now)
            );
        }
    }
}
