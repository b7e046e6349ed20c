//! The version transformer: how each API version writes an order and reads a new one.
//!
//! One model ([`Order`]) is stored; `/v1` and `/v2` are two views of it. v2's breaking change
//! is money: v1 sends amounts as bare integers beside one `currency`, v2 sends every amount as
//! a `{"amount", "currency"}` object. v1's additive change (no version bump) is
//! `cancelled_at`.
//!
//! Responses are serde types per version ([`OrderV1`], [`OrderV2`]). Requests are read by hand
//! from a parsed document, because every mistake is reported at once with its JSON Pointer,
//! which serde's derive (first error only, no pointer) cannot do.

use serde::Serialize;
use serde_json::{Map, Value};
use tower_problem_details::{JsonPointer, ValidationErrors};

use crate::order::{
    Item, MAX_ITEMS, MAX_QUANTITY, MAX_UNIT_PRICE, NewOrder, Order, Status, format_timestamp,
};

/// An API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// Deprecated: flat amounts in minor units beside one `currency`.
    V1,
    /// Current: money as `{"amount", "currency"}` objects.
    V2,
}

/// An order as one version writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum OrderBody {
    /// `/v1`.
    V1(OrderV1),
    /// `/v2`.
    V2(OrderV2),
}

/// `/v1`'s order: amounts are bare minor units beside one `currency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderV1 {
    /// `ord_…`.
    pub id: String,
    /// `pending` or `cancelled`.
    pub status: Status,
    /// `cus_…`.
    pub customer_id: String,
    /// The lines.
    pub items: Vec<ItemV1>,
    /// The sum of the lines, in minor units.
    pub total: u64,
    /// A lower-case ISO 4217 code.
    pub currency: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC; added to v1 without a version bump (additive).
    pub cancelled_at: Option<String>,
}

/// A `/v1` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemV1 {
    /// The stock keeping unit.
    pub sku: String,
    /// How many units.
    pub quantity: u64,
    /// Minor units.
    pub unit_price: u64,
}

/// `/v2`'s order: every amount is a [`Money`] object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderV2 {
    /// `ord_…`.
    pub id: String,
    /// `pending` or `cancelled`.
    pub status: Status,
    /// `cus_…`.
    pub customer_id: String,
    /// The lines.
    pub items: Vec<ItemV2>,
    /// The sum of the lines.
    pub total: Money,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub cancelled_at: Option<String>,
}

/// A `/v2` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemV2 {
    /// The stock keeping unit.
    pub sku: String,
    /// How many units.
    pub quantity: u64,
    /// The price of one unit.
    pub unit_price: Money,
}

/// `/v2`'s amount: minor units and their currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Money {
    /// Minor units.
    pub amount: u64,
    /// A lower-case ISO 4217 code.
    pub currency: String,
}

impl ApiVersion {
    /// The path prefix (`/v1`).
    pub fn prefix(self) -> &'static str {
        match self {
            ApiVersion::V1 => "/v1",
            ApiVersion::V2 => "/v2",
        }
    }

    /// The version's representation of an order, ready to serialize.
    pub fn render(self, order: &Order) -> OrderBody {
        let created_at = format_timestamp(order.created_at);
        let cancelled_at = order.cancelled_at.map(format_timestamp);
        match self {
            ApiVersion::V1 => OrderBody::V1(OrderV1 {
                id: order.id.clone(),
                status: order.status,
                customer_id: order.customer_id.clone(),
                items: order
                    .items
                    .iter()
                    .map(|item| ItemV1 {
                        sku: item.sku.clone(),
                        quantity: item.quantity,
                        unit_price: item.unit_price,
                    })
                    .collect(),
                total: order.total,
                currency: order.currency.clone(),
                created_at,
                cancelled_at,
            }),
            ApiVersion::V2 => {
                let money = |amount| Money {
                    amount,
                    currency: order.currency.clone(),
                };
                OrderBody::V2(OrderV2 {
                    id: order.id.clone(),
                    status: order.status,
                    customer_id: order.customer_id.clone(),
                    items: order
                        .items
                        .iter()
                        .map(|item| ItemV2 {
                            sku: item.sku.clone(),
                            quantity: item.quantity,
                            unit_price: money(item.unit_price),
                        })
                        .collect(),
                    total: money(order.total),
                    created_at,
                    cancelled_at,
                })
            }
        }
    }

    /// Reads a new order from a parsed request body, collecting every mistake with its JSON
    /// Pointer.
    ///
    /// # Errors
    ///
    /// The mistakes, when there is at least one.
    pub fn parse_new_order(self, body: &Value) -> Result<NewOrder, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let root = JsonPointer::root();
        let Some(object) = body.as_object() else {
            errors.push(root, "must be a JSON object");
            return Err(errors);
        };

        let customer_id = string_field(object, &root, "customer_id", &mut errors, |s| {
            valid_customer_id(s)
                .then_some(())
                .ok_or("must be `cus_` followed by 1 to 60 characters from [A-Za-z0-9_]")
        });

        // v1 names the currency once; v2 inside every amount, and they must agree.
        let mut currency = match self {
            ApiVersion::V1 => string_field(object, &root, "currency", &mut errors, check_currency),
            ApiVersion::V2 => None,
        };

        let mut items = Vec::new();
        let items_pointer = root.clone().push("items");
        match object.get("items") {
            None => errors.push(items_pointer, "is required"),
            Some(Value::Array(list)) if list.is_empty() || list.len() > MAX_ITEMS => {
                errors.push(items_pointer, format!("must hold 1 to {MAX_ITEMS} items"));
            }
            Some(Value::Array(list)) => {
                for (index, item) in list.iter().enumerate() {
                    let pointer = items_pointer.clone().push(index);
                    if let Some(item) = self.parse_item(item, &pointer, &mut currency, &mut errors)
                    {
                        items.push(item);
                    }
                }
            }
            Some(_) => errors.push(items_pointer, "must be an array"),
        }

        match (customer_id, currency) {
            (Some(customer_id), Some(currency)) if errors.is_empty() => {
                // At most 100 × 10,000 × 10⁹ = 10¹⁵: no overflow.
                let total = items.iter().map(|i| i.quantity * i.unit_price).sum();
                Ok(NewOrder {
                    customer_id,
                    items,
                    currency,
                    total,
                })
            }
            _ => Err(errors),
        }
    }

    fn parse_item(
        self,
        item: &Value,
        pointer: &JsonPointer,
        currency: &mut Option<String>,
        errors: &mut ValidationErrors,
    ) -> Option<Item> {
        let Some(item) = item.as_object() else {
            errors.push(pointer.clone(), "must be a JSON object");
            return None;
        };
        let sku = string_field(item, pointer, "sku", errors, |s| {
            valid_sku(s)
                .then_some(())
                .ok_or("must be 1 to 64 characters from [A-Za-z0-9._-]")
        });
        let quantity = integer_field(item, pointer, "quantity", 1, MAX_QUANTITY, errors);
        let unit_price = match self {
            ApiVersion::V1 => integer_field(item, pointer, "unit_price", 0, MAX_UNIT_PRICE, errors),
            ApiVersion::V2 => {
                let money_pointer = pointer.clone().push("unit_price");
                match item.get("unit_price") {
                    None => {
                        errors.push(money_pointer, "is required");
                        None
                    }
                    Some(Value::Object(money)) => {
                        let amount = integer_field(
                            money,
                            &money_pointer,
                            "amount",
                            0,
                            MAX_UNIT_PRICE,
                            errors,
                        );
                        let code =
                            string_field(money, &money_pointer, "currency", errors, check_currency);
                        match (code, currency.as_deref()) {
                            (Some(code), Some(first)) if code != first => {
                                errors.push(
                                    money_pointer.push("currency"),
                                    format!("must be {first:?}, like the first item: an order has one currency"),
                                );
                                None
                            }
                            (Some(code), None) => {
                                *currency = Some(code);
                                amount
                            }
                            _ => amount,
                        }
                    }
                    Some(_) => {
                        errors.push(
                            money_pointer,
                            "must be an object with `amount` and `currency`",
                        );
                        None
                    }
                }
            }
        };
        Some(Item {
            sku: sku?,
            quantity: quantity?,
            unit_price: unit_price?,
        })
    }
}

fn string_field(
    object: &Map<String, Value>,
    parent: &JsonPointer,
    name: &str,
    errors: &mut ValidationErrors,
    check: impl FnOnce(&str) -> Result<(), &'static str>,
) -> Option<String> {
    let pointer = parent.clone().push(name);
    match object.get(name) {
        None => errors.push(pointer, "is required"),
        Some(Value::String(value)) => match check(value) {
            Ok(()) => return Some(value.clone()),
            Err(detail) => errors.push(pointer, detail),
        },
        Some(_) => errors.push(pointer, "must be a string"),
    }
    None
}

fn integer_field(
    object: &Map<String, Value>,
    parent: &JsonPointer,
    name: &str,
    min: u64,
    max: u64,
    errors: &mut ValidationErrors,
) -> Option<u64> {
    let pointer = parent.clone().push(name);
    match object.get(name) {
        None => errors.push(pointer, "is required"),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(value) if (min..=max).contains(&value) => return Some(value),
            _ => errors.push(pointer, format!("must be an integer from {min} to {max}")),
        },
        Some(_) => errors.push(pointer, "must be an integer"),
    }
    None
}

fn check_currency(code: &str) -> Result<(), &'static str> {
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_lowercase()))
        .then_some(())
        .ok_or("must be a lower-case ISO 4217 code, such as \"usd\"")
}

fn valid_customer_id(id: &str) -> bool {
    id.strip_prefix("cus_").is_some_and(|rest| {
        (1..=60).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn json(body: OrderBody) -> Value {
        serde_json::to_value(body).expect("serializable")
    }

    fn order() -> Order {
        Order {
            id: "ord_0192f3a4b5c67d8e9fa0b1c2d3e4f506".into(),
            status: Status::Pending,
            customer_id: "cus_42".into(),
            items: vec![Item {
                sku: "tea-1".into(),
                quantity: 2,
                unit_price: 1250,
            }],
            currency: "usd".into(),
            total: 2500,
            created_at: 1_767_225_600_000_000,
            cancelled_at: None,
        }
    }

    #[test]
    fn v1_and_v2_render_money_differently() {
        let v1 = json(ApiVersion::V1.render(&order()));
        assert_eq!(v1["total"], 2500);
        assert_eq!(v1["currency"], "usd");
        assert_eq!(v1["items"][0]["unit_price"], 1250);
        assert_eq!(v1["created_at"], "2026-01-01T00:00:00Z");
        assert_eq!(v1["cancelled_at"], Value::Null);
        let v2 = json(ApiVersion::V2.render(&order()));
        assert_eq!(v2["total"], json!({"amount": 2500, "currency": "usd"}));
        assert_eq!(v2["items"][0]["unit_price"]["amount"], 1250);
        assert!(v2.get("currency").is_none());
    }

    #[test]
    fn both_versions_read_the_same_order() {
        let v1 = json!({"customer_id": "cus_42", "currency": "usd",
            "items": [{"sku": "tea-1", "quantity": 2, "unit_price": 1250}]});
        let v2 = json!({"customer_id": "cus_42",
            "items": [{"sku": "tea-1", "quantity": 2, "unit_price": {"amount": 1250, "currency": "usd"}}]});
        let a = ApiVersion::V1.parse_new_order(&v1).expect("valid v1");
        let b = ApiVersion::V2.parse_new_order(&v2).expect("valid v2");
        assert_eq!(a, b);
        assert_eq!(a.total, 2500);
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn every_mistake_is_reported_with_its_pointer() {
        let body = json!({"customer_id": 7, "currency": "USD",
            "items": [{"sku": "", "quantity": 0, "unit_price": -1}, "x"]});
        let errors = ApiVersion::V1.parse_new_order(&body).expect_err("invalid");
        let pointers: Vec<_> = errors
            .iter()
            .map(|e| e.pointer().as_str().to_owned())
            .collect();
        assert_eq!(
            pointers,
            [
                "/customer_id",
                "/currency",
                "/items/0/sku",
                "/items/0/quantity",
                "/items/0/unit_price",
                "/items/1"
            ]
        );
    }

    #[test]
    fn v2_refuses_mixed_currencies() {
        let body = json!({"customer_id": "cus_42", "items": [
            {"sku": "a", "quantity": 1, "unit_price": {"amount": 1, "currency": "usd"}},
            {"sku": "b", "quantity": 1, "unit_price": {"amount": 1, "currency": "eur"}}]});
        let errors = ApiVersion::V2.parse_new_order(&body).expect_err("mixed");
        assert_eq!(
            errors.iter().next().map(|e| e.pointer().as_str()),
            Some("/items/1/unit_price/currency")
        );
    }
}
