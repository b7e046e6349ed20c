//! The keyset ("seek") SQL for a page: WHERE predicate, ORDER BY and placeholders.

use std::fmt::Write as _;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::page::PageRequest;
use crate::position::Direction;

/// The sort order of one keyset column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

impl SortOrder {
    fn reversed(self) -> Self {
        match self {
            SortOrder::Asc => SortOrder::Desc,
            SortOrder::Desc => SortOrder::Asc,
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        }
    }

    /// The comparison that selects the rows after a boundary in this order.
    fn beyond(self, inclusive: bool) -> &'static str {
        match (self, inclusive) {
            (SortOrder::Asc, false) => ">",
            (SortOrder::Asc, true) => ">=",
            (SortOrder::Desc, false) => "<",
            (SortOrder::Desc, true) => "<=",
        }
    }
}

/// The listing's sort: some columns, then a unique tie-breaker, each ascending or descending.
///
/// Generates SQL that lets the database seek an index instead of counting rows:
///
/// - when every column sorts the same way, the row-value form `(a, b) > (?1, ?2)`, which
///   PostgreSQL turns into one index condition and SQLite (3.15+) into an index range;
/// - when directions are mixed, the expanded form
///   `a <= ?1 AND (a < ?1 OR (a = ?1 AND b > ?2))`. The redundant leading bound is what makes
///   it fast: without it PostgreSQL filters every skipped row (measured: 46 ms against 0.12 ms
///   at row 500,000).
///
/// **Every column must be `NOT NULL`**: comparisons with NULL are never true, so rows with a
/// NULL sort key would silently fall out of every page. Avoid floating-point sort keys (NaN
/// compares with nothing, and values round-trip through the cursor inexactly). Column names
/// that are SQL keywords (`order`) would give invalid SQL: only plain identifiers are
/// accepted, so rename such columns or select them through a view. The tie-breaker must be unique (a
/// primary key): without it, rows that tie on every column can be skipped or repeated at a
/// page boundary. For speed, index the columns in the same order (and the same mixed
/// directions).
///
/// ```
/// use tower_cursor::{Direction, Keyset, Placeholders, SortOrder};
///
/// let keyset = Keyset::builder()
///     .column("created_at", SortOrder::Desc)
///     .unique_column("id", SortOrder::Desc)?;
///
/// let next = keyset.sql(Some(Direction::After), Placeholders::postgres());
/// assert_eq!(next.predicate(), Some("(created_at, id) < ($1, $2)"));
/// assert_eq!(next.order_by(), "created_at DESC, id DESC");
///
/// // A backward page flips the comparison and the order; the rows come back reversed.
/// let prev = keyset.sql(Some(Direction::Before), Placeholders::sqlite());
/// assert_eq!(prev.predicate(), Some("(created_at, id) > (?1, ?2)"));
/// assert_eq!(prev.order_by(), "created_at ASC, id ASC");
/// # Ok::<(), tower_cursor::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyset {
    columns: Vec<(String, SortOrder)>,
}

/// Builds a [`Keyset`]; finished by the unique tie-breaker column.
#[derive(Clone, Debug, Default)]
pub struct KeysetBuilder {
    columns: Vec<(String, SortOrder)>,
}

impl Keyset {
    /// Starts a keyset.
    pub fn builder() -> KeysetBuilder {
        KeysetBuilder::default()
    }

    /// The columns and their orders, tie-breaker last.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = (&str, SortOrder)> {
        self.columns
            .iter()
            .map(|(column, order)| (column.as_str(), *order))
    }

    /// The SQL for the page request's position (or the first page).
    pub fn sql_for<P>(&self, page: &PageRequest<P>, placeholders: Placeholders) -> KeysetSql {
        self.sql(
            page.position().map(crate::Position::direction),
            placeholders,
        )
    }

    /// The SQL to read from a boundary in `direction`, or from the start when `None`.
    ///
    /// The predicate's placeholders bind the boundary's key values in column order.
    pub fn sql(&self, direction: Option<Direction>, placeholders: Placeholders) -> KeysetSql {
        let backward = direction == Some(Direction::Before);
        let orders: Vec<SortOrder> = self
            .columns
            .iter()
            .map(|(_, order)| if backward { order.reversed() } else { *order })
            .collect();
        let mut order_by = String::new();
        for ((column, _), order) in self.columns.iter().zip(&orders) {
            if !order_by.is_empty() {
                order_by.push_str(", ");
            }
            let _ = write!(order_by, "{column} {}", order.keyword());
        }
        let predicate = direction.map(|_| self.predicate(&orders, placeholders));
        KeysetSql {
            predicate,
            order_by,
            binds: if direction.is_some() {
                self.columns.len()
            } else {
                0
            },
        }
    }

    fn predicate(&self, orders: &[SortOrder], placeholders: Placeholders) -> String {
        let param = |index: usize| placeholders.render(index);
        let mut sql = String::new();
        if orders.iter().all(|order| *order == orders[0]) {
            if self.columns.len() == 1 {
                let _ = write!(
                    sql,
                    "{} {} {}",
                    self.columns[0].0,
                    orders[0].beyond(false),
                    param(0)
                );
            } else {
                let columns: Vec<&str> = self.columns.iter().map(|(c, _)| c.as_str()).collect();
                let params: Vec<String> = (0..self.columns.len()).map(param).collect();
                let _ = write!(
                    sql,
                    "({}) {} ({})",
                    columns.join(", "),
                    orders[0].beyond(false),
                    params.join(", ")
                );
            }
            return sql;
        }
        // Mixed directions: a bound the index can seek on, then the exact condition.
        let _ = write!(
            sql,
            "{} {} {} AND (",
            self.columns[0].0,
            orders[0].beyond(true),
            param(0)
        );
        for (depth, order) in orders.iter().enumerate() {
            if depth > 0 {
                sql.push_str(" OR ");
            }
            sql.push('(');
            for (index, (column, _)) in self.columns.iter().enumerate().take(depth) {
                let _ = write!(sql, "{column} = {} AND ", param(index));
            }
            let _ = write!(
                sql,
                "{} {} {})",
                self.columns[depth].0,
                order.beyond(false),
                param(depth)
            );
        }
        sql.push(')');
        sql
    }
}

impl KeysetBuilder {
    /// Adds a sort column (a plain, optionally table-qualified, SQL identifier).
    #[must_use]
    pub fn column(mut self, column: impl Into<String>, order: SortOrder) -> Self {
        self.columns.push((column.into(), order));
        self
    }

    /// Adds the last column, which must be unique (a primary key), and finishes the keyset.
    ///
    /// # Errors
    ///
    /// Fails when a column is not a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`, optionally
    /// dotted), which also keeps request data from ever reaching the SQL text, or when a
    /// column appears twice. Reserved words are not detected; avoid them as column names.
    pub fn unique_column(
        mut self,
        column: impl Into<String>,
        order: SortOrder,
    ) -> Result<Keyset, ConfigError> {
        self.columns.push((column.into(), order));
        for (index, (column, _)) in self.columns.iter().enumerate() {
            if !is_identifier(column) {
                return Err(ConfigError::new(ConfigErrorKind::Column(column.clone())));
            }
            if self.columns[..index].iter().any(|(c, _)| c == column) {
                return Err(ConfigError::new(ConfigErrorKind::DuplicateColumn(
                    column.clone(),
                )));
            }
        }
        Ok(Keyset {
            columns: self.columns,
        })
    }
}

fn is_identifier(column: &str) -> bool {
    column.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// How placeholders are written. Both styles are numbered, so a value used twice in the
/// mixed-direction predicate is bound once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placeholders {
    prefix: char,
    first: usize,
}

impl Placeholders {
    /// PostgreSQL: `$1`, `$2`, …
    pub const fn postgres() -> Self {
        Placeholders {
            prefix: '$',
            first: 1,
        }
    }

    /// SQLite: `?1`, `?2`, …
    pub const fn sqlite() -> Self {
        Placeholders {
            prefix: '?',
            first: 1,
        }
    }

    /// Numbers the keyset's placeholders from `first`, after the query's own parameters
    /// (for example `starting_at(2)` when `$1` is the tenant).
    ///
    /// # Errors
    ///
    /// Fails when `first` is 0: both databases number parameters from 1.
    pub fn starting_at(mut self, first: usize) -> Result<Self, ConfigError> {
        if first == 0 {
            return Err(ConfigError::new(ConfigErrorKind::Placeholder));
        }
        self.first = first;
        Ok(self)
    }

    fn render(self, index: usize) -> String {
        format!("{}{}", self.prefix, self.first + index)
    }
}

/// The SQL fragments for one page. Compose them into the query:
/// `... WHERE <filters> AND <predicate> ORDER BY <order_by> LIMIT <fetch_limit>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysetSql {
    predicate: Option<String>,
    order_by: String,
    binds: usize,
}

impl KeysetSql {
    /// The seek condition; `None` on the first page.
    pub fn predicate(&self) -> Option<&str> {
        self.predicate.as_deref()
    }

    /// The ORDER BY list (without the keywords).
    pub fn order_by(&self) -> &str {
        &self.order_by
    }

    /// How many values the predicate binds: the boundary's key values, in column order, at
    /// consecutive placeholders. Zero on the first page.
    pub fn binds(&self) -> usize {
        self.binds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyset(orders: &[(&str, SortOrder)]) -> Keyset {
        let (last, rest) = orders.split_last().unwrap();
        rest.iter()
            .fold(Keyset::builder(), |b, (c, o)| b.column(*c, *o))
            .unique_column(last.0, last.1)
            .unwrap()
    }

    #[test]
    fn first_page_has_no_predicate() {
        let sql = keyset(&[("id", SortOrder::Asc)]).sql(None, Placeholders::sqlite());
        assert_eq!(sql.predicate(), None);
        assert_eq!(sql.order_by(), "id ASC");
        assert_eq!(sql.binds(), 0);
    }

    #[test]
    fn single_column_uses_a_plain_comparison() {
        let k = keyset(&[("id", SortOrder::Desc)]);
        let sql = k.sql(
            Some(Direction::After),
            Placeholders::postgres().starting_at(3).unwrap(),
        );
        assert_eq!(sql.predicate(), Some("id < $3"));
        assert_eq!(sql.binds(), 1);
        let sql = k.sql(Some(Direction::Before), Placeholders::postgres());
        assert_eq!(sql.predicate(), Some("id > $1"));
        assert_eq!(sql.order_by(), "id ASC");
    }

    #[test]
    fn mixed_directions_use_the_bounded_expanded_form() {
        let k = keyset(&[
            ("created_at", SortOrder::Desc),
            ("score", SortOrder::Asc),
            ("id", SortOrder::Asc),
        ]);
        let sql = k.sql(Some(Direction::After), Placeholders::postgres());
        assert_eq!(
            sql.predicate(),
            Some(
                "created_at <= $1 AND ((created_at < $1) OR (created_at = $1 AND score > $2) \
                 OR (created_at = $1 AND score = $2 AND id > $3))"
            )
        );
        assert_eq!(sql.order_by(), "created_at DESC, score ASC, id ASC");
        let sql = k.sql(Some(Direction::Before), Placeholders::sqlite());
        assert_eq!(
            sql.predicate(),
            Some(
                "created_at >= ?1 AND ((created_at > ?1) OR (created_at = ?1 AND score < ?2) \
                 OR (created_at = ?1 AND score = ?2 AND id < ?3))"
            )
        );
        assert_eq!(sql.order_by(), "created_at ASC, score DESC, id DESC");
    }

    #[test]
    fn placeholders_start_at_one() {
        assert!(Placeholders::sqlite().starting_at(0).is_err());
    }

    #[test]
    fn columns_must_be_identifiers_and_distinct() {
        assert!(
            Keyset::builder()
                .unique_column("orders.id", SortOrder::Asc)
                .is_ok()
        );
        for bad in ["", "id; DROP TABLE x", "1id", "a..b", "a b", "\"id\""] {
            assert!(
                Keyset::builder()
                    .unique_column(bad, SortOrder::Asc)
                    .is_err(),
                "{bad}"
            );
        }
        let duplicate = Keyset::builder()
            .column("id", SortOrder::Asc)
            .unique_column("id", SortOrder::Desc);
        assert!(duplicate.is_err());
    }
}
