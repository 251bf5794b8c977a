//! A blocking SMTP server on std alone, a thread per connection, accepting every message:
//! `cargo run --example blocking -- [ADDR, default 127.0.0.1:2525] [--once: one connection]`.

use std::io::{ErrorKind::*, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::{error::Error, sync::Arc, time::Duration, time::Instant};

use smtp_session::{Config, ConnectionInfo, Decision, Hook, Hooks, IoError, Output, Session};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.iter().find(|a| !a.starts_with("--"));
    let listener = TcpListener::bind(addr.map_or("127.0.0.1:2525", |a| a))?;
    eprintln!("listening on {}", listener.local_addr()?);
    // Every hook but AUTH (accepting it would let any password in), each a round trip.
    let config =
        Arc::new(Config { hooks: Hooks { auth: false, ..Hooks::ALL }, ..Config::default() });
    for (n, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(100)); // EMFILE lasts: do not spin
            continue;
        };
        let config = Arc::clone(&config);
        let thread = std::thread::spawn(move || {
            serve(stream, config, n).unwrap_or_else(|e| eprintln!("{e}"))
        });
        if args.iter().any(|a| a == "--once") {
            return thread.join().map_err(|_| "the connection's thread panicked".into());
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream, config: Arc<Config>, n: usize) -> Result<(), Box<dyn Error>> {
    let info = ConnectionInfo::tcp(n.to_string(), stream.peer_addr()?, stream.local_addr()?);
    let mut session = Session::new(config, info, Instant::now());
    let (mut unread, mut buf) = (Vec::new(), [0; 16 * 1024]); // unread: read, not yet taken
                                                              // Carry out what the session asks, then feed it: the input it did not take yet, a
                                                              // deadline that passed (a timeout, or held input to go on with), or what the socket reads.
    while {
        drain(&mut session, &mut stream);
        !session.is_closed()
    } {
        let now = Instant::now();
        let taken = if unread.is_empty() { 0 } else { session.handle_input(&unread, now)? };
        if unread.drain(..taken).len() > 0 {
            continue;
        }
        let wait = session.poll_timeout().map(|deadline| deadline.saturating_duration_since(now));
        if wait == Some(Duration::ZERO) {
            session.handle_timeout(now)?;
            continue;
        }
        stream.set_read_timeout(wait)?;
        let read = stream.read(&mut buf);
        let now = Instant::now();
        match read {
            Ok(0) => session.handle_eof(now)?,
            Ok(len) => unread.extend_from_slice(&buf[..len]),
            // Interrupted or timed out: the session acts only if its deadline passed.
            Err(e) if matches!(e.kind(), Interrupted | WouldBlock | TimedOut) => {
                session.handle_timeout(now)?
            }
            Err(e) => session.handle_io_error(IoError::socket(&e), now)?,
        }
    }
    Ok(())
}

/// Carries out every action in order, deciding each hook on the spot, without returning early.
fn drain(session: &mut Session, stream: &mut TcpStream) {
    while let Some(output) = session.poll_output() {
        let now = Instant::now();
        let call = match output {
            Output::HookCall(call) => call,
            Output::Write(bytes) => {
                if let Err(e) = stream.write_all(&bytes) {
                    let _ = session.handle_io_error(IoError::socket(&e), now); // Err once closed
                }
                continue;
            }
            Output::Close => {
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            _ => continue,
        };
        // A real server stores the message durably before accepting it.
        if let Hook::Message(m) = &call.hook {
            println!("message from=<{}> size={}", m.envelope.mail_from, m.body.len());
        } else if let Hook::Disconnect(c) = &call.hook {
            println!("disconnect close={:?} last={:?}", c.arguments.close, c.arguments.reply);
        }
        // Refused only once the connection broke: the close and the disconnect hook follow.
        if call.needs_decision() {
            session.decide(call.id, Decision::Accept, now).unwrap_or_else(|e| eprintln!("{e}"));
        }
    }
}
