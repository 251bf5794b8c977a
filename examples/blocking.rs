//! A blocking SMTP server with the standard library only: one thread per connection.
//!
//! It accepts every message and prints one line per message and one per connection on
//! stdout. Run `cargo run --example blocking -- [ADDR] [--once]` and talk to it with any SMTP
//! client. `ADDR` defaults to 127.0.0.1:2525, and port 0 picks a free port; `--once` serves
//! one connection and exits (`tests/blocking_example.rs` uses both).

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use smtp_session::{Config, ConnectionInfo, Decision, Hook, Hooks, IoError, Output, Session};

fn main() -> Result<(), Box<dyn Error>> {
    let mut addr = String::from("127.0.0.1:2525");
    let mut once = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--once" => once = true,
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}").into()),
            _ => addr = arg,
        }
    }
    let listener = TcpListener::bind(&addr)?;
    // The bound address, not the requested one: with port 0 this is how the caller learns it.
    eprintln!("listening on {}", listener.local_addr()?);

    // Every hook but AUTH, so each stage makes a real round trip through `carry_out`. AUTH
    // stays out because answering it with Accept would let any password in.
    let config = Arc::new(Config {
        hooks: Hooks {
            auth: false,
            ..Hooks::ALL
        },
        ..Config::default()
    });
    for (n, stream) in listener.incoming().enumerate() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                // Errors such as EMFILE last until a connection ends; don't spin on them.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let config = Arc::clone(&config);
        if once {
            return serve(stream, config, n.to_string());
        }
        thread::spawn(move || {
            if let Err(e) = serve(stream, config, n.to_string()) {
                eprintln!("connection {n}: {e}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream, config: Arc<Config>, id: String) -> Result<(), Box<dyn Error>> {
    let info = ConnectionInfo::tcp(id, stream.peer_addr()?, stream.local_addr()?);
    let mut session = Session::new(config, info, Instant::now());
    // Read but not yet taken: a session paused on a hook takes less than it is offered.
    let mut unread = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        carry_out(&mut session, &mut stream)?;
        if session.is_closed() {
            return Ok(());
        }
        if !unread.is_empty() {
            // `carry_out` decided every hook, so the session is not paused and takes more.
            let taken = session.handle_input(&unread, Instant::now())?;
            unread.drain(..taken);
            continue;
        }
        let wait = session
            .poll_timeout()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        if wait == Some(Duration::ZERO) {
            // A zero read timeout is an error, not "already expired".
            session.handle_timeout(Instant::now())?;
            continue;
        }
        stream.set_read_timeout(wait)?;
        match stream.read(&mut buf) {
            Ok(0) => session.handle_eof(Instant::now())?,
            Ok(n) => unread.extend_from_slice(&buf[..n]),
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => {}
                // WouldBlock on Unix, TimedOut on Windows. If the read woke up early, the
                // session ignores the call and the next loop waits for the rest.
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    session.handle_timeout(Instant::now())?;
                }
                _ => session.handle_io_error(IoError::socket(&e), Instant::now())?,
            },
        }
    }
}

/// Drains the session's actions in order, deciding hooks on the spot.
fn carry_out(session: &mut Session, stream: &mut TcpStream) -> Result<(), Box<dyn Error>> {
    let mut write_failed = false;
    while let Some(output) = session.poll_output() {
        let now = Instant::now();
        match output {
            Output::Write(bytes) if !write_failed => {
                if let Err(e) = stream.write_all(&bytes) {
                    write_failed = true;
                    // Once closed, the disconnect context is already built: nothing to report.
                    if !session.is_closed() {
                        session.handle_io_error(IoError::socket(&e), now)?;
                    }
                }
            }
            Output::Write(_) => {}
            // Fails only when the client is gone already, which is what we want anyway.
            Output::Close => drop(stream.shutdown(Shutdown::Both)),
            Output::HookCall(call) => {
                let owes_decision = call.needs_decision();
                match call.hook {
                    Hook::Message(message) => {
                        let envelope = &message.envelope;
                        let to: Vec<String> = envelope
                            .recipients
                            .iter()
                            .map(|r| format!("<{}>", r.path))
                            .collect();
                        // A real server stores the message durably here, before accepting.
                        println!(
                            "message from=<{}> to={} size={}",
                            envelope.mail_from,
                            to.join(","),
                            message.body.len()
                        );
                        session.decide(call.id, Decision::Accept, now)?;
                    }
                    Hook::Disconnect(context) => {
                        let last = context.arguments.reply.as_ref().map_or_else(
                            || "none".to_string(),
                            |reply| format!("{} {}", reply.code, reply.state),
                        );
                        println!(
                            "disconnect id={} close={:?} last={last}",
                            context.connection.info.id, context.arguments.close
                        );
                    }
                    _ if owes_decision => session.decide(call.id, Decision::Accept, now)?,
                    _ => {}
                }
            }
            Output::StartTls => unreachable!("STARTTLS is not offered by this config"),
            _ => {}
        }
    }
    Ok(())
}
