//! Simulated time: real time scaled by a compression factor, plus manual jumps.
//!
//! Everything in the estate (job durations, recovery points, RPO) runs on this clock, so a
//! 20-minute reprotect can take a second of real time, and a test can jump straight to the end.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// A point in simulated time.
pub type SimTime = OffsetDateTime;

/// The simulator's clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    real_origin: Instant,
    sim_origin: OffsetDateTime,
    compression: f64,
    jumped: Duration,
}

impl SimClock {
    /// Starts at the current wall time, running `compression` simulated seconds per real second.
    pub fn new(compression: f64) -> Self {
        Self {
            real_origin: Instant::now(),
            sim_origin: OffsetDateTime::now_utc(),
            compression: if compression.is_finite() && compression > 0.0 { compression } else { 1.0 },
            jumped: Duration::ZERO,
        }
    }

    /// Simulated now.
    pub fn now(&self) -> SimTime {
        let elapsed = self.real_origin.elapsed().mul_f64(self.compression);
        self.sim_origin + elapsed + self.jumped
    }

    /// Moves simulated time forward by `by` at once.
    pub fn advance(&mut self, by: Duration) {
        self.jumped += by;
    }

    /// Simulated seconds per real second.
    pub fn compression(&self) -> f64 {
        self.compression
    }

    /// The real-time equivalent of a simulated duration (for `Retry-After`).
    pub fn to_real(&self, sim: Duration) -> Duration {
        sim.div_f64(self.compression)
    }

    /// The wall-clock time at which simulated time reaches (or reached) `t`, given the jumps
    /// made so far: how an outside observer relates a job's simulated end to real events.
    pub fn to_wall(&self, t: SimTime) -> OffsetDateTime {
        let sim_elapsed = (t - self.jumped) - self.sim_origin;
        self.sim_origin + sim_elapsed / self.compression
    }
}

/// RFC 3339 with 7 fractional digits and `Z`, the way ASR writes times.
pub fn format(t: SimTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// Parses RFC 3339 (what clients send in `$filter`).
pub fn parse(s: &str) -> Option<SimTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_time_runs_faster_and_jumps_add_up() {
        let mut c = SimClock::new(1000.0);
        let a = c.now();
        c.advance(Duration::from_secs(3600));
        let b = c.now();
        assert!(b - a >= time::Duration::hours(1));
        assert_eq!(c.to_real(Duration::from_secs(30)), Duration::from_millis(30));
    }

    #[test]
    fn simulated_moments_map_back_to_wall_time() {
        let mut c = SimClock::new(100.0);
        c.advance(Duration::from_secs(600));
        let wall_now = OffsetDateTime::now_utc();
        let skew = (c.to_wall(c.now()) - wall_now).abs();
        assert!(skew < time::Duration::milliseconds(50), "now maps to now, jumps aside: {skew}");
        // 60 simulated seconds from now are 0.6 real seconds from now.
        let later = c.to_wall(c.now() + time::Duration::seconds(60)) - c.to_wall(c.now());
        assert!((later - time::Duration::milliseconds(600)).abs() < time::Duration::milliseconds(50), "{later}");
    }

    #[test]
    fn times_are_written_like_asr_writes_them() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_744_188_560_893_089_200).unwrap();
        assert_eq!(format(t), "2025-04-09T08:49:20.8930892Z");
        assert_eq!(parse("2025-04-09T08:49:20.8930892Z"), Some(t));
    }
}
