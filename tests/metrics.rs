//! The `metrics` feature: `Lessor::stats` publishes every figure through the `metrics` facade.
//! Run with `cargo test --features metrics --test metrics`.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use parking_lot::Mutex;

/// A recorder that keeps the last value of every counter and gauge, by name and labels.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<BTreeMap<String, f64>>>);

struct Cell(String, Arc<Mutex<BTreeMap<String, f64>>>);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.1.lock().entry(self.0.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.1.lock().insert(self.0.clone(), value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.1.lock().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().insert(self.0.clone(), value);
    }
}

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        key.name().to_string()
    } else {
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(name(key), Arc::clone(&self.0))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(name(key), Arc::clone(&self.0))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn stats_are_published_through_the_metrics_facade() {
    let clock = lessor::ManualClock::new();
    let l = lessor::Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let a = l.grant(Duration::from_secs(10)).unwrap().id;
    let b = l.grant(Duration::from_secs(1)).unwrap().id;
    l.put_with_lease("/a", "1", a).unwrap();
    l.put_with_lease("/b", "1", b).unwrap();
    l.renew(a).unwrap();
    clock.advance(Duration::from_millis(1_500));
    l.revoke_expired().unwrap();
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || l.stats().unwrap());
    let got = capture.0.lock().clone();
    let at = |k: &str| {
        *got.get(k)
            .unwrap_or_else(|| panic!("{k} missing from {got:?}"))
    };
    assert_eq!(at("lessor_leases"), 1.0);
    assert_eq!(at("lessor_keys"), 1.0);
    assert_eq!(at("lessor_attached_keys"), 1.0);
    assert_eq!(at("lessor_grants_total"), 2.0);
    assert_eq!(at("lessor_renews_total"), 1.0);
    assert_eq!(at("lessor_expiries_total"), 1.0);
    assert_eq!(at("lessor_expiry_lateness_seconds_count"), 1.0);
    assert_eq!(at("lessor_expiry_lateness_seconds{quantile=1}"), 0.5);
    assert!(at("lessor_commits_total") >= 3.0);
    assert!(at("lessor_commit_latency_seconds{quantile=0.99}") > 0.0);
}
