//! `kumo.make_throttle(NAME, SPEC)` and `throttle:throttle()`: KumoMTA's named throttles, by
//! the generic cell rate algorithm: governor's, local to the process, or with `--redis`, as
//! in KumoMTA once `kumo.configure_redis_throttles` ran, Redis's (shared.rs) for every SPEC
//! that does not start with `local:`. A shared throttle that Redis does not answer in time
//! is counted in the process (`--redis-failure open`) or comes back throttled (`closed`).
//!
//! Throttles live with the process: the Lua state of every thread counts in the same ones.
//! Those with the same NAME and SPEC count together, as KumoMTA's with the same NAME do; one limiter is kept per SPEC, keyed by NAME, and names
//! whose allowance is whole again are forgotten now and then, so a script that makes a
//! throttle per sender does not grow memory without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use tokio::runtime::Handle;

use crate::rate::Rate;
use crate::shared::{FailurePolicy, RateKey, Shared};

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Distinct SPECs a script may use; past this, `kumo.make_throttle` is an error.
const MAX_SPECS: usize = 1024;
/// Forget names whose allowance is whole again after this many checks.
const FORGET_EVERY: u32 = 4096;

#[derive(Default)]
struct Registry {
    limiters: HashMap<Rate, Arc<Limiter>>,
    checks: u32,
}

/// The process's throttles, which the Lua state of every thread makes and checks.
#[derive(Clone, Default)]
pub struct Throttles(Arc<Mutex<Registry>>);

impl Throttles {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere cannot leave a limiter half made: the map is still whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Registry {
    fn limiter(&mut self, rate: Rate) -> mlua::Result<Arc<Limiter>> {
        if let Some(limiter) = self.limiters.get(&rate) {
            return Ok(limiter.clone());
        }
        if self.limiters.len() >= MAX_SPECS {
            return Err(mlua::Error::runtime(format!(
                "kumo.make_throttle: more than {MAX_SPECS} different throttle specs"
            )));
        }
        let limiter = Arc::new(
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

/// `--redis` as the Lua thread reaches it: the store, and the runtime its connection lives
/// on (the Lua thread, the script's own with `--redis`, waits for an answer with
/// [`Handle::block_on`]).
#[derive(Clone, Debug)]
pub struct SharedThrottles {
    /// The store.
    pub store: Arc<Shared>,
    /// mailsink's runtime.
    pub runtime: Handle,
}

/// Adds `make_throttle` to the `kumo` module; throttles are shared through `shared` unless
/// their SPEC says `local:`.
pub fn install(
    lua: &Lua,
    shared: Option<SharedThrottles>,
    registry: Throttles,
) -> mlua::Result<()> {
    let kumo: Table = lua.globals().get("kumo")?;
    kumo.set(
        "make_throttle",
        lua.create_function(move |_, (name, spec): (String, String)| {
            let rate: Rate = spec
                .parse()
                .map_err(|e| mlua::Error::runtime(format!("kumo.make_throttle: {e}")))?;
            let limiter = registry.registry().limiter(rate)?;
            let local = spec.trim_start().starts_with("local:");
            Ok(Throttle {
                name,
                rate,
                limiter,
                registry: registry.clone(),
                shared: shared.clone().filter(|_| !local),
            })
        })?,
    )
}

/// What `kumo.make_throttle` returns.
struct Throttle {
    name: String,
    rate: Rate,
    limiter: Arc<Limiter>,
    registry: Throttles,
    shared: Option<SharedThrottles>,
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
    /// Counts one operation if the rate allows it: in Redis when shared (and counted here
    /// too, for when Redis is away), else here.
    fn check(&self) -> Outcome {
        let here = self.check_here();
        let Some(shared) = &self.shared else {
            return here;
        };
        let rate = self.rate;
        let key = RateKey {
            key: format!(
                "throttle:{}/{}s/{}:{}",
                rate.quantity,
                rate.period.as_secs(),
                rate.burst(),
                self.name
            ),
            rate,
            peek: false,
        };
        let answer = shared
            .runtime
            .block_on(shared.store.check(std::slice::from_ref(&key)));
        match answer.map(|answers| answers.first().copied()) {
            Ok(Some(answer)) => Outcome {
                throttled: !answer.allowed,
                limit: rate.burst(),
                remaining: u32::try_from(answer.remaining).unwrap_or(u32::MAX),
                reset_after: answer.reset_after,
                retry_after: (!answer.allowed).then_some(answer.retry_after),
            },
            _ if shared.store.failure_policy() == FailurePolicy::Open => here,
            _ => Outcome {
                throttled: true,
                limit: rate.burst(),
                remaining: 0,
                reset_after: rate.interval(),
                retry_after: Some(rate.interval()),
            },
        }
    }

    fn check_here(&self) -> Outcome {
        self.registry.registry().checked();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::tests::{shared, TestRedis};

    /// A Lua state of its own process with `kumo.make_throttle`, shared through `redis` when
    /// given.
    fn lua(shared: Option<SharedThrottles>) -> Lua {
        lua_of(shared, Throttles::default())
    }

    /// A Lua state of the process whose throttles are `throttles`.
    fn lua_of(shared: Option<SharedThrottles>, throttles: Throttles) -> Lua {
        let lua = Lua::new();
        lua.globals()
            .set("kumo", lua.create_table().unwrap())
            .unwrap();
        install(&lua, shared, throttles).unwrap();
        lua
    }

    fn throttled(lua: &Lua, spec: &str) -> bool {
        lua.load(format!(
            "return kumo.make_throttle('sender:a@example.org', '{spec}'):throttle().throttled"
        ))
        .eval()
        .unwrap()
    }

    #[test]
    fn the_lua_states_of_one_process_count_in_the_same_throttles() {
        let process = Throttles::default();
        let (one, two) = (lua_of(None, process.clone()), lua_of(None, process));
        assert!(!throttled(&one, "2/hour"));
        assert!(!throttled(&two, "2/hour"));
        assert!(throttled(&one, "2/hour"));
        assert!(throttled(&two, "2/hour"));
        // Another process counts in its own.
        assert!(!throttled(&lua(None), "2/hour"));
    }

    #[test]
    fn with_redis_two_scripts_share_a_throttle_unless_it_is_local() {
        let redis = TestRedis::start();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = |_| SharedThrottles {
            store: Arc::new(shared(&redis.url(), FailurePolicy::Open)),
            runtime: runtime.handle().clone(),
        };
        let (one, two) = (lua(Some(store(1))), lua(Some(store(2))));
        assert!(!throttled(&one, "2/hour"));
        assert!(!throttled(&two, "2/hour"));
        assert!(throttled(&one, "2/hour"));
        assert!(throttled(&two, "2/hour"));
        // local: stays in each process.
        assert!(!throttled(&one, "local:1/hour"));
        assert!(!throttled(&two, "local:1/hour"));
        assert!(throttled(&two, "local:1/hour"));
    }
}
