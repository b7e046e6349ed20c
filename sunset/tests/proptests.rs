//! Property tests: what the layer writes, the parsers read back.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use proptest::prelude::*;
use tower::{Layer, Service, service_fn};
use tower_sunset::{SunsetLayer, parse_deprecation, parse_sunset};

/// 9999-12-31T23:59:59Z.
const MAX: u64 = 253_402_300_799;

fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the service answers at once"),
    }
}

proptest! {
    #[test]
    fn prop_rendered_headers_parse_back_to_the_same_second(
        deprecation in 0..=MAX,
        later in 0..=MAX,
        nanos in 0u32..1_000_000_000,
    ) {
        let sunset = deprecation.max(later);
        let deprecated_at = UNIX_EPOCH + Duration::new(deprecation, nanos);
        let sunset_at = (UNIX_EPOCH + Duration::new(sunset, nanos)).max(deprecated_at);
        let layer = SunsetLayer::new(deprecated_at).and_then(|l| l.sunset_at(sunset_at)).expect("in range");
        let mut service = layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
        let response = ready(service.call(Request::new(()))).expect("infallible");

        let d = parse_deprecation(response.headers()["deprecation"].as_bytes()).expect("parses");
        prop_assert!(d.is_conformant());
        prop_assert_eq!(d.time(), Some(UNIX_EPOCH + Duration::from_secs(deprecation)));
        let s = parse_sunset(response.headers()["sunset"].as_bytes()).expect("parses");
        prop_assert!(s.is_conformant());
        prop_assert_eq!(s.time(), UNIX_EPOCH + Duration::from_secs(sunset));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_deprecation(&bytes);
        let _ = parse_sunset(&bytes);
    }
}
