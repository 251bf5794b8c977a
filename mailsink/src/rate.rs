//! Rates in KumoMTA's throttle form and durations in seconds, as the command line and the
//! policy give them: what the limits, the shared store, the rates and the throttles read.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::Quota;

/// A number of seconds, fractions allowed.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a number of seconds"))
}

/// A rate in KumoMTA's throttle form, `[local:]QUANTITY/PERIOD[,max_burst=BURST]`: at most
/// QUANTITY per PERIOD, in bursts of at most BURST (default QUANTITY), by the generic cell
/// rate algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Operations per period.
    pub quantity: u32,
    /// The period.
    pub period: Duration,
    /// The largest burst, when smaller (or larger) than the quantity.
    pub max_burst: Option<u32>,
}

impl Rate {
    /// Operations allowed at once from a full bucket.
    pub fn burst(&self) -> u32 {
        self.max_burst.unwrap_or(self.quantity)
    }

    /// The time one operation's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.period / self.quantity
    }

    /// The rate as a governor quota.
    pub fn quota(&self) -> Quota {
        let burst = NonZeroU32::new(self.burst()).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(self.interval())
            .expect("a parsed rate has a non-zero interval")
            .allow_burst(burst)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(spec: &str) -> Result<Rate, String> {
        let bad = |why: &str| format!("invalid rate '{spec}': {why}");
        let body = spec.trim();
        let body = body.strip_prefix("local:").unwrap_or(body);
        let (quantity, rest) = body
            .split_once('/')
            .ok_or_else(|| bad("expected QUANTITY/PERIOD"))?;
        let (period, max_burst) = match rest.split_once(",max_burst=") {
            Some((period, burst)) => (period, Some(burst)),
            None => (rest, None),
        };
        let number = |text: &str, what: &str| -> Result<u32, String> {
            let digits: String = text.chars().filter(|c| !matches!(c, ',' | '_')).collect();
            match digits.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(&format!("{what} must be a whole number above 0"))),
            }
        };
        let quantity = number(quantity, "the quantity")?;
        let max_burst = max_burst.map(|b| number(b, "max_burst")).transpose()?;
        let period = parse_period(period.trim()).ok_or_else(|| {
            bad("the period is [N]day, [N]hour, [N]minute or [N]second (d, h, hr, m, min, s, sec)")
        })?;
        let rate = Rate {
            quantity,
            period,
            max_burst,
        };
        if rate.interval().is_zero() {
            return Err(bad("more than one operation per nanosecond"));
        }
        Ok(rate)
    }
}

/// `[N]unit`: `30min`, `hour`, `2d`.
fn parse_period(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (count, unit) = text.split_at(split);
    let count: u64 = if count.is_empty() {
        1
    } else {
        count.parse().ok().filter(|&n| n > 0)?
    };
    let seconds = match unit {
        "d" | "day" | "days" => 86_400,
        "h" | "hr" | "hour" | "hours" => 3_600,
        "m" | "min" | "minute" | "minutes" => 60,
        "s" | "sec" | "second" | "seconds" => 1,
        _ => return None,
    };
    Some(Duration::from_secs(count.checked_mul(seconds)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_in_kumomtas_forms() {
        let rate = |s: &str| s.parse::<Rate>().unwrap();
        let per = |quantity, secs, max_burst| Rate {
            quantity,
            period: Duration::from_secs(secs),
            max_burst,
        };
        assert_eq!(rate("10/s"), per(10, 1, None));
        assert_eq!(rate("10/second"), per(10, 1, None));
        assert_eq!(rate("local:10/sec"), per(10, 1, None));
        assert_eq!(rate("50/min"), per(50, 60, None));
        assert_eq!(rate("60/minute,max_burst=1"), per(60, 60, Some(1)));
        assert_eq!(rate("20/30minute"), per(20, 1800, None));
        assert_eq!(rate("1,000/hr"), per(1000, 3600, None));
        assert_eq!(rate("1_000/h"), per(1000, 3600, None));
        assert_eq!(rate("10,000/day"), per(10_000, 86_400, None));
        assert_eq!(
            rate("60/minute,max_burst=1").interval(),
            Duration::from_secs(1)
        );
        for bad in [
            "",
            "10",
            "0/s",
            "10/",
            "10/fortnight",
            "10/0min",
            "x/s",
            "5/s,max_burst=0",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_may_have_fractions() {
        assert_eq!(parse_seconds("1").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_seconds("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
