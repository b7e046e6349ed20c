#![doc = include_str!("../README.md")]

mod codec;
mod error;
mod fingerprint;
mod future;
mod keyset;
mod layer;
mod page;
mod paginator;
mod position;
mod secret;
mod service;

pub use codec::{CursorCodec, MAX_TOKEN_LEN};
pub use error::{
    ConfigError, ConfigErrorKind, CursorError, CursorErrorKind, CursorRejection, EncodeError,
    EncodeErrorKind,
};
pub use fingerprint::{QueryFingerprint, QueryFingerprintBuilder};
pub use future::ResponseFuture;
pub use keyset::{Keyset, KeysetBuilder, KeysetSql, Placeholders, SortOrder};
pub use layer::CursorLayer;
pub use page::{Page, PageRequest};
pub use paginator::{Paginator, REASON_MEMBER};
pub use position::{Direction, Position};
pub use secret::{CursorSecret, KeyId, KeyRing, MIN_SECRET_LEN};
pub use service::Cursor;
