//! The `tracing` layer: allocations inside a span with `tenant = "x"` carry
//! `tenant=x`, nested spans nest, and leaving the span restores the labels.

#![cfg(feature = "tracing")]

use std::hint::black_box;

use tracing_subscriber::layer::SubscriberExt;

mod common;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

#[inline(never)]
fn in_span_alloc() -> Vec<u8> {
    black_box(vec![0x77_u8; 2222])
}

#[test]
fn span_fields_become_labels() {
    let subscriber = tracing_subscriber::registry()
        .with(leakscope::tracing::LabelLayer::new(&["tenant", "route"]));
    let (x, nested, outside) = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", tenant = "x", other = 5);
        let (x, nested) = span.in_scope(|| {
            let x = in_span_alloc();
            let inner = tracing::info_span!("route", route = "/r", tenant = "y");
            (x, inner.in_scope(in_span_alloc))
        });
        (x, nested, in_span_alloc())
    });
    let snap = leakscope::snapshot();
    let live = |labels: &[(&str, &str)]| -> u64 {
        let want: Vec<(String, String)> = labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        common::sites_through(&snap, "in_span_alloc")
            .filter(|s| s.labels() == want.as_slice())
            .map(|s| s.live_bytes())
            .sum()
    };
    assert_eq!(live(&[("tenant", "x")]), 2222);
    assert_eq!(live(&[("route", "/r"), ("tenant", "y")]), 2222);
    assert_eq!(live(&[]), 2222);
    drop((x, nested, outside));
}
