//! [`RequestBody`], what the handler reads, and [`ResponseBody`], what the layer answers with.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_problem_details::{GRPC_STATUS, GrpcCode};

use crate::policy::OutcomePolicy;
use crate::store::StoredResponse;

pin_project! {
    /// The request body the handler behind [`Idempotency`](crate::Idempotency) reads: the
    /// original body, or, for a request the layer read to fingerprint it, those same bytes.
    ///
    /// axum's and tonic's routers take any body, so this is invisible there; a plain
    /// `service_fn` handler names it (`Request<RequestBody<B>>`) or is generic over the body.
    pub struct RequestBody<B> {
        // The workspace's body of "the inner one or bytes already in hand".
        #[pin]
        body: tower_problem_details::ResponseBody<B>,
    }
}

impl<B> RequestBody<B> {
    /// The original body, passed through.
    pub fn new(body: B) -> Self {
        RequestBody {
            body: tower_problem_details::ResponseBody::new(body),
        }
    }

    /// A body of bytes already read.
    pub fn read(data: Bytes) -> Self {
        RequestBody {
            body: tower_problem_details::ResponseBody::full(data),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestBody").field(&self.body).finish()
    }
}

pin_project! {
    /// The response body of [`Idempotency`](crate::Idempotency): the handler's body passed
    /// through, a body the layer wrote (a rejection, a replay with its trailers), or a gRPC
    /// response streamed through while a copy is kept for replay.
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B> {
        Plain { #[pin] body: tower_problem_details::ResponseBody<B> },
        Kept { #[pin] body: B, tee: Box<Tee> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self::plain(tower_problem_details::ResponseBody::new(body))
    }

    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self::plain(tower_problem_details::ResponseBody::with_trailers(
            data, trailers,
        ))
    }

    fn plain(body: tower_problem_details::ResponseBody<B>) -> Self {
        ResponseBody {
            kind: ResponseKind::Plain { body },
        }
    }

    pub(crate) fn kept(body: B, tee: Tee) -> Self {
        ResponseBody {
            kind: ResponseKind::Kept {
                body,
                tee: Box::new(tee),
            },
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            ResponseKindProj::Plain { body } => body.poll_frame(cx),
            ResponseKindProj::Kept { body, tee } => {
                let frame = ready!(body.poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            tee.data(data);
                        } else if let Some(trailers) = frame.trailers_ref() {
                            tee.end(Some(trailers));
                        }
                    }
                    // The handler ran, but its body broke: never run it again.
                    Some(Err(_)) => tee.settle(Settlement::Unreplayable),
                    None => tee.end(None),
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Plain { body } => body.is_end_stream(),
            ResponseKind::Kept { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Plain { body } => body.size_hint(),
            ResponseKind::Kept { body, .. } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ResponseKind::Plain { body } => body.fmt(f),
            ResponseKind::Kept { .. } => f.write_str("ResponseBody::Kept"),
        }
    }
}

/// How a streamed-through response ends its claim.
pub(crate) enum Settlement {
    /// Completed with this response to replay.
    Keep(StoredResponse),
    /// Completed without a replayable response (a stream, too large, broken).
    Unreplayable,
    /// Given back: the call failed in a way a retry may cure.
    Release,
}

pub(crate) type Settle = Box<dyn FnOnce(Settlement) + Send + Sync>;

/// A task that renews a lease until it is dropped.
pub(crate) struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub(crate) fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Renewal(task)
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The copy of a gRPC response kept while it streams to the client, and the claim it ends.
///
/// Bounds: at most `limit` bytes are copied; the copy is dropped at the first byte over it, or
/// when a second message starts (a server stream, never replayed), and the claim is completed
/// without a replayable result at once. A task renews the lease every `lease / 3` until the
/// claim is settled or the body dropped, so a client that stops reading (and so stops the body
/// from being polled) never lets the lease run out under a live response. If the body is
/// dropped unfinished, dropping the settle closure drops the claim guard, which completes the
/// claim as not replayable.
pub(crate) struct Tee {
    kept: Option<(StoredResponse, BytesMut)>,
    /// The `grpc-status` of the header block, if the answer carried it there.
    header_status: Option<GrpcCode>,
    limit: usize,
    policy: OutcomePolicy,
    settle: Option<Settle>,
    renewal: Option<Renewal>,
}

impl Tee {
    pub(crate) fn new(
        start: StoredResponse,
        header_status: Option<GrpcCode>,
        limit: usize,
        policy: OutcomePolicy,
        settle: Settle,
        renewal: Renewal,
    ) -> Self {
        Tee {
            kept: Some((start, BytesMut::new())),
            header_status,
            limit,
            policy,
            settle: Some(settle),
            renewal: Some(renewal),
        }
    }

    fn data(&mut self, data: &Bytes) {
        let Some((_, copy)) = &mut self.kept else {
            return;
        };
        if copy.len() + data.len() > self.limit {
            return self.settle(Settlement::Unreplayable);
        }
        copy.extend_from_slice(data);
        if grpc_messages_started(copy) > 1 {
            self.settle(Settlement::Unreplayable);
        }
    }

    fn end(&mut self, trailers: Option<&HeaderMap>) {
        let Some((mut stored, copy)) = self.kept.take() else {
            return;
        };
        let trailers = trailers.map(lines).unwrap_or_default();
        let code = trailers
            .iter()
            .find(|(name, _)| *name == GRPC_STATUS)
            .and_then(|(_, value)| GrpcCode::from_header(value))
            .or(self.header_status);
        // A call that ended without a status is broken, whatever its HTTP status said.
        let status = code.map_or(StatusCode::INTERNAL_SERVER_ERROR, GrpcCode::http_status);
        stored.body = copy.freeze();
        stored.trailers = trailers;
        let settlement = if code.is_none() {
            Settlement::Unreplayable
        } else if self.policy.keeps(status) {
            Settlement::Keep(stored)
        } else {
            Settlement::Release
        };
        self.settle(settlement);
    }

    fn settle(&mut self, settlement: Settlement) {
        self.kept = None;
        self.renewal = None;
        if let Some(settle) = self.settle.take() {
            settle(settlement);
        }
    }
}

/// The header lines of `map`, in order.
pub(crate) fn lines(map: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    map.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
}

/// How many gRPC messages (a 5-byte prefix: a compression flag and a big-endian length,
/// then the message) have started in `data`.
fn grpc_messages_started(data: &[u8]) -> usize {
    let mut started = 0;
    let mut at = 0usize;
    while at < data.len() {
        started += 1;
        let Some(prefix) = data.get(at..at + 5) else {
            break;
        };
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        at = at.saturating_add(5).saturating_add(len as usize);
    }
    started
}

/// A whole body, as [`BodyExt::collect`](http_body_util::BodyExt::collect) and
/// `Collected::to_bytes` read it, but without the buffer list `collect` allocates for every
/// body: a body of one data frame (a `Full`, most request and response bodies in one read)
/// comes out as that frame, with no allocation and no copy; more frames are joined into one
/// buffer. Bounded by what the caller wraps the body in ([`Limited`](http_body_util::Limited)),
/// as `collect` is.
pub(crate) async fn read_whole<B>(body: B) -> Result<(Bytes, Option<HeaderMap>), B::Error>
where
    B: Body<Data = Bytes>,
{
    use http_body_util::BodyExt as _;

    let mut body = std::pin::pin!(body);
    let mut first = None::<Bytes>;
    let mut joined = None::<BytesMut>;
    let mut trailers = None::<HeaderMap>;
    while let Some(frame) = body.as_mut().frame().await {
        let frame = match frame?.into_data() {
            Ok(data) => {
                match (&mut joined, first.take()) {
                    (Some(joined), _) => joined.extend_from_slice(&data),
                    (None, None) => first = Some(data),
                    (None, Some(earlier)) => {
                        let mut buffer = BytesMut::with_capacity(earlier.len() + data.len());
                        buffer.extend_from_slice(&earlier);
                        buffer.extend_from_slice(&data);
                        joined = Some(buffer);
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(more) = frame.into_trailers() {
            match &mut trailers {
                Some(trailers) => trailers.extend(more),
                None => trailers = Some(more),
            }
        }
    }
    let data = joined.map_or_else(|| first.unwrap_or_default(), BytesMut::freeze);
    Ok((data, trailers))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn frames(frames: Vec<Frame<Bytes>>) -> impl Body<Data = Bytes, Error = Infallible> {
        http_body_util::StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, Infallible>),
        ))
    }

    fn whole(body: impl Body<Data = Bytes, Error = Infallible>) -> (Bytes, Option<HeaderMap>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match runtime.block_on(read_whole(body)) {
            Ok(whole) => whole,
            Err(never) => match never {},
        }
    }

    #[test]
    fn a_body_of_one_frame_is_read_without_a_copy() {
        let data = Bytes::from(vec![7u8; 1024]);
        let (read, trailers) = whole(http_body_util::Full::new(data.clone()));
        assert_eq!(read.as_ptr(), data.as_ptr(), "the frame itself, not a copy");
        assert_eq!(read.len(), 1024);
        assert!(trailers.is_none());
    }

    #[test]
    fn frames_are_joined_in_order_and_trailers_merged() {
        let mut first = HeaderMap::new();
        first.insert("grpc-status", HeaderValue::from_static("0"));
        let mut second = HeaderMap::new();
        second.insert("grpc-message", HeaderValue::from_static("ok"));
        let (read, trailers) = whole(frames(vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::trailers(first),
            Frame::data(Bytes::from_static(b"e")),
            Frame::trailers(second),
        ]));
        assert_eq!(read, Bytes::from_static(b"abcde"));
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
        assert!(whole(frames(Vec::new())).0.is_empty());
    }

    #[test]
    fn messages_are_counted_from_their_prefixes() {
        assert_eq!(grpc_messages_started(&[]), 0);
        assert_eq!(grpc_messages_started(&[0, 0, 0]), 1);
        assert_eq!(grpc_messages_started(&[0, 0, 0, 0, 2, 7, 7]), 1);
        assert_eq!(grpc_messages_started(&[0, 0, 0, 0, 2, 7, 7, 0]), 2);
        assert_eq!(grpc_messages_started(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 2);
        assert_eq!(grpc_messages_started(&[0, 255, 255, 255, 255, 1]), 1);
    }
}
