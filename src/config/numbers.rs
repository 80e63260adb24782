//! Every number a user can give dbctl (flags, settings from the environment or `.env`, URL query
//! parameters), with the range dbctl accepts for it. Each is checked where it is read, before
//! anything runs: a value outside its range is a usage error (exit 2) naming the setting and the
//! range, never a panic, a huge allocation, or a value the server refuses later.

use std::time::Duration;

/// A number of seconds. `zero` says what 0 means where 0 is accepted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seconds {
    min: f64,
    max: f64,
    zero: Option<&'static str>,
    /// -1 means the same as 0 (SQLAlchemy's spelling of "never" for `pool_recycle`).
    minus_one: bool,
}

/// The longest wait dbctl accepts for anything it waits on (a lock, a pool, a server): one day.
const DAY: f64 = 86_400.0;

/// `--lock-timeout`: 0 means "fail at once when another run holds the lock".
pub(crate) const LOCK_TIMEOUT: Seconds = Seconds {
    min: 0.001,
    max: DAY,
    zero: Some("do not wait"),
    minus_one: false,
};

/// `ping --wait`.
pub(crate) const PING_WAIT: Seconds = Seconds {
    min: 0.001,
    max: DAY,
    zero: None,
    minus_one: false,
};

/// `DB_CONNECT_TIMEOUT`, `ping --timeout`, asyncpg's `?timeout=`.
pub(crate) const CONNECT_TIMEOUT: Seconds = Seconds {
    min: 0.001,
    max: 3_600.0,
    zero: None,
    minus_one: false,
};

/// `DB_POOL_TIMEOUT`.
pub(crate) const POOL_TIMEOUT: Seconds = Seconds {
    min: 0.001,
    max: DAY,
    zero: None,
    minus_one: false,
};

/// `DB_POOL_RECYCLE`: 0 or -1 (SQLAlchemy's "never") turns recycling off.
pub(crate) const POOL_RECYCLE: Seconds = Seconds {
    min: 0.001,
    max: 31_536_000.0,
    zero: Some("never recycle; -1 means the same"),
    minus_one: true,
};

/// `DB_LOCK_EXPIRY`: how long a pooled-mode migration lock outlives its holder's heartbeat.
pub(crate) const LOCK_EXPIRY: Seconds = Seconds {
    min: 1.0,
    max: DAY,
    zero: None,
    minus_one: false,
};

/// `DB_STATEMENT_TIMEOUT`, asyncpg's `?command_timeout=`. PostgreSQL's statement_timeout and
/// SQLite's busy timeout are both a 32-bit count of milliseconds.
pub(crate) const STATEMENT_TIMEOUT: Seconds = Seconds {
    min: 0.001,
    max: i32::MAX as f64 / 1000.0,
    zero: Some("no limit; on SQLite: do not wait for a lock"),
    minus_one: false,
};

impl Seconds {
    /// The value, `None` when it is 0 (or -1 for [`POOL_RECYCLE`]) and 0 means "off".
    pub(crate) fn parse(&self, raw: &str) -> Result<Option<Duration>, String> {
        let bad = || format!("expected {}", self.describe());
        let value: f64 = raw.trim().parse().map_err(|_| bad())?;
        if !value.is_finite() {
            return Err(bad());
        }
        let off = value == 0.0 || (value == -1.0 && self.minus_one);
        if off && self.zero.is_some() {
            return Ok(None);
        }
        if value < self.min || value > self.max {
            return Err(bad());
        }
        Ok(Some(Duration::from_secs_f64(value)))
    }

    /// The accepted range in words, for error messages and help.
    pub(crate) fn describe(&self) -> String {
        let range = format!(
            "a number of seconds from {} to {}",
            self.min,
            trim_float(self.max)
        );
        match self.zero {
            Some(meaning) => format!("{range}, or 0 ({meaning})"),
            None => range,
        }
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// A whole number in `min..=max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Count {
    min: i64,
    max: i64,
    what: &'static str,
}

/// Connections the pool may hold (`DB_POOL_SIZE`); r2d2 sizes its bookkeeping by it.
pub(crate) const POOL_SIZE: Count = Count {
    min: 1,
    max: 1_000,
    what: "a whole number of connections",
};

/// SQLAlchemy's extra connections under load (`DB_MAX_OVERFLOW`); -1 means "no limit".
pub(crate) const MAX_OVERFLOW: Count = Count {
    min: -1,
    max: 1_000,
    what: "a whole number of connections (-1: no limit)",
};

/// `DATABASE_PORT`.
pub(crate) const PORT: Count = Count {
    min: 1,
    max: 65_535,
    what: "a port number",
};

impl Count {
    pub(crate) fn parse(&self, raw: &str) -> Result<i64, String> {
        match raw.trim().parse::<i64>() {
            Ok(n) if (self.min..=self.max).contains(&n) => Ok(n),
            _ => Err(format!("expected {}", self.describe())),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} from {} to {}", self.what, self.min, self.max)
    }

    pub(crate) fn max(&self) -> i64 {
        self.max
    }
}

/// clap value parsers: the flag's own name is added by clap ("invalid value '1e20' for
/// '--lock-timeout <SECS>': expected ...").
pub(crate) fn lock_timeout_flag(raw: &str) -> Result<Duration, String> {
    Ok(LOCK_TIMEOUT.parse(raw)?.unwrap_or(Duration::ZERO))
}

pub(crate) fn ping_wait_flag(raw: &str) -> Result<Duration, String> {
    PING_WAIT.parse(raw)?.ok_or_else(|| PING_WAIT.describe())
}

pub(crate) fn connect_timeout_flag(raw: &str) -> Result<Duration, String> {
    CONNECT_TIMEOUT
        .parse(raw)?
        .ok_or_else(|| CONNECT_TIMEOUT.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_range_checked() {
        for bad in ["1e20", "inf", "NaN", "-0.5", "abc", "", "86401", "0.0001"] {
            assert!(LOCK_TIMEOUT.parse(bad).is_err(), "{bad}");
        }
        assert_eq!(LOCK_TIMEOUT.parse("0"), Ok(None));
        assert_eq!(
            LOCK_TIMEOUT.parse(" 1.5 "),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert!(STATEMENT_TIMEOUT.parse("3000000").is_err());
        assert!(STATEMENT_TIMEOUT.parse("2147483").is_ok());
        assert_eq!(POOL_RECYCLE.parse("-1"), Ok(None));
        assert!(POOL_RECYCLE.parse("-2").is_err());
        assert!(CONNECT_TIMEOUT.parse("0").is_err());
        assert!(CONNECT_TIMEOUT.parse("-1").is_err());
    }

    #[test]
    fn counts_are_range_checked() {
        assert!(POOL_SIZE.parse("4294967295").is_err());
        assert!(POOL_SIZE.parse("0").is_err());
        assert_eq!(POOL_SIZE.parse("1000"), Ok(1000));
        assert_eq!(MAX_OVERFLOW.parse("-1"), Ok(-1));
        assert!(PORT.parse("65536").is_err());
        assert!(
            POOL_SIZE.describe().contains("1 to 1000"),
            "{}",
            POOL_SIZE.describe()
        );
    }
}
