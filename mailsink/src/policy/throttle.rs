//! `kumo.make_throttle(NAME, SPEC)` and `throttle:throttle()`: KumoMTA's named throttles, by
//! the generic cell rate algorithm (governor's), local to the process.
//!
//! Throttles live on the Lua thread. Those with the same NAME and SPEC count together, as
//! KumoMTA's with the same NAME do; one limiter is kept per SPEC, keyed by NAME, and names
//! whose allowance is whole again are forgotten now and then, so a script that makes a
//! throttle per sender does not grow memory without bound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use mlua::{Lua, Table, UserData, UserDataMethods, Value};

use crate::limits::Rate;

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Distinct SPECs a script may use; past this, `kumo.make_throttle` is an error.
const MAX_SPECS: usize = 1024;
/// Forget names whose allowance is whole again after this many checks.
const FORGET_EVERY: u32 = 4096;

#[derive(Default)]
struct Registry {
    limiters: HashMap<Rate, Rc<Limiter>>,
    checks: u32,
}

impl Registry {
    fn limiter(&mut self, rate: Rate) -> mlua::Result<Rc<Limiter>> {
        if let Some(limiter) = self.limiters.get(&rate) {
            return Ok(limiter.clone());
        }
        if self.limiters.len() >= MAX_SPECS {
            return Err(mlua::Error::runtime(format!(
                "kumo.make_throttle: more than {MAX_SPECS} different throttle specs"
            )));
        }
        let limiter = Rc::new(
            RateLimiter::keyed(rate.quota()).with_middleware::<StateInformationMiddleware>(),
        );
        self.limiters.insert(rate, limiter.clone());
        Ok(limiter)
    }

    fn checked(&mut self) {
        self.checks = self.checks.wrapping_add(1);
        if self.checks.is_multiple_of(FORGET_EVERY) {
            for limiter in self.limiters.values() {
                limiter.retain_recent();
            }
        }
    }
}

/// Adds `make_throttle` to the `kumo` module.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let registry = Rc::new(RefCell::new(Registry::default()));
    let kumo: Table = lua.globals().get("kumo")?;
    kumo.set(
        "make_throttle",
        lua.create_function(move |_, (name, spec): (String, String)| {
            let rate: Rate = spec
                .parse()
                .map_err(|e| mlua::Error::runtime(format!("kumo.make_throttle: {e}")))?;
            let limiter = registry.borrow_mut().limiter(rate)?;
            Ok(Throttle {
                name,
                rate,
                limiter,
                registry: registry.clone(),
            })
        })?,
    )
}

/// What `kumo.make_throttle` returns.
struct Throttle {
    name: String,
    rate: Rate,
    limiter: Rc<Limiter>,
    registry: Rc<RefCell<Registry>>,
}

/// KumoMTA's `ThrottleResult`.
struct Outcome {
    throttled: bool,
    limit: u32,
    remaining: u32,
    reset_after: Duration,
    retry_after: Option<Duration>,
}

impl Throttle {
    /// Counts one operation if the rate allows it.
    fn check(&self) -> Outcome {
        self.registry.borrow_mut().checked();
        let burst = self.rate.burst();
        let interval = self.rate.interval();
        match self.limiter.check_key(&self.name) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Outcome {
                    throttled: false,
                    limit: burst,
                    remaining,
                    // Whole intervals: the bucket is full again at most this long from now.
                    reset_after: interval.saturating_mul(burst.saturating_sub(remaining)),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let retry = not_until.wait_time_from(self.limiter.clock().now());
                Outcome {
                    throttled: true,
                    limit: burst,
                    remaining: 0,
                    reset_after: retry + interval.saturating_mul(burst.saturating_sub(1)),
                    retry_after: Some(retry),
                }
            }
        }
    }
}

/// A duration as KumoMTA's serde shape, `{secs = N, nanos = N}`.
fn duration(lua: &Lua, d: Duration) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.set("secs", d.as_secs())?;
    table.set("nanos", d.subsec_nanos())?;
    Ok(table)
}

impl UserData for Throttle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("throttle", |lua, this, ()| {
            let outcome = this.check();
            let table = lua.create_table()?;
            table.set("throttled", outcome.throttled)?;
            table.set("limit", outcome.limit)?;
            table.set("remaining", outcome.remaining)?;
            table.set("reset_after", duration(lua, outcome.reset_after)?)?;
            let retry_after = match outcome.retry_after {
                Some(d) => Value::Table(duration(lua, d)?),
                None => Value::Nil,
            };
            table.set("retry_after", retry_after)?;
            Ok(table)
        });
        methods.add_method("sleep_if_throttled", |_, _, ()| -> mlua::Result<bool> {
            Err(mlua::Error::runtime(
                "throttle:sleep_if_throttled() is not supported by mailsink: sleeping would \
                 stall every connection's policy; use throttle:throttle() and kumo.reject",
            ))
        });
    }
}
