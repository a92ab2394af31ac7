//! Logging and tracing: text or JSON log lines (filter from config or `RUST_LOG`), W3C trace
//! context per request propagated to upstreams, and optional OTLP/HTTP span export (cargo
//! feature `otlp`, on by default; turned on at run time by `[observability] otlp_endpoint`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, ObservabilityConfig, RawLog};

/// Flushes exported spans when dropped (keep it alive for the life of the process).
#[derive(Default)]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Install the global subscriber: logs, and spans to OTLP when configured. A second call
/// installs nothing.
pub fn init(log: &RawLog, obs: &ObservabilityConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = match log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    #[allow(unused_mut)]
    let mut guard = TelemetryGuard::default();
    #[cfg(feature = "otlp")]
    let otel = match &obs.otlp_endpoint {
        Some(endpoint) => match otel::layer(endpoint, &obs.service_name) {
            Ok((layer, provider)) => {
                guard.provider = Some(provider);
                Some(layer)
            }
            Err(e) => {
                // Logging is not up yet; this is the one place stderr is right.
                eprintln!("switchyard: OTLP export disabled: {e}");
                None
            }
        },
        None => None,
    };
    #[cfg(not(feature = "otlp"))]
    if obs.otlp_endpoint.is_some() {
        eprintln!("switchyard: `observability.otlp_endpoint` needs the `otlp` cargo feature");
    }
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otlp")]
    let _ = registry.with(otel).try_init();
    #[cfg(not(feature = "otlp"))]
    let _ = registry.try_init();
    guard
}

#[cfg(feature = "otlp")]
mod otel {
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// The span layer exporting to `endpoint` (OTLP/HTTP protobuf, `/v1/traces`).
    pub fn layer<S>(
        endpoint: &str,
        service: &str,
    ) -> Result<(impl tracing_subscriber::Layer<S>, SdkTracerProvider), String>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("switchyard");
        ENABLED.store(true, Ordering::Relaxed);
        Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
    }

    /// Make the request span a child of the caller's span, and take the ids the exported span
    /// really has, so upstreams see the same trace as the collector.
    pub fn link(span: &tracing::Span, mut t: TraceContext) -> TraceContext {
        if !ENABLED.load(Ordering::Relaxed) {
            return t;
        }
        if let Some(parent) = t.remote_parent {
            let flags = if t.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let sc = SpanContext::new(
                TraceId::from_bytes(t.trace_id),
                SpanId::from_bytes(parent),
                flags,
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            t.trace_id = sc.trace_id().to_bytes();
            t.span_id = sc.span_id().to_bytes();
            t.sampled = sc.is_sampled();
        }
        t
    }
}

/// Tie a request span to its trace context (a no-op without OTLP export).
pub fn link_span(span: &tracing::Span, t: TraceContext) -> TraceContext {
    #[cfg(feature = "otlp")]
    {
        otel::link(span, t)
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = span;
        t
    }
}

/// A request's W3C trace context: the caller's trace id (or a new one) and this gateway's
/// span id, which becomes the parent of the upstream calls it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte span id of the gateway's request span.
    pub span_id: [u8; 8],
    /// Sampled flag, kept from the caller.
    pub sampled: bool,
    /// The caller's span id, when the request carried a valid `traceparent`.
    pub remote_parent: Option<[u8; 8]>,
}

tokio::task_local! {
    static TRACE: TraceContext;
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let v = hex::decode(s).ok()?;
    let a: [u8; N] = v.try_into().ok()?;
    a.iter().any(|b| *b != 0).then_some(a)
}

impl TraceContext {
    /// Continue the caller's trace from a `traceparent` header, or start a new one.
    pub fn from_traceparent(header: Option<&str>) -> Self {
        use rand::RngCore;
        let mut rng = rand::thread_rng();
        let mut span_id = [0u8; 8];
        rng.fill_bytes(&mut span_id);
        span_id[0] |= 1; // never all zeros
        let parsed = header.and_then(|h| {
            let mut parts = h.trim().split('-');
            let version = parts.next()?;
            let trace = parts.next()?;
            let parent = parts.next()?;
            let flags = parts.next()?;
            if version.len() != 2 || version == "ff" || parent.len() != 16 || flags.len() != 2 {
                return None;
            }
            let parent = parse_hex::<8>(parent)?;
            let flags = u8::from_str_radix(flags, 16).ok()?;
            Some((parse_hex::<16>(trace)?, flags & 1 == 1, Some(parent)))
        });
        let (trace_id, sampled, remote_parent) = parsed.unwrap_or_else(|| {
            let mut t = [0u8; 16];
            rng.fill_bytes(&mut t);
            t[0] |= 1;
            (t, true, None)
        });
        Self {
            trace_id,
            span_id,
            sampled,
            remote_parent,
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header naming this gateway's span as the parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }

    /// Run `f` with this context current (upstream calls made inside carry it).
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        TRACE.scope(self, f).await
    }

    /// The context of the request being served, if any.
    pub fn current() -> Option<Self> {
        TRACE.try_with(|t| *t).ok()
    }
}

/// Add the current request's `traceparent` to an upstream call.
pub fn with_traceparent(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match TraceContext::current() {
        Some(t) => rb.header("traceparent", t.traceparent()),
        None => rb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_the_callers_trace() {
        let t = TraceContext::from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled);
        let h = t.traceparent();
        assert!(h.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!h.contains("00f067aa0ba902b7"), "a new span id of our own");
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            let t = TraceContext::from_traceparent(Some(bad));
            assert_ne!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(t.trace_id, [0; 16]);
        }
    }
}
