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
use tower_problem_details::{Problem, ProblemCatalog, ProblemKind};

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

criterion_group!(benches, serialize, render, build_and_render, parse);
criterion_main!(benches);
