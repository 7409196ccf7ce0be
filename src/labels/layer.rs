//! [`LabelLayer`]: chosen span fields as allocation labels (feature
//! `tracing`).

use std::cell::RefCell;
use std::fmt;

use tracing_core::Subscriber;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::profile::labels;
use crate::recorder::{self, Guard};

/// A [`tracing_subscriber::Layer`] that turns chosen fields of a span into
/// labels (see [`with_labels`](crate::with_labels)) while the span is
/// entered: allocations recorded inside `info_span!("request", tenant = "a")`
/// carry `tenant=a`. Entering adds the span's labels to the thread's current
/// ones (an inner span's value of a key wins), exiting restores them, so
/// nested spans nest as `with_labels` does. Spans without any of the fields
/// cost nothing on enter and exit.
///
/// The fields are read when the span is created (and updated by
/// `Span::record`); string fields give their value, others their `Debug`
/// form.
///
/// # Examples
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(leakscope::tracing::LabelLayer::new(&["tenant", "route"]));
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("request", tenant = "a", route = "/upload");
///     let body = span.in_scope(|| vec![0u8; 4096]); // labelled tenant=a, route=/upload
///     # drop(body);
/// });
/// ```
#[derive(Clone, Debug)]
pub struct LabelLayer {
    fields: Vec<String>,
}

impl LabelLayer {
    /// A layer that labels allocations with the span fields named `fields`.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = leakscope::tracing::LabelLayer::new(&["tenant"]);
    /// # drop(layer);
    /// ```
    pub fn new(fields: &[&str]) -> LabelLayer {
        Guard::run(|| LabelLayer {
            fields: fields.iter().map(|f| f.to_string()).collect(),
        })
    }
}

/// The labels of one span, in its extensions.
struct SpanLabels(Vec<(String, String)>);

struct Visitor<'a> {
    fields: &'a [String],
    out: &'a mut Vec<(String, String)>,
}

impl Visitor<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if !self.fields.iter().any(|f| f == field.name()) {
            return;
        }
        match self.out.iter_mut().find(|(k, _)| k == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.out.push((field.name().to_string(), value)),
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

thread_local! {
    /// The label set ids to restore, one per entered labelled span (enter
    /// and exit nest on a thread).
    static SAVED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for LabelLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        Guard::run(|| {
            let mut out = Vec::new();
            attrs.record(&mut Visitor {
                fields: &self.fields,
                out: &mut out,
            });
            if let (false, Some(span)) = (out.is_empty(), ctx.span(id)) {
                span.extensions_mut().insert(SpanLabels(out));
            }
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        Guard::run(|| {
            let Some(span) = ctx.span(id) else { return };
            let mut ext = span.extensions_mut();
            let mut out = ext.remove::<SpanLabels>().map(|l| l.0).unwrap_or_default();
            values.record(&mut Visitor {
                fields: &self.fields,
                out: &mut out,
            });
            if !out.is_empty() {
                ext.insert(SpanLabels(out));
            }
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        Guard::run(|| {
            let Some(span) = ctx.span(id) else { return };
            let ext = span.extensions();
            let Some(SpanLabels(pairs)) = ext.get::<SpanLabels>() else {
                return;
            };
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let id = labels::intern(&pairs, recorder::current_labels());
            let prev = recorder::swap_labels(id);
            let _ = SAVED.try_with(|s| s.borrow_mut().push(prev));
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        Guard::run(|| {
            let Some(span) = ctx.span(id) else { return };
            if span.extensions().get::<SpanLabels>().is_none() {
                return;
            }
            if let Ok(Some(prev)) = SAVED.try_with(|s| s.borrow_mut().pop()) {
                recorder::swap_labels(prev);
            }
        });
    }
}
