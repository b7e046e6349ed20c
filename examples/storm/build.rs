//! Generates the orders service's gRPC messages from `../orders/proto` with protox (no
//! `protoc`), for the REST-vs-gRPC benchmark, which frames and sends them itself.

fn main() {
    println!("cargo:rerun-if-changed=../orders/proto");
    let files = protox::compile(["orders/v1/orders.proto"], ["../orders/proto"])
        .expect("../orders/proto/orders/v1/orders.proto compiles");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(files)
        .expect("the orders messages generate");
}
