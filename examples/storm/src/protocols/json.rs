//! The `/v2` JSON a client reads, as typed serde structs (a client decodes into its own types,
//! as prost decodes into generated ones), so the two encodings are compared like for like.

use serde::Deserialize;

/// An amount of money.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Money {
    /// Minor units.
    pub amount: u64,
    /// A lower-case ISO 4217 code.
    pub currency: String,
}

/// One line of an order.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Item {
    /// The stock keeping unit.
    pub sku: String,
    /// How many units.
    pub quantity: u64,
    /// The price of one unit.
    pub unit_price: Money,
}

/// A `/v2` order.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Order {
    /// `ord_…`.
    pub id: String,
    /// `pending` or `cancelled`.
    pub status: String,
    /// `cus_…`.
    pub customer_id: String,
    /// The lines.
    pub items: Vec<Item>,
    /// The sum of the lines.
    pub total: Money,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, or null.
    pub cancelled_at: Option<String>,
}

/// A page of `/v2` orders.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Page {
    /// The orders.
    pub data: Vec<Order>,
    /// The next page's cursor.
    pub next_cursor: Option<String>,
    /// Whether there is a next page.
    pub has_more: bool,
}
