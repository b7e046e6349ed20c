//! [`CursorLayer`].

use std::fmt;
use std::marker::PhantomData;

use tower_layer::Layer;

use crate::paginator::Paginator;
use crate::service::Cursor;

/// Reads `cursor` and `limit` from GET and HEAD requests and puts a
/// [`PageRequest<P>`](crate::PageRequest) into the request extensions; refuses a bad limit
/// (400 `invalid-page-size`) or a cursor that does not verify for the query (400
/// `invalid-cursor`) without calling the inner service.
///
/// `P` is the tuple of sort-key values the cursors carry. Other methods pass through
/// untouched. Cloning this layer shares the [`Paginator`] (its keys and settings).
pub struct CursorLayer<P> {
    paginator: Paginator,
    _position: PhantomData<fn() -> P>,
}

impl<P> CursorLayer<P> {
    /// A layer that pages with `paginator`.
    pub fn new(paginator: Paginator) -> Self {
        CursorLayer {
            paginator,
            _position: PhantomData,
        }
    }
}

impl<S, P> Layer<S> for CursorLayer<P> {
    type Service = Cursor<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Cursor::new(inner, self.paginator.clone())
    }
}

impl<P> Clone for CursorLayer<P> {
    fn clone(&self) -> Self {
        CursorLayer::new(self.paginator.clone())
    }
}

impl<P> fmt::Debug for CursorLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CursorLayer")
            .field("paginator", &self.paginator)
            .finish()
    }
}
