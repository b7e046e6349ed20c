//! Rendering problems: `tower-problem-details` beside `http-api-problem`, the most used peer.
//!
//! Run: `cargo bench -p guardrail-benches --bench problem_details`.
//! Target (DESIGN.md): serializing a typical problem and rendering it into a response, under
//! 1 µs.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Response, StatusCode};
use http_api_problem::HttpApiProblem;
use http_body_util::Full;
use serde_json::json;
use std::time::Duration;

use http::HeaderValue;
use http::header::RETRY_AFTER;
use tower_problem_details::{
    Problem, ProblemCatalog, ProblemKind, Protocol, Responder, ResponseBody, UriRef,
    retry_after_seconds,
};

/// A typical rejection: a 429 with a detail and two extension members.
fn ours() -> Problem {
    ProblemCatalog::default()
        .problem(ProblemKind::QuotaExceeded)
        .with_detail("The burst quota of 10 requests is used up; retry in 3 seconds.")
        .with_extension("violated-policies", json!(["burst"]))
        .expect("extension name")
        .with_extension("request_id", "0f8fad5b-d9cb-469f-a165-70867728950e")
        .expect("extension name")
}

fn peer() -> HttpApiProblem {
    HttpApiProblem::new(StatusCode::TOO_MANY_REQUESTS)
        .type_url("/problems/quota-exceeded")
        .title("Request quota exceeded")
        .detail("The burst quota of 10 requests is used up; retry in 3 seconds.")
        .value("violated-policies", &json!(["burst"]))
        .value("request_id", &"0f8fad5b-d9cb-469f-a165-70867728950e")
}

fn peer_response(problem: &HttpApiProblem) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(problem.json_bytes())));
    *response.status_mut() = problem.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        "application/problem+json".parse().expect("valid"),
    );
    headers.insert("cache-control", "no-store".parse().expect("valid"));
    response
}

fn serialize(c: &mut Criterion) {
    let mut group = c.benchmark_group("problem/serialize");
    let problem = ours();
    group.bench_function("tower-problem-details", |b| {
        b.iter(|| black_box(&problem).to_json_bytes());
    });
    let peer = peer();
    group.bench_function("http-api-problem", |b| {
        b.iter(|| black_box(&peer).json_bytes());
    });
    group.finish();
}

fn build_and_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("problem/build_and_render_response");
    group.bench_function("tower-problem-details", |b| {
        b.iter(|| black_box(ours()).into_response::<Full<Bytes>>());
    });
    group.bench_function("http-api-problem", |b| {
        b.iter(|| peer_response(&black_box(peer())));
    });
    group.finish();
}

fn render(c: &mut Criterion) {
    let mut group = c.benchmark_group("problem/render_response");
    let problem = ours();
    group.bench_function("tower-problem-details", |b| {
        b.iter_batched(
            || problem.clone(),
            |p| p.into_response::<Full<Bytes>>(),
            BatchSize::SmallInput,
        );
    });
    let peer = peer();
    group.bench_function("http-api-problem", |b| {
        b.iter(|| peer_response(black_box(&peer)));
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("problem/parse");
    let body = ours().to_json_bytes();
    group.bench_function("tower-problem-details", |b| {
        b.iter(|| Problem::from_json(black_box(&body)));
    });
    group.bench_function("http-api-problem", |b| {
        b.iter(|| serde_json::from_slice::<HttpApiProblem>(black_box(&body)));
    });
    group.finish();
}

/// What a guardrail's rejection cost before the shared responder: the rate limiter's
/// hand-written 429 (problem, extension member, response, `Retry-After`, typed reason).
fn hand_written(catalog: &ProblemCatalog, wait: Duration) -> Response<Full<Bytes>> {
    let problem = catalog.problem(ProblemKind::QuotaExceeded);
    render_by_hand(problem, wait)
}

/// The rest of the hand-written 429: detail, extension member, response, `Retry-After`,
/// typed reason.
fn render_by_hand(problem: Problem, wait: Duration) -> Response<Full<Bytes>> {
    let mut problem = problem.with_detail("The quota of burst is used up; retry in 3 s.");
    let _ = problem.insert_extension("violated-policies", vec!["burst".to_owned()]);
    let mut response = problem.into_response::<Full<Bytes>>();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
    response.extensions_mut().insert(vec!["burst".to_owned()]);
    response
}

/// [`hand_written`] as it ran before the shared responder, when the catalog formatted and
/// validated the type URI on every call.
fn hand_written_before(catalog: &ProblemCatalog, wait: Duration) -> Response<Full<Bytes>> {
    let kind = ProblemKind::QuotaExceeded;
    let uri = UriRef::try_from(format!("{}{}", catalog.base(), kind.slug())).expect("valid");
    let problem = Problem::new(kind.status())
        .with_type(uri)
        .with_title(kind.title());
    render_by_hand(problem, wait)
}

/// The same rejection described as data and rendered by the shared responder, as every
/// guardrail does now.
fn responded(
    catalog: &ProblemCatalog,
    responder: &Responder,
    wait: Duration,
    protocol: Protocol,
) -> Response<ResponseBody<Full<Bytes>>> {
    let mut rejection = catalog
        .rejection(ProblemKind::QuotaExceeded)
        .with_detail("The quota of burst is used up; retry in 3 s.")
        .with_quota_violation("burst", "the quota is used up")
        .with_retry_after(wait);
    let _ = rejection
        .problem_mut()
        .insert_extension("violated-policies", vec!["burst".to_owned()]);
    let mut response = responder.respond_with(rejection, protocol);
    response.extensions_mut().insert(vec!["burst".to_owned()]);
    response
}

fn rejection(c: &mut Criterion) {
    let mut group = c.benchmark_group("problem/rejection_response");
    let catalog = ProblemCatalog::default();
    let responder = Responder::default();
    let wait = Duration::from_millis(2500);
    group.bench_function("hand-written builder, before", |b| {
        b.iter(|| hand_written_before(black_box(&catalog), black_box(wait)));
    });
    group.bench_function("hand-written builder", |b| {
        b.iter(|| hand_written(black_box(&catalog), black_box(wait)));
    });
    group.bench_function("shared responder (HTTP)", |b| {
        b.iter(|| {
            responded(
                black_box(&catalog),
                &responder,
                black_box(wait),
                Protocol::Http,
            )
        });
    });
    group.bench_function("shared responder (gRPC)", |b| {
        b.iter(|| {
            responded(
                black_box(&catalog),
                &responder,
                black_box(wait),
                Protocol::Grpc,
            )
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    serialize,
    render,
    build_and_render,
    parse,
    rejection
);
criterion_main!(benches);
