//! A final-delivery receiver that does what RFC 5321 section 4.4 asks of one: it prepends
//! `Return-Path:` and `Received:` to each message it stores, here in memory, and prints the
//! stored message.
//!
//! Prepending is safe as it stands: a message whose content begins with a space or a tab
//! would fold into the `Received:` field above it, so the engine refuses it by default
//! (`550 5.6.0`). Run with `insert-empty-line` to store such a message after an empty line
//! instead, as Postfix does:
//!
//! `cargo run -p smtp-session-tokio --example trace_fields -- [ADDR] [insert-empty-line]`
//! (ADDR defaults to 127.0.0.1:2525).

use std::sync::{Arc, Mutex};

use smtp_session_tokio::smtp_session::{trace, LeadingWhitespace};
use smtp_session_tokio::{Config, Connection, Decision, Handler, HookResult, Message, Server};

/// Stores each message with its trace fields prepended.
#[derive(Clone, Default)]
pub struct TraceFields {
    /// The stored messages, shared by every connection's handler.
    pub stored: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Handler for TraceFields {
    async fn message(&mut self, conn: &mut Connection<'_>, message: Message) -> HookResult {
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)?;
        let id = format!("{:08X}", self.stored.lock().unwrap().len());
        let mut stored = trace::return_path(&message.envelope.mail_from).into_bytes();
        stored.extend_from_slice(
            conn.received(&message.envelope, &id, &date)
                .to_string()
                .as_bytes(),
        );
        stored.extend_from_slice(&message.body);
        if message.leading_whitespace {
            eprintln!("{id}: the content began with a space or tab; stored after an empty line");
        }
        print!("{}", String::from_utf8_lossy(&stored));
        // A real receiver writes the message durably here, before accepting it.
        self.stored.lock().unwrap().push(stored);
        Ok(Decision::Accept)
    }
}

/// The receiver's session config: refuse content beginning with a space or a tab (the
/// default), or store it after an empty line.
pub fn config(insert_empty_line: bool) -> Config {
    Config {
        hostname: "mx.example".into(),
        leading_whitespace: if insert_empty_line {
            LeadingWhitespace::InsertEmptyLine
        } else {
            LeadingWhitespace::Reject
        },
        ..Config::default()
    }
}

#[allow(dead_code)] // the tests use this file's handler, not its `main`
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:2525".into());
    let insert = args.next().as_deref() == Some("insert-empty-line");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    Server::new(TraceFields::default())
        .config(config(insert))
        .listener(listener)
        .serve()
        .await;
    Ok(())
}
