//! Write plumbing: how one index write transaction reaches the database.
//!
//! `apply.rs` writes through [`Conn`] (same `execute`/`query` calls as a libSQL connection)
//! inside `let conn = self.writer().await; let tx = conn.transaction().await?; ...;
//! tx.commit().await?`. What that costs depends on where the index lives:
//!
//! - Local file: an ordinary SQLite transaction on the single writer connection.
//! - Embedded replica: libSQL would send every statement of an interactive transaction to
//!   the primary as its own request (and sync after each). Instead the transaction is
//!   *planned* on a plain connection to the local replica file — statements run there, so
//!   the reads inside it see its own writes — then rolled back, and the recorded writes go to
//!   the primary as one transactional batch: one request per transaction, whatever its size.
//!   The statements re-run on the primary (upserts and keyed deletes), and one sync
//!   afterwards brings the result back (read-your-writes without a sync per statement).
//!
//! Statements outside a transaction (`conn.execute(..)` on the guard) are one write each.
//! Every committed transaction and every lone write counts in
//! `Counters::write_transactions` (a push costs exactly one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use libsql::params::{IntoParams, Params};
use libsql::Value;

use super::{Index, IndexError, Result};

/// The writer connections (behind the index's one writer lock).
pub(super) struct Writers {
    /// Where writes are executed: the local writer, or the replica connection (whose writes
    /// go to the primary).
    pub ship: libsql::Connection,
    /// A plain connection to the local file on which transactions are planned (replica; or
    /// a local index opened with `plan_writes` in tests). `None`: transactions run directly.
    pub planner: Option<libsql::Connection>,
    /// The plain database the planner belongs to.
    pub planner_db: Option<libsql::Database>,
    /// Whether the local writer is at `synchronous=FULL` (else NORMAL, as
    /// [`super::tune_local_writer`] leaves it).
    pub full_sync: AtomicBool,
}

/// The write statements of a planned transaction (SQL and parameters), in order.
type Recorded = Arc<Mutex<Vec<(String, Params)>>>;

/// A connection as `apply.rs` sees it.
pub(crate) struct Conn {
    inner: libsql::Connection,
    /// Planning: the write statements, to be shipped at commit.
    recorder: Option<Recorded>,
    /// Outside a transaction: each write is a transaction of its own (counted here).
    lone: Option<Index>,
    /// Inside a transaction: its statements, each prepared once. A firehose batch
    /// runs the same dozen statements for hundreds of records, and parsing them each time
    /// was a quarter of the apply cost (libSQL has no statement cache of its own).
    prepared: Option<Mutex<HashMap<String, Arc<libsql::Statement>>>>,
}

impl Conn {
    pub async fn execute(&self, sql: &str, params: impl IntoParams) -> libsql::Result<u64> {
        let params = params.into_params()?;
        if let Some(rec) = &self.recorder {
            rec.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((sql.to_string(), params.clone()));
        }
        let n = match &self.prepared {
            Some(cache) => {
                let stmt = self.statement(cache, sql).await?;
                // A statement is reset before it is bound again (binding a stepped
                // statement would be refused).
                stmt.reset();
                let n = stmt.execute(params).await;
                stmt.reset();
                n? as u64
            }
            None => self.inner.execute(sql, params).await?,
        };
        if let Some(ix) = &self.lone {
            ix.note_committed();
        }
        Ok(n)
    }

    pub async fn query(&self, sql: &str, params: impl IntoParams) -> libsql::Result<libsql::Rows> {
        match &self.prepared {
            // The rows read the statement: it is reset at its next use or at commit.
            Some(cache) => {
                let stmt = self.statement(cache, sql).await?;
                stmt.reset();
                stmt.query(params).await
            }
            None => self.inner.query(sql, params).await,
        }
    }

    /// The transaction's prepared statement for `sql` (prepared at its first use).
    async fn statement(
        &self,
        cache: &Mutex<HashMap<String, Arc<libsql::Statement>>>,
        sql: &str,
    ) -> libsql::Result<Arc<libsql::Statement>> {
        let cached = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = Arc::new(self.inner.prepare(sql).await?);
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Reset every prepared statement (before the transaction ends: none is left mid-read).
    fn reset_prepared(&self) {
        if let Some(cache) = &self.prepared {
            for s in cache.lock().unwrap_or_else(|e| e.into_inner()).values() {
                s.reset();
            }
        }
    }
}

/// The writer lock; derefs to a [`Conn`] for lone writes.
pub(crate) struct WriterGuard<'a> {
    ix: &'a Index,
    writers: tokio::sync::MutexGuard<'a, Writers>,
    lone: Conn,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.lone
    }
}

/// A write transaction; derefs to its [`Conn`]. Dropped without `commit`: rolled back.
pub(crate) struct Txn<'t> {
    guard: &'t WriterGuard<'t>,
    conn: Conn,
    tx: Option<libsql::Transaction>,
}

impl std::ops::Deref for Txn<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl<'a> WriterGuard<'a> {
    pub(super) async fn new(ix: &'a Index) -> WriterGuard<'a> {
        let writers = ix.inner.writer.lock().await;
        let lone = Conn {
            inner: writers.ship.clone(),
            recorder: None,
            lone: Some(ix.clone()),
            prepared: None,
        };
        WriterGuard { ix, writers, lone }
    }

    /// Begin a write transaction (planned for a replica).
    pub async fn transaction(&self) -> Result<Txn<'_>> {
        // WAL with synchronous=NORMAL may lose the last commits to a power cut (never to a
        // process crash, and the file stays consistent): fine for what is replayed (the
        // firehose's cursor is in the same transaction; the backfill re-reads), not for an
        // outbox entry, which is removed once its transaction commits: that one is fsynced.
        if !self.ix.is_replica() {
            let durable = super::drain::current_marker().is_some();
            if self.writers.full_sync.swap(durable, Ordering::SeqCst) != durable {
                let mode = if durable { "FULL" } else { "NORMAL" };
                if let Err(e) = self
                    .writers
                    .ship
                    .execute(&format!("PRAGMA synchronous={mode}"), ())
                    .await
                {
                    self.writers.full_sync.store(!durable, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
        }
        match &self.writers.planner {
            None => {
                let tx = self.writers.ship.transaction().await?;
                let conn = Conn {
                    inner: (*tx).clone(),
                    recorder: None,
                    lone: None,
                    prepared: Some(Mutex::default()),
                };
                Ok(Txn {
                    guard: self,
                    conn,
                    tx: Some(tx),
                })
            }
            Some(planner) => {
                // The plan must see every earlier write of ours: sync first if one has not
                // come back from the primary yet.
                if self.ix.is_replica() && self.ix.inner.unsynced.load(Ordering::SeqCst) {
                    self.ix.sync_locked().await?;
                }
                let tx = planner.transaction().await?;
                let conn = Conn {
                    inner: (*tx).clone(),
                    recorder: Some(Arc::new(Mutex::new(Vec::new()))),
                    lone: None,
                    prepared: Some(Mutex::default()),
                };
                Ok(Txn {
                    guard: self,
                    conn,
                    tx: Some(tx),
                })
            }
        }
    }

    /// Replace the writer connections (after the local file failed a write: a fresh
    /// connection sees its permissions and space anew).
    pub(super) async fn reconnect(&mut self) -> Result<()> {
        let db = &self.ix.inner.db;
        if self.writers.planner.is_some() {
            let (pdb, conn) = super::plain_connection(&self.ix.inner.path).await?;
            self.writers.planner = Some(conn);
            self.writers.planner_db = Some(pdb);
        }
        if !self.ix.is_replica() {
            let c = db.connect()?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            super::tune_local_writer(&c).await;
            self.writers.full_sync.store(false, Ordering::SeqCst);
            self.writers.ship = c;
            self.lone.inner = self.writers.ship.clone();
        }
        Ok(())
    }

    /// The connection writes are shipped on (migrations).
    pub(super) fn ship(&self) -> &libsql::Connection {
        &self.writers.ship
    }
}

impl Txn<'_> {
    /// Commit: locally, or ship the planned statements to the primary in one request.
    pub async fn commit(mut self) -> Result<()> {
        let tx = self.tx.take().expect("a transaction is committed once");
        let ix = self.guard.ix;
        self.conn.reset_prepared();
        if let Some(m) = super::drain::current_marker() {
            super::drain::record_applied(&self.conn, ix, m).await?;
        }
        let Some(recorder) = self.conn.recorder.take() else {
            tx.commit().await?;
            ix.note_committed();
            return Ok(());
        };
        tx.rollback().await?;
        let statements = std::mem::take(&mut *recorder.lock().unwrap_or_else(|e| e.into_inner()));
        if statements.is_empty() {
            return Ok(());
        }
        let batch = render_batch(&statements)?;
        let ship = &self.guard.writers.ship;
        if ix.is_replica() {
            // Until the sync below succeeds the local copy lacks this write (and an
            // unanswered request may or may not have landed): the next plan syncs first.
            ix.inner.unsynced.store(true, Ordering::SeqCst);
            let shipped = tokio::time::timeout(
                super::PRIMARY_TIMEOUT,
                ship.execute_transactional_batch(&batch),
            )
            .await
            .map_err(|_| {
                IndexError::Db(libsql::Error::WriteDelegation(
                    "request to the primary timed out".into(),
                ))
            })?;
            shipped?;
            ix.note_committed();
            if let Err(e) = ix.sync_locked().await {
                tracing::debug!(error = %e, "sync after an index write failed; the next write syncs first");
            }
        } else {
            // (Tests: the text a primary would receive, re-printed by libSQL's parser.)
            #[cfg(test)]
            let batch = as_sent_to_a_primary(&batch);
            ship.execute_transactional_batch(&batch).await?;
            ix.note_committed();
        }
        Ok(())
    }
}

impl Index {
    /// The writer lock: lone writes via `execute`, transactions via `transaction()`.
    pub(crate) async fn writer(&self) -> WriterGuard<'_> {
        WriterGuard::new(self).await
    }

    pub(super) fn note_committed(&self) {
        super::status::Counters::bump(&self.inner.health.counters.write_transactions);
    }
}

/// What a replica connection sends for a batch: libSQL parses it and sends each statement
/// re-printed from its syntax tree (not the original text). Tests run planned writes through
/// this so the statements that reach a primary are the ones checked.
#[cfg(test)]
pub(super) fn as_sent_to_a_primary(batch: &str) -> String {
    use fallible_iterator::FallibleIterator;
    let mut parser = sqlite3_parser::lexer::sql::Parser::new(batch.as_bytes());
    let mut out = String::new();
    while let Some(cmd) = parser.next().expect("libSQL's parser accepts the batch") {
        let stmt = cmd.to_string();
        out.push_str(stmt.trim_end_matches(';'));
        out.push_str(";\n");
    }
    out
}

/// The statements of a planned transaction as one SQL text, parameters inlined as literals
/// (libSQL's transactional batch takes no parameters).
pub(super) fn render_batch(statements: &[(String, Params)]) -> Result<String> {
    let mut out = String::new();
    for (sql, params) in statements {
        let values: &[Value] = match params {
            Params::None => &[],
            Params::Positional(v) => v,
            Params::Named(_) => {
                return Err(IndexError::InvalidRecord(
                    "named parameters cannot be shipped to the primary".into(),
                ))
            }
        };
        let stmt = inline_params(sql, values)?;
        let stmt = stmt.trim().trim_end_matches(';');
        out.push_str(stmt);
        out.push_str(";\n");
    }
    Ok(out)
}

/// Replace `?NNN` and `?` placeholders (outside quotes and comments) with SQL literals.
fn inline_params(sql: &str, values: &[Value]) -> Result<String> {
    let bad = |m: String| IndexError::InvalidRecord(format!("cannot inline parameters: {m}"));
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 64);
    let mut i = 0;
    let mut next_bare = 1usize;
    let copy_until = |out: &mut String, start: usize, end: usize| {
        out.push_str(&sql[start..end]);
    };
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err(bad("unterminated quote".into())),
                        Some(&c) if c == q => {
                            // A doubled quote is an escaped one.
                            if b.get(i + 1) == Some(&q) {
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                copy_until(&mut out, start, i);
            }
            b'[' => {
                let start = i;
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(b.len());
                copy_until(&mut out, start, i);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let start = i;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                copy_until(&mut out, start, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                copy_until(&mut out, start, i);
            }
            b'?' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                let n = if i > start {
                    let n: usize = sql[start..i]
                        .parse()
                        .map_err(|_| bad(format!("placeholder ?{}", &sql[start..i])))?;
                    next_bare = next_bare.max(n + 1);
                    n
                } else {
                    let n = next_bare;
                    next_bare += 1;
                    n
                };
                let v = n
                    .checked_sub(1)
                    .and_then(|k| values.get(k))
                    .ok_or_else(|| bad(format!("no value for ?{n}")))?;
                literal(&mut out, v);
            }
            b':' | b'@' | b'$'
                if b.get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                return Err(bad("named placeholder".into()));
            }
            _ => {
                // Copy one UTF-8 character.
                let ch = sql[i..].chars().next().expect("in bounds");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

fn literal(out: &mut String, v: &Value) {
    use std::fmt::Write;
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Integer(i64::MIN) => out.push_str("(-9223372036854775807-1)"),
        Value::Integer(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Real(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Real(_) => out.push_str("NULL"),
        Value::Text(s) if s.contains('\0') => {
            // A NUL would end the statement text: spell the bytes.
            let _ = write!(out, "CAST(X'{}' AS TEXT)", hex::encode(s.as_bytes()));
        }
        Value::Text(s) => {
            out.push('\'');
            out.push_str(&s.replace('\'', "''"));
            out.push('\'');
        }
        Value::Blob(b) => {
            let _ = write!(out, "X'{}'", hex::encode(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_literals_outside_quotes_only() {
        let sql = "INSERT INTO t (a, b, c) VALUES (?1, ?2, '?3 stays') -- ?4 stays\n ON CONFLICT DO UPDATE SET c = ?3 /* ?9 */";
        let v = vec![Value::Text("it's".into()), Value::Integer(-5), Value::Null];
        assert_eq!(
            inline_params(sql, &v).unwrap(),
            "INSERT INTO t (a, b, c) VALUES ('it''s', -5, '?3 stays') -- ?4 stays\n ON CONFLICT DO UPDATE SET c = NULL /* ?9 */"
        );
        assert_eq!(
            inline_params("SELECT ?, ?, ?2", &[Value::Integer(1), Value::Real(0.5)]).unwrap(),
            "SELECT 1, 0.5, 0.5"
        );
        assert_eq!(
            inline_params("SELECT ?1", &[Value::Text("a\0b".into())]).unwrap(),
            "SELECT CAST(X'610062' AS TEXT)"
        );
        assert_eq!(
            inline_params("SELECT ?1", &[Value::Blob(vec![0xde, 0xad])]).unwrap(),
            "SELECT X'dead'"
        );
        assert!(inline_params("SELECT ?2", &[Value::Integer(1)]).is_err());
        assert!(inline_params("SELECT :name", &[]).is_err());
        assert!(inline_params("SELECT 'open", &[]).is_err());
    }

    /// Inlined literals store exactly what bound parameters store (type and bytes).
    #[tokio::test]
    async fn inlined_literals_store_what_parameters_store() {
        let db = libsql::Builder::new_local(":memory:")
            .build()
            .await
            .unwrap();
        let c = db.connect().unwrap();
        c.execute_batch("CREATE TABLE inlined (v); CREATE TABLE bound (v);")
            .await
            .unwrap();
        let values = vec![
            Value::Text("quote ' and \" and ?1 and -- and /* é ☃".into()),
            Value::Text("nul\0inside".into()),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Real(-1.25e-300),
            Value::Real(3.0),
            Value::Blob(vec![0, 1, 2, 255]),
            Value::Null,
        ];
        let statements: Vec<(String, Params)> = values
            .iter()
            .map(|v| {
                (
                    "INSERT INTO inlined (v) VALUES (?1)".to_string(),
                    Params::Positional(vec![v.clone()]),
                )
            })
            .collect();
        c.execute_transactional_batch(&as_sent_to_a_primary(&render_batch(&statements).unwrap()))
            .await
            .unwrap();
        for v in &values {
            c.execute("INSERT INTO bound (v) VALUES (?1)", [v.clone()])
                .await
                .unwrap();
        }
        let dump = |table: &'static str| {
            let c = c.clone();
            async move {
                let mut rows = c
                    .query(
                        &format!("SELECT typeof(v), hex(v) FROM {table} ORDER BY rowid"),
                        (),
                    )
                    .await
                    .unwrap();
                let mut out = Vec::new();
                while let Some(r) = rows.next().await.unwrap() {
                    out.push((r.get::<String>(0).unwrap(), r.get::<String>(1).unwrap()));
                }
                out
            }
        };
        let (a, b) = (dump("inlined").await, dump("bound").await);
        assert_eq!(a.len(), values.len());
        assert_eq!(a, b);
    }
}
