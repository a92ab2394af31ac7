//! A bare pass-through HTTP proxy: the reference point for the gateway's own cost.
//!
//! It does the least any proxy must do for one call: accept the client's request, read its
//! body, send it to the upstream over pooled keep-alive connections, read the answer and send
//! it back. No parsing, auth, routing, cache, ledger or metrics. `scripts/bench.sh` runs it beside
//! Switchyard, so the report can tell the cost of proxying at all (two HTTP exchanges on one
//! box) from the cost of what Switchyard does on top.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Forward every request to one upstream.
#[derive(Debug, Parser)]
#[command(name = "passproxy")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream origin, e.g. `http://127.0.0.1:9000` (the request's path is kept).
    #[arg(long)]
    upstream: String,
    /// Runtime worker threads (the gateway's default is one per core).
    #[arg(long)]
    threads: Option<usize>,
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// The upstream's scheme and authority, parsed once.
#[derive(Clone)]
struct Origin {
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
}

async fn forward(
    client: Upstream,
    origin: Origin,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let uri = Uri::builder()
        .scheme(origin.scheme)
        .authority(origin.authority)
        .path_and_query(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
        )
        .build()?;
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            out = out.header(name, value);
        }
    }
    let resp = client.request(out.body(Full::new(body))?).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all()
        .build()
        .context("runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.context("bind")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    let upstream: Uri = args.upstream.parse().context("--upstream")?;
    let origin = Origin {
        scheme: upstream
            .scheme()
            .cloned()
            .context("--upstream needs a scheme")?,
        authority: upstream
            .authority()
            .cloned()
            .context("--upstream needs a host")?,
    };
    eprintln!("passproxy: {} -> {upstream}", args.listen);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, origin) = (client.clone(), origin.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (client, origin) = (client.clone(), origin.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        forward(client, origin, req).await.unwrap_or_else(|e| {
                            let mut r = Response::new(Full::new(Bytes::from(e.to_string())));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r
                        }),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
