//! UTC calendar buckets for counts: days, months and years, numbered so a
//! bucket's number orders like its time (days since 1970-01-01, months
//! since year 0, years), over the proleptic Gregorian calendar that
//! protobuf timestamps use.

use crate::article::Timestamp;

const SECONDS_PER_DAY: i64 = 86_400;

/// The length of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    /// A UTC day.
    Day,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Interval {
    /// The counter kind byte of this interval (see `keys::counter_key`).
    pub fn counter_kind(self) -> u8 {
        match self {
            Self::Day => b'd',
            Self::Month => b'm',
            Self::Year => b'y',
        }
    }

    /// The number of the bucket holding `at`.
    pub fn bucket(self, at: Timestamp) -> i64 {
        let day = at.seconds.div_euclid(SECONDS_PER_DAY);
        match self {
            Self::Day => day,
            Self::Month => {
                let (year, month, _) = civil_from_days(day);
                year * 12 + (month - 1)
            }
            Self::Year => civil_from_days(day).0,
        }
    }

    /// When bucket `number` starts.
    pub fn start(self, number: i64) -> Timestamp {
        let day = match self {
            Self::Day => number,
            Self::Month => days_from_civil(number.div_euclid(12), number.rem_euclid(12) + 1, 1),
            Self::Year => days_from_civil(number, 1, 1),
        };
        Timestamp {
            seconds: day * SECONDS_PER_DAY,
            nanos: 0,
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(civil_from_days(days_from_civil(1851, 9, 18)), (1851, 9, 18));
        // 1969-12-31T23:59:59Z is in 1969's last day, month and year.
        assert_eq!(Interval::Day.bucket(ts(-1)), -1);
        assert_eq!(Interval::Year.bucket(ts(-1)), 1969);
        assert_eq!(
            Interval::Month.start(Interval::Month.bucket(ts(-1))),
            ts(-31 * 86_400)
        );
        assert_eq!(Interval::Year.start(2022), ts(1_640_995_200));
    }

    proptest! {
        #[test]
        fn a_time_lies_in_its_bucket(
            seconds in Timestamp::MIN_SECONDS..=Timestamp::MAX_SECONDS,
            which in 0..3usize,
        ) {
            let interval = [Interval::Day, Interval::Month, Interval::Year][which];
            let at = ts(seconds);
            let bucket = interval.bucket(at);
            prop_assert!(interval.start(bucket) <= at);
            prop_assert!(at < interval.start(bucket + 1));
        }

        #[test]
        fn days_round_trip(days in -800_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
