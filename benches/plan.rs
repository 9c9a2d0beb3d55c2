//! Reconcile pass time for 10,000 desired entries (issue 9): `plan` against an empty
//! running set (first pass: 10,000 starts), against the same set running (steady state:
//! nothing to do) and with every tenth entry's settings changed (1,000 restarts).
//! Run: `cargo bench --bench plan`.

use criterion::{criterion_group, criterion_main, Criterion};
use logcatch::reconcile::plan::{plan, Phase, RunningSet, RunningTailer};
use logcatch::spec::{DesiredSet, DesiredTailer, TailerId, TailerSettings};
use std::hint::black_box;
use std::path::PathBuf;
use tokio::time::Instant;

const ENTRIES: usize = 10_000;

/// The default tail settings with `max_line_bytes` (changing it restarts a tailer).
fn settings(max_line_bytes: u64) -> TailerSettings {
    TailerSettings {
        max_line_bytes,
        ..TailerSettings::from_config(&logcatch::config::TailConfig::default())
    }
}

fn id(i: usize) -> TailerId {
    let path = PathBuf::from(format!("/var/log/pods/ns_pod-{i:05}/app/0.log"));
    TailerId::new(&format!("topic-{}", i % 20), &path)
}

fn desired() -> DesiredSet {
    (0..ENTRIES)
        .map(|i| {
            let owners = [format!("etcd:/logcatch/node/{}", i % 10).into()]
                .into_iter()
                .collect();
            (
                id(i),
                DesiredTailer {
                    owners,
                    settings: settings(1 << 20).into(),
                    globs: Default::default(),
                },
            )
        })
        .collect()
}

fn running(now: Instant, changed_every: usize) -> RunningSet {
    (0..ENTRIES)
        .map(|i| {
            let max = if changed_every > 0 && i % changed_every == 0 {
                1 << 19
            } else {
                1 << 20
            };
            let tailer = RunningTailer {
                settings: settings(max).into(),
                phase: Phase::Running { since: now },
            };
            (id(i), tailer)
        })
        .collect()
}

fn bench_plan(c: &mut Criterion) {
    let now = Instant::now();
    let desired = desired();
    let empty = RunningSet::new();
    let same = running(now, 0);
    let tenth_changed = running(now, 10);
    assert_eq!(plan(&desired, &empty, now).len(), ENTRIES);
    assert!(plan(&desired, &same, now).is_empty());
    assert_eq!(plan(&desired, &tenth_changed, now).len(), ENTRIES / 10);

    let mut group = c.benchmark_group("plan 10,000 desired");
    group.bench_function("first pass (10,000 starts)", |b| {
        b.iter(|| plan(black_box(&desired), black_box(&empty), now))
    });
    group.bench_function("steady state (no actions)", |b| {
        b.iter(|| plan(black_box(&desired), black_box(&same), now))
    });
    group.bench_function("1,000 settings changed (restarts)", |b| {
        b.iter(|| plan(black_box(&desired), black_box(&tenth_changed), now))
    });
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
