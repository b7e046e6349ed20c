//! A decoded cursor: where a page starts and which way it reads.

use std::time::SystemTime;

/// Which way a page reads from its boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The rows after the boundary, in the listing's order (the "next" page).
    After,
    /// The rows before the boundary (the "previous" page). The query runs in reverse and the
    /// rows are turned back, so a page always lists rows in the listing's order (Relay).
    Before,
}

impl Direction {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Direction::After => 0,
            Direction::Before => 1,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Direction::After),
            1 => Some(Direction::Before),
            _ => None,
        }
    }
}

/// A position in a listing: the sort-key values of a boundary row and the direction to read.
///
/// `P` is the tuple of sort-key values, for example `(i64, Uuid)` for
/// `ORDER BY created_at, id`. It is what a cursor token carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position<P> {
    direction: Direction,
    keys: P,
    expires_at: Option<SystemTime>,
}

impl<P> Position<P> {
    /// The rows after the row whose sort keys are `keys`.
    pub fn after(keys: P) -> Self {
        Position {
            direction: Direction::After,
            keys,
            expires_at: None,
        }
    }

    /// The rows before the row whose sort keys are `keys`.
    pub fn before(keys: P) -> Self {
        Position {
            direction: Direction::Before,
            keys,
            expires_at: None,
        }
    }

    pub(crate) fn decoded(direction: Direction, keys: P, expires_at: Option<SystemTime>) -> Self {
        Position {
            direction,
            keys,
            expires_at,
        }
    }

    /// Which way to read from the boundary.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The boundary row's sort-key values, to bind into the keyset query.
    pub fn keys(&self) -> &P {
        &self.keys
    }

    /// Takes the sort-key values out.
    pub fn into_keys(self) -> P {
        self.keys
    }

    /// When the token this position came from stops being accepted, if it expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}
