//! How the shared stores (Redis, SQL) write a [`Completion`]: postcard, with variants only ever
//! appended, so records written by an older version stay readable.

use bytes::Bytes;
use guardrail_store::{StoreError, StoreErrorKind};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

#[cfg(feature = "redis")]
use crate::store::Fingerprint;
use crate::store::{Completion, StoredResponse};

/// A completed record with its fingerprint (the Redis value after its `C` byte).
#[cfg(feature = "redis")]
#[derive(Serialize, Deserialize)]
struct Record {
    fingerprint: [u8; 32],
    outcome: Outcome,
}

/// [`Completion`] as stored. A response without trailers is written as `Response`, which every
/// version reads.
#[derive(Serialize, Deserialize)]
enum Outcome {
    Response {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    NotReplayable,
    ResponseWithTrailers {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        trailers: Vec<(String, Vec<u8>)>,
    },
}

/// Appends the record of `fingerprint` and `outcome` to `out`.
#[cfg(feature = "redis")]
pub(crate) fn encode_record(
    out: Vec<u8>,
    fingerprint: &Fingerprint,
    outcome: &Completion,
) -> Result<Vec<u8>, StoreError> {
    let record = Record {
        fingerprint: *fingerprint.as_bytes(),
        outcome: outcome_of(outcome),
    };
    postcard::to_extend(&record, out).map_err(cannot_encode)
}

/// Reads what [`encode_record`] appended, to the last byte.
#[cfg(feature = "redis")]
pub(crate) fn decode_record(bytes: &[u8]) -> Result<(Fingerprint, Completion), StoreError> {
    let record: Record = decode_all(bytes)?;
    Ok((
        Fingerprint::from_bytes(record.fingerprint),
        completion_of(record.outcome)?,
    ))
}

/// The outcome alone (the SQL stores keep the fingerprint in a column of its own).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn encode_outcome(outcome: &Completion) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(&outcome_of(outcome), Vec::new()).map_err(cannot_encode)
}

/// Reads what [`encode_outcome`] wrote, to the last byte.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<Completion, StoreError> {
    completion_of(decode_all(bytes)?)
}

fn decode_all<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    let (value, trailing) = postcard::take_from_bytes::<T>(bytes).map_err(corrupt)?;
    if !trailing.is_empty() {
        return Err(malformed());
    }
    Ok(value)
}

fn outcome_of(outcome: &Completion) -> Outcome {
    match outcome {
        Completion::Response(response) if response.trailers.is_empty() => Outcome::Response {
            status: response.status.as_u16(),
            headers: wire_lines(&response.headers),
            body: response.body.to_vec(),
        },
        Completion::Response(response) => Outcome::ResponseWithTrailers {
            status: response.status.as_u16(),
            headers: wire_lines(&response.headers),
            body: response.body.to_vec(),
            trailers: wire_lines(&response.trailers),
        },
        Completion::NotReplayable => Outcome::NotReplayable,
    }
}

fn completion_of(outcome: Outcome) -> Result<Completion, StoreError> {
    let (status, headers, body, trailers) = match outcome {
        Outcome::NotReplayable => return Ok(Completion::NotReplayable),
        Outcome::Response {
            status,
            headers,
            body,
        } => (status, headers, body, Vec::new()),
        Outcome::ResponseWithTrailers {
            status,
            headers,
            body,
            trailers,
        } => (status, headers, body, trailers),
    };
    Ok(Completion::Response(StoredResponse {
        status: StatusCode::from_u16(status).map_err(corrupt)?,
        headers: header_lines(headers)?,
        body: Bytes::from(body),
        trailers: header_lines(trailers)?,
    }))
}

fn wire_lines(lines: &[(HeaderName, HeaderValue)]) -> Vec<(String, Vec<u8>)> {
    lines
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

fn header_lines(
    lines: Vec<(String, Vec<u8>)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, StoreError> {
    lines
        .into_iter()
        .map(|(name, value)| {
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(corrupt)?,
                HeaderValue::from_bytes(&value).map_err(corrupt)?,
            ))
        })
        .collect()
}

fn malformed() -> StoreError {
    StoreError::new(
        StoreErrorKind::BadReply,
        "the store holds a malformed idempotency record",
    )
}

fn corrupt(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    malformed().with_source(source)
}

fn cannot_encode(source: postcard::Error) -> StoreError {
    StoreError::new(
        StoreErrorKind::BadReply,
        "cannot encode the idempotency record",
    )
    .with_source(source)
}
