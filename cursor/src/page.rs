//! A request for one page, and the page that answers it.

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LINK};
use http::{HeaderValue, Response};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use tower_problem_details::{ProblemKind, Protocol};

use crate::error::EncodeError;
use crate::fingerprint::QueryFingerprint;
use crate::paginator::Paginator;
use crate::position::{Direction, Position};

/// The paging part of a request: how many rows, from where, for which query.
///
/// The [`CursorLayer`](crate::CursorLayer) puts one into the request extensions. Run the
/// keyset query for [`fetch_limit`](Self::fetch_limit) rows (one more than the page, to learn
/// whether another page follows), then hand the rows to [`paginate`](Self::paginate).
pub struct PageRequest<P> {
    limit: u32,
    position: Option<Position<P>>,
    fingerprint: QueryFingerprint,
    paginator: Paginator,
    path: String,
    /// The raw query string without the cursor parameter.
    kept_query: String,
}

impl<P> PageRequest<P> {
    pub(crate) fn new(
        limit: u32,
        position: Option<Position<P>>,
        fingerprint: QueryFingerprint,
        paginator: Paginator,
        path: String,
        kept_query: String,
    ) -> Self {
        PageRequest {
            limit,
            position,
            fingerprint,
            paginator,
            path,
            kept_query,
        }
    }

    /// The page size asked for (or the default), within the configured maximum.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How many rows to fetch: one more than [`limit`](Self::limit), so that
    /// [`paginate`](Self::paginate) can tell whether another page follows.
    pub fn fetch_limit(&self) -> u64 {
        u64::from(self.limit) + 1
    }

    /// Where the page starts; `None` for the first page.
    pub fn position(&self) -> Option<&Position<P>> {
        self.position.as_ref()
    }

    /// The fingerprint the cursor was checked against, and that new cursors are bound to.
    pub fn fingerprint(&self) -> &QueryFingerprint {
        &self.fingerprint
    }

    fn reads_backward(&self) -> bool {
        self.position
            .as_ref()
            .is_some_and(|position| position.direction() == Direction::Before)
    }
}

impl<P: Serialize> PageRequest<P> {
    /// Builds the page from the rows the keyset query returned, in the order it returned
    /// them (reversed for a backward page; they are turned back here).
    ///
    /// `sort_keys` gives a row's sort-key values, the same tuple the cursors carry.
    ///
    /// # Errors
    ///
    /// Fails when a cursor cannot be issued (see [`EncodeError`]).
    pub fn paginate<T, F>(&self, mut rows: Vec<T>, mut sort_keys: F) -> Result<Page<T>, EncodeError>
    where
        F: FnMut(&T) -> P,
    {
        let limit = self.limit as usize;
        let more_in_direction = rows.len() > limit;
        rows.truncate(limit);
        let backward = self.reads_backward();
        if backward {
            rows.reverse();
        }
        // Reading forward, rows follow this page only if the extra row came back; rows
        // precede it if we arrived through a cursor. Backward, the other way round.
        let (next_exists, prev_exists) = if backward {
            (true, more_in_direction)
        } else {
            (more_in_direction, self.position.is_some())
        };
        let codec = self.paginator.codec();
        let next_cursor = match rows.last() {
            Some(last) if next_exists => {
                Some(codec.encode(&Position::after(sort_keys(last)), &self.fingerprint)?)
            }
            _ => None,
        };
        let prev_cursor = match rows.first() {
            Some(first) if prev_exists => {
                Some(codec.encode(&Position::before(sort_keys(first)), &self.fingerprint)?)
            }
            _ => None,
        };
        let links = PageLinks {
            next: next_cursor.as_deref().map(|cursor| self.url(Some(cursor))),
            prev: prev_cursor.as_deref().map(|cursor| self.url(Some(cursor))),
            first: self.url(None),
        };
        Ok(Page {
            data: rows,
            has_more: next_cursor.is_some(),
            next_cursor,
            prev_cursor,
            links,
            paginator: self.paginator.clone(),
        })
    }

    /// The URL of this listing with `cursor` (or none, for the first page), keeping every
    /// other query parameter as the client sent it.
    fn url(&self, cursor: Option<&str>) -> String {
        let settings = self.paginator.settings();
        let mut url = String::with_capacity(
            settings.link_base.len() + self.path.len() + self.kept_query.len() + 100,
        );
        url.push_str(&settings.link_base);
        url.push_str(&self.path);
        let mut separator = '?';
        if !self.kept_query.is_empty() {
            url.push('?');
            url.push_str(&self.kept_query);
            separator = '&';
        }
        if let Some(cursor) = cursor {
            url.push(separator);
            url.extend(form_urlencoded::byte_serialize(
                settings.cursor_param.as_bytes(),
            ));
            url.push('=');
            // base64url needs no escaping.
            url.push_str(cursor);
        }
        url
    }
}

impl<P: Clone> Clone for PageRequest<P> {
    fn clone(&self) -> Self {
        PageRequest {
            limit: self.limit,
            position: self.position.clone(),
            fingerprint: self.fingerprint,
            paginator: self.paginator.clone(),
            path: self.path.clone(),
            kept_query: self.kept_query.clone(),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for PageRequest<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageRequest")
            .field("limit", &self.limit)
            .field("position", &self.position)
            .field("fingerprint", &self.fingerprint)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
struct PageLinks {
    next: Option<String>,
    prev: Option<String>,
    first: String,
}

/// One page of a listing, serialized as
/// `{"data": [...], "next_cursor": "..." | null, "has_more": bool}` (plus `prev_cursor` when
/// the [`Paginator`] asks for it).
///
/// `has_more` says whether rows follow this page (`next_cursor` is set), whichever way the
/// page was reached, so `while has_more { follow next_cursor }` reads to the end. Whether rows
/// precede it is told by `prev_cursor` and the `rel="prev"` link.
#[derive(Clone)]
pub struct Page<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
    prev_cursor: Option<String>,
    has_more: bool,
    links: PageLinks,
    paginator: Paginator,
}

impl<T> Page<T> {
    /// The rows, in the listing's order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Takes the rows out.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// The cursor of the following page, if there is one.
    pub fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }

    /// The cursor of the preceding page, if there is one.
    pub fn prev_cursor(&self) -> Option<&str> {
        self.prev_cursor.as_deref()
    }

    /// Whether rows follow this page.
    pub fn has_more(&self) -> bool {
        self.has_more
    }

    /// Turns every row into another type (database rows into API representations) while
    /// keeping the cursors.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
            prev_cursor: self.prev_cursor,
            has_more: self.has_more,
            links: self.links,
            paginator: self.paginator,
        }
    }

    /// The RFC 8288 `Link` header: `rel="next"` and `rel="prev"` when those pages exist, and
    /// always `rel="first"`. Every other query parameter is kept as the client sent it.
    ///
    /// Browsers only let scripts read it when CORS exposes it
    /// (`Access-Control-Expose-Headers: Link`, e.g. tower-http's `CorsLayer::expose_headers`).
    ///
    /// # Panics
    ///
    /// Never: every byte that a header value may not hold is percent-encoded first.
    pub fn link_header(&self) -> HeaderValue {
        let mut value = String::new();
        let rels = [
            (self.links.next.as_deref(), "next"),
            (self.links.prev.as_deref(), "prev"),
            (Some(self.links.first.as_str()), "first"),
        ];
        for (url, rel) in rels {
            if let Some(url) = url {
                if !value.is_empty() {
                    value.push_str(", ");
                }
                value.push('<');
                push_link_target(&mut value, url);
                value.push_str(">; rel=\"");
                value.push_str(rel);
                value.push('"');
            }
        }
        HeaderValue::try_from(value).expect("link targets are escaped to visible ASCII")
    }
}

/// Escapes what would end the `<...>` of a link or is not allowed in a header.
fn push_link_target(out: &mut String, url: &str) {
    for byte in url.bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b'<' | b'>' | b'"') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

impl<T: Serialize> Page<T> {
    /// A `200 OK` JSON response with the page as its body and the [`Link`](Self::link_header)
    /// header.
    ///
    /// A row that fails to serialize gives a 500 `internal` problem instead (the error is
    /// not disclosed).
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        match serde_json::to_vec(&self) {
            Ok(body) => {
                let mut response = Response::new(B::from(Bytes::from(body)));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(LINK, self.link_header());
                response
            }
            Err(_) => {
                let settings = self.paginator.settings();
                let rejection = settings.catalog.rejection(ProblemKind::Internal);
                settings
                    .responder
                    .respond(rejection, Protocol::Http)
                    .map(B::from)
            }
        }
    }
}

impl<T: Serialize> Serialize for Page<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let with_prev = self.paginator.settings().prev_cursor;
        let mut page = serializer.serialize_struct("Page", 3 + usize::from(with_prev))?;
        page.serialize_field("data", &self.data)?;
        page.serialize_field("next_cursor", &self.next_cursor)?;
        if with_prev {
            page.serialize_field("prev_cursor", &self.prev_cursor)?;
        }
        page.serialize_field("has_more", &self.has_more)?;
        page.end()
    }
}

impl<T: fmt::Debug> fmt::Debug for Page<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("data", &self.data)
            .field("next_cursor", &self.next_cursor)
            .field("prev_cursor", &self.prev_cursor)
            .field("has_more", &self.has_more)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
impl<T: Serialize> axum::response::IntoResponse for Page<T> {
    fn into_response(self) -> axum::response::Response {
        Page::into_response(self)
    }
}
