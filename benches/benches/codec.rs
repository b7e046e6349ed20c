//! The orders service's two encodings alone, without transport or database: JSON (`/v2`,
//! `serde_json`) beside protobuf (`orders.v1`, prost), for one order and for 100.
//!
//! Run: `cargo bench -p guardrail-benches --bench codec`.
//!
//! `orders_codec_encode`: what the server does for a read answer: the stored order turned
//! into the protocol's representation and serialized, as the handlers do it
//! (`ApiVersion::V2.render` then `serde_json::to_vec`, one order bare and 100 in the page
//! envelope, against `grpc::to_proto` then `encode_to_vec`). `orders_codec_decode`: what a
//! client does with it, into typed structs on both sides (`orders-protocols`' serde types,
//! against prost's generated ones). Both in one run, so the ratio is what the protocols'
//! encodings alone cost; the end-to-end comparison is `examples/orders/docs/grpc-vs-rest.sh`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use orders::grpc::{pb, to_proto};
use orders::order::{Item, Order, Status};
use orders::representation::{ApiVersion, OrderBody};
use orders_storm::protocols::json;
use prost::Message;
use serde::Serialize;

fn orders(count: usize) -> Vec<Order> {
    (0..count)
        .map(|n| Order {
            id: format!("ord_{n:032x}"),
            status: Status::Pending,
            customer_id: "cus_bench".into(),
            items: vec![
                Item {
                    sku: format!("sku-{n}"),
                    quantity: 1 + n as u64 % 5,
                    unit_price: 1250,
                },
                Item {
                    sku: "tea-1".into(),
                    quantity: 2,
                    unit_price: 399,
                },
            ],
            currency: "usd".into(),
            total: 2048,
            created_at: 1_767_225_600_000_000 + n as i64,
            cancelled_at: None,
        })
        .collect()
}

/// What the handlers serialize: one order as `GET /v2/orders/{id}` writes it, 100 as a page
/// in the listing's envelope (`data`, `next_cursor`, `has_more`), without an intermediate
/// `serde_json::Value`.
fn json(orders: &[Order]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope {
        data: Vec<OrderBody>,
        next_cursor: Option<String>,
        has_more: bool,
    }
    if let [order] = orders {
        return serde_json::to_vec(&ApiVersion::V2.render(order)).expect("serializable");
    }
    let page = Envelope {
        data: orders.iter().map(|o| ApiVersion::V2.render(o)).collect(),
        next_cursor: None,
        has_more: false,
    };
    serde_json::to_vec(&page).expect("serializable")
}

/// What the gRPC methods encode: one `Order` (`GetOrder`), or a `ListOrdersResponse` of 100.
fn proto(orders: &[Order]) -> Vec<u8> {
    if let [order] = orders {
        return to_proto(order).encode_to_vec();
    }
    pb::ListOrdersResponse {
        orders: orders.iter().map(to_proto).collect(),
        next_page_token: String::new(),
    }
    .encode_to_vec()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("orders_codec_encode");
    for count in [1, 100] {
        let orders = orders(count);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("json", count), &orders, |b, orders| {
            b.iter(|| json(orders));
        });
        group.bench_with_input(BenchmarkId::new("protobuf", count), &orders, |b, orders| {
            b.iter(|| proto(orders));
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("orders_codec_decode");
    for count in [1, 100] {
        let orders = orders(count);
        let (json, proto) = (json(&orders), proto(&orders));
        #[allow(clippy::print_stdout)] // The sizes, beside criterion's report.
        {
            println!(
                "{count} order(s): JSON {} bytes, protobuf {} bytes",
                json.len(),
                proto.len()
            );
        }
        group.throughput(Throughput::Elements(count as u64));
        // Into typed structs on both sides, as a client decodes (the benchmark's own).
        group.bench_with_input(BenchmarkId::new("json", count), &json, |b, bytes| {
            b.iter(|| {
                if count == 1 {
                    serde_json::from_slice::<json::Order>(bytes).map(|o| o.items.len())
                } else {
                    serde_json::from_slice::<json::Page>(bytes).map(|p| p.data.len())
                }
                .expect("valid")
            });
        });
        group.bench_with_input(BenchmarkId::new("protobuf", count), &proto, |b, bytes| {
            b.iter(|| {
                if count == 1 {
                    pb::Order::decode(bytes.as_slice()).map(|o| o.items.len())
                } else {
                    pb::ListOrdersResponse::decode(bytes.as_slice()).map(|r| r.orders.len())
                }
                .expect("valid")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
