//! The order, as the service keeps it: one model behind every API version.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most line items in one order.
pub const MAX_ITEMS: usize = 100;
/// Most units of one line item.
pub const MAX_QUANTITY: u64 = 10_000;
/// The highest unit price, in minor units (ten million in major units).
pub const MAX_UNIT_PRICE: u64 = 1_000_000_000;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Placed and not yet cancelled: the only status that can be cancelled.
    Pending,
    /// Cancelled by the caller.
    Cancelled,
}

impl Status {
    /// The name stored in the database and sent in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status a stored name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Status::Pending),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The stock keeping unit.
    pub sku: String,
    /// How many units.
    pub quantity: u64,
    /// The price of one unit, in minor units of the order's currency.
    pub unit_price: u64,
}

/// A valid order as a caller asked for it, whatever the API version it came through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewOrder {
    /// The customer it is for (`cus_…`).
    pub customer_id: String,
    /// Its lines, 1 to [`MAX_ITEMS`].
    pub items: Vec<Item>,
    /// A lower-case ISO 4217 code.
    pub currency: String,
    /// The sum of the lines, checked not to overflow when the order was validated.
    pub total: u64,
}

impl NewOrder {
    /// SHA-256 of the order's canonical form, kept beside its idempotency key so that a key
    /// reused for another order is refused even after the idempotency store forgot it.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        // Serializing a struct is deterministic: field order is declaration order.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    }
}

/// A stored order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// `ord_` and a time-ordered UUID (v7).
    pub id: String,
    /// Its status.
    pub status: Status,
    /// The customer it is for.
    pub customer_id: String,
    /// Its lines.
    pub items: Vec<Item>,
    /// A lower-case ISO 4217 code.
    pub currency: String,
    /// The sum of the lines, in minor units.
    pub total: u64,
    /// When it was placed, in microseconds since the Unix epoch.
    pub created_at: i64,
    /// When it was cancelled, in microseconds since the Unix epoch.
    pub cancelled_at: Option<i64>,
}

/// A new order id: `ord_` and a UUID v7, so ids sort by creation time.
pub fn new_order_id() -> String {
    format!("ord_{}", uuid::Uuid::now_v7().simple())
}

/// Whether `id` has the shape of an order id (anything else is a 404 without a query).
pub fn is_order_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("ord_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Formats microseconds since the epoch as RFC 3339 in UTC, with microseconds.
pub fn format_timestamp(micros: i64) -> String {
    let nanos = i128::from(micros) * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
