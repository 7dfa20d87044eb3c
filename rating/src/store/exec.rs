//! The few statements a call's money needs, behind one small interface, so the hold, connect,
//! extend and settle logic is written once and runs on whichever connection carries it: a
//! transaction of sqlx's `Any` driver (PostgreSQL, or SQLite when group commit is off), or the
//! group-commit writer's own SQLite connection (see `writer`), which runs a whole batch of
//! calls' statements on one thread without a hand-off per statement.

use super::StoreError;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, TypeInfo, ValueRef};

/// A statement parameter. NULLs carry their type: PostgreSQL wants one.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(i64),
    Text(String),
    NullInt,
    NullText,
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}

impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}

impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Val {
        v.map_or(Val::NullInt, Val::Int)
    }
}

impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Val {
        v.map_or(Val::NullText, Val::from)
    }
}

/// One column of a returned row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// A returned row, read by position.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cells(pub Vec<Cell>);

fn decode(what: &str, i: usize) -> StoreError {
    StoreError::Database(sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: format!("expected {what}").into(),
    })
}

impl Cells {
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.0.get(i) {
            Some(Cell::Int(v)) => Ok(*v),
            _ => Err(decode("an integer", i)),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.0.get(i) {
            Some(Cell::Int(v)) => Ok(Some(*v)),
            Some(Cell::Null) => Ok(None),
            _ => Err(decode("an integer or NULL", i)),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.0.get(i) {
            Some(Cell::Text(v)) => Ok(v.clone()),
            _ => Err(decode("text", i)),
        }
    }
}

/// Where a call's money statements run. Every method is one statement.
pub(crate) trait Exec {
    /// The first row the statement returns, if any.
    async fn row(&mut self, sql: &str, args: &[Val]) -> Result<Option<Cells>, StoreError>;
    /// Rows changed.
    async fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError>;
    /// Every row the statement returns.
    async fn rows(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Cells>, StoreError>;
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Val],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Val::Int(v) => q.bind(*v),
            Val::Text(v) => q.bind(v.as_str()),
            Val::NullInt => q.bind(None::<i64>),
            Val::NullText => q.bind(None::<String>),
        };
    }
    q
}

fn cells(r: &AnyRow) -> Result<Cells, sqlx::Error> {
    let mut out = Vec::with_capacity(r.len());
    for i in 0..r.len() {
        let raw = r.try_get_raw(i)?;
        if raw.is_null() {
            out.push(Cell::Null);
            continue;
        }
        let text = matches!(raw.type_info().name(), "TEXT" | "VARCHAR");
        let cell = if text {
            Cell::Text(r.try_get(i)?)
        } else if let Ok(v) = r.try_get::<i64, _>(i) {
            Cell::Int(v)
        } else if let Ok(v) = r.try_get::<i32, _>(i) {
            Cell::Int(v.into())
        } else {
            Cell::Text(r.try_get(i)?)
        };
        out.push(cell);
    }
    Ok(Cells(out))
}

/// sqlx's `Any` driver: a transaction or a bare connection.
pub(crate) struct AnyExec<'c>(pub &'c mut sqlx::AnyConnection);

impl Exec for AnyExec<'_> {
    async fn row(&mut self, sql: &str, args: &[Val]) -> Result<Option<Cells>, StoreError> {
        let r = bind_all(sqlx::query(sql), args)
            .fetch_optional(&mut *self.0)
            .await?;
        Ok(r.as_ref().map(cells).transpose()?)
    }

    async fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        Ok(bind_all(sqlx::query(sql), args)
            .execute(&mut *self.0)
            .await?
            .rows_affected())
    }

    async fn rows(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Cells>, StoreError> {
        let rows = bind_all(sqlx::query(sql), args)
            .fetch_all(&mut *self.0)
            .await?;
        Ok(rows.iter().map(cells).collect::<Result<_, _>>()?)
    }
}

/// The group-commit writer's own SQLite connection: statements run on the calling thread,
/// prepared once and cached.
pub(crate) struct LiteExec(pub rusqlite::Connection);

/// A SQLite error as the store reports it; busy and locked are worth retrying.
pub(crate) fn lite_error(e: rusqlite::Error) -> StoreError {
    let transient = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    StoreError::Native {
        message: e.to_string(),
        transient,
    }
}

impl LiteExec {
    /// Opens the SQLite file the pool already migrated, with the pool's pragmas.
    pub fn open(path: &str) -> Result<LiteExec, StoreError> {
        let conn = rusqlite::Connection::open(path).map_err(lite_error)?;
        conn.execute_batch(super::SQLITE_PRAGMAS)
            .map_err(lite_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(LiteExec(conn))
    }

    fn prepare<'a>(
        &'a self,
        sql: &str,
        args: &[Val],
    ) -> Result<rusqlite::CachedStatement<'a>, StoreError> {
        let mut st = self.0.prepare_cached(sql).map_err(lite_error)?;
        for (i, a) in args.iter().enumerate() {
            let name = format!("${}", i + 1);
            let Some(at) = st.parameter_index(&name).map_err(lite_error)? else {
                return Err(StoreError::Native {
                    message: format!("statement has no parameter {name}"),
                    transient: false,
                });
            };
            let bound = match a {
                Val::Int(v) => st.raw_bind_parameter(at, v),
                Val::Text(v) => st.raw_bind_parameter(at, v),
                Val::NullInt | Val::NullText => st.raw_bind_parameter(at, rusqlite::types::Null),
            };
            bound.map_err(lite_error)?;
        }
        Ok(st)
    }
}

impl Exec for LiteExec {
    async fn row(&mut self, sql: &str, args: &[Val]) -> Result<Option<Cells>, StoreError> {
        let mut st = self.prepare(sql, args)?;
        let mut rows = st.raw_query();
        let Some(r) = rows.next().map_err(lite_error)? else {
            return Ok(None);
        };
        // A RETURNING statement made all its changes on the first step; the rest is dropped.
        Ok(Some(lite_cells(r)?))
    }

    async fn rows(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Cells>, StoreError> {
        let mut st = self.prepare(sql, args)?;
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(lite_error)? {
            out.push(lite_cells(r)?);
        }
        Ok(out)
    }

    async fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let mut st = self.prepare(sql, args)?;
        Ok(st.raw_execute().map_err(lite_error)? as u64)
    }
}

/// One SQLite row as cells.
fn lite_cells(r: &rusqlite::Row<'_>) -> Result<Cells, StoreError> {
    let n = r.as_ref().column_count();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        use rusqlite::types::ValueRef;
        out.push(match r.get_ref(i).map_err(lite_error)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Real(_) | ValueRef::Blob(_) => {
                return Err(StoreError::Native {
                    message: format!("column {i}: unexpected type"),
                    transient: false,
                })
            }
        });
    }
    Ok(Cells(out))
}
