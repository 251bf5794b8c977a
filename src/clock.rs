//! The session's deadlines (SPEC 9). Time only ever comes from the caller: every instant
//! here was passed in with an event.
//!
//! Three clocks run, and the earliest deadline wins:
//! - idle: no input for `command_timeout` (awaiting a command) or `data_timeout` (inside
//!   DATA or BDAT content); every read restarts it;
//! - command deadline: a command line must be complete within `command_deadline` of its
//!   first byte, however slowly it trickles (Postfix `smtpd_per_request_deadline`);
//! - data rate: after a grace period, a transfer must average at least the configured rate
//!   (Postfix `smtpd_min_data_rate`).

use std::time::{Duration, Instant};

use crate::config::{Config, MinDataRate};

/// Why a deadline is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing came for too long.
    Idle,
    /// A command line took too long.
    CommandDeadline,
    /// Message data came too slowly.
    DataRate,
}

/// A DATA or BDAT transfer under way.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    started: Instant,
    bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Clock {
    /// The instant of the latest event (input, a decision, a handshake).
    last_event: Instant,
    /// When the first byte of the command line being read arrived.
    line_started: Option<Instant>,
    transfer: Option<Transfer>,
}

impl Clock {
    pub(crate) fn new(now: Instant) -> Clock {
        Clock {
            last_event: now,
            line_started: None,
            transfer: None,
        }
    }

    /// An event happened at `now`.
    pub(crate) fn event(&mut self, now: Instant) {
        self.last_event = now;
    }

    /// The instant of the latest event.
    pub(crate) fn now(&self) -> Instant {
        self.last_event
    }

    /// The first bytes of a command line arrived with the latest event.
    pub(crate) fn line_started(&mut self) {
        self.line_started.get_or_insert(self.last_event);
    }

    /// The command line ended (or none is being read).
    pub(crate) fn line_ended(&mut self) {
        self.line_started = None;
    }

    /// A DATA or BDAT transfer starts with the latest event.
    pub(crate) fn transfer_started(&mut self) {
        self.transfer = Some(Transfer {
            started: self.last_event,
            bytes: 0,
        });
        self.line_started = None;
    }

    /// Bytes of the transfer arrived.
    pub(crate) fn transferred(&mut self, bytes: usize) {
        if let Some(t) = &mut self.transfer {
            t.bytes = t.bytes.saturating_add(bytes as u64);
        }
    }

    /// The transfer ended.
    pub(crate) fn transfer_ended(&mut self) {
        self.transfer = None;
    }

    /// The deadline while a command is awaited or read.
    pub(crate) fn command_deadline(&self, config: &Config) -> Option<(Instant, Expiry)> {
        let idle = self
            .last_event
            .checked_add(config.command_timeout)
            .map(|at| (at, Expiry::Idle));
        let line = self
            .line_started
            .and_then(|start| start.checked_add(config.command_deadline))
            .map(|at| (at, Expiry::CommandDeadline));
        earliest(idle, line)
    }

    /// The deadline while message data is read.
    pub(crate) fn data_deadline(&self, config: &Config) -> Option<(Instant, Expiry)> {
        let idle = self
            .last_event
            .checked_add(config.data_timeout)
            .map(|at| (at, Expiry::Idle));
        let rate = match (config.min_data_rate, self.transfer) {
            (Some(rate), Some(transfer)) => rate_deadline(rate, transfer),
            _ => None,
        };
        earliest(idle, rate.map(|at| (at, Expiry::DataRate)))
    }
}

/// When a transfer falls under the rate: the grace, plus the time its bytes pay for.
fn rate_deadline(rate: MinDataRate, transfer: Transfer) -> Option<Instant> {
    let per_second = u128::from(rate.bytes_per_second.max(1));
    let nanos = u128::from(transfer.bytes) * 1_000_000_000 / per_second;
    let earned = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    transfer
        .started
        .checked_add(rate.grace)?
        .checked_add(earned)
}

fn earliest(
    a: Option<(Instant, Expiry)>,
    b: Option<(Instant, Expiry)>,
) -> Option<(Instant, Expiry)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn config() -> Config {
        Config {
            command_timeout: 300 * SEC,
            command_deadline: 60 * SEC,
            data_timeout: 180 * SEC,
            min_data_rate: Some(MinDataRate {
                bytes_per_second: 100,
                grace: 10 * SEC,
            }),
            ..Config::default()
        }
    }

    #[test]
    fn reads_restart_the_idle_timer_but_not_the_line_deadline() {
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        assert_eq!(
            clock.command_deadline(&config()),
            Some((t0 + 300 * SEC, Expiry::Idle))
        );
        clock.line_started();
        for s in 1..=50 {
            clock.event(t0 + s * SEC);
            clock.line_started();
        }
        assert_eq!(
            clock.command_deadline(&config()),
            Some((t0 + 60 * SEC, Expiry::CommandDeadline))
        );
        clock.line_ended();
        assert_eq!(
            clock.command_deadline(&config()),
            Some((t0 + 350 * SEC, Expiry::Idle))
        );
    }

    #[test]
    fn the_data_rate_counts_after_the_grace() {
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        clock.transfer_started();
        assert_eq!(
            clock.data_deadline(&config()),
            Some((t0 + 10 * SEC, Expiry::DataRate))
        );
        clock.transferred(1000);
        clock.event(t0 + 5 * SEC);
        assert_eq!(
            clock.data_deadline(&config()),
            Some((t0 + 20 * SEC, Expiry::DataRate))
        );
        clock.transferred(1_000_000);
        assert_eq!(
            clock.data_deadline(&config()),
            Some((t0 + 185 * SEC, Expiry::Idle))
        );
        let without = Config {
            min_data_rate: None,
            ..config()
        };
        assert_eq!(
            clock.data_deadline(&without),
            Some((t0 + 185 * SEC, Expiry::Idle))
        );
    }
}
