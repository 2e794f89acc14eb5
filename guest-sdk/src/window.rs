//! Windows over time: which window a record falls in, when a window is
//! closed, and how to name a window in state and timers.
//!
//! A tumbling count per key per minute, in outline: for each record, follow
//! the watermark with [`Watermark::observe`]; find the record's window with
//! [`tumbling`]; if the watermark already [closed](Window::closed_by) it, the
//! record is late; otherwise add one to the count stored under
//! [`Window::key`] and set an event-time timer at the window's end. When the
//! timer fires, [`Window::parse_key`] gives the key and window back: emit
//! the count and delete it. `plugins/window-count` is exactly that.

use crate::timers;

/// A window of time, `[start_ms, end_ms)`: a record with timestamp `t`
/// belongs to it when `start_ms <= t < end_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First millisecond in the window.
    pub start_ms: i64,
    /// First millisecond after the window.
    pub end_ms: i64,
}

/// The tumbling window of `size_ms` that holds `ts`: windows are aligned to
/// the Unix epoch, so every partition and every version agrees on them.
///
/// # Panics
/// If `size_ms` is not positive.
pub fn tumbling(ts: i64, size_ms: i64) -> Window {
    assert!(size_ms > 0, "a window size must be positive");
    let start_ms = ts - ts.rem_euclid(size_ms);
    Window {
        start_ms,
        end_ms: start_ms.saturating_add(size_ms),
    }
}

/// The hopping windows of `size_ms` starting every `hop_ms` that hold `ts`,
/// earliest first (`size_ms / hop_ms` of them, rounded up).
///
/// # Panics
/// If `size_ms` or `hop_ms` is not positive.
pub fn hopping(ts: i64, size_ms: i64, hop_ms: i64) -> Vec<Window> {
    assert!(size_ms > 0 && hop_ms > 0, "window sizes must be positive");
    let last_start = ts - ts.rem_euclid(hop_ms);
    let mut windows = Vec::new();
    let mut start = last_start;
    while start > ts - size_ms {
        windows.push(Window {
            start_ms: start,
            end_ms: start.saturating_add(size_ms),
        });
        start -= hop_ms;
    }
    windows.reverse();
    windows
}

impl Window {
    /// Whether `watermark` closed the window: its end was reached, so its
    /// result is final and a record for it is late.
    pub fn closed_by(&self, watermark: Option<i64>) -> bool {
        watermark.is_some_and(|w| w >= self.end_ms)
    }

    /// A state and timer key for this window of `key`: `key`, then the
    /// window's start as 8 bytes, ordered like the number. Keys of one
    /// `key` sort by window.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(key.len() + 8);
        out.extend_from_slice(key);
        out.extend_from_slice(&((self.start_ms as u64) ^ (1 << 63)).to_be_bytes());
        out
    }

    /// The key and window of a [`Window::key`] of a window of `size_ms`.
    pub fn parse_key(bytes: &[u8], size_ms: i64) -> Option<(&[u8], Window)> {
        let split = bytes.len().checked_sub(8)?;
        let (key, start) = bytes.split_at(split);
        let start_ms = (u64::from_be_bytes(start.try_into().ok()?) ^ (1 << 63)) as i64;
        Some((
            key,
            Window {
                start_ms,
                end_ms: start_ms.saturating_add(size_ms),
            },
        ))
    }
}

/// The partition's watermark, followed record by record through a batch:
/// the committed watermark, raised by each record's timestamp minus the
/// route's allowed lateness. Judging lateness with it gives the same answer
/// however the host happened to batch the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    current: Option<i64>,
    lateness_ms: i64,
}

impl Watermark {
    /// The watermark at the start of this call, from the host.
    pub fn start() -> Watermark {
        Watermark::new(timers::watermark(), timers::allowed_lateness_ms())
    }

    /// A watermark at `committed` that trails timestamps by `lateness_ms`.
    pub fn new(committed: Option<i64>, lateness_ms: u64) -> Watermark {
        Watermark {
            current: committed,
            lateness_ms: i64::try_from(lateness_ms).unwrap_or(i64::MAX),
        }
    }

    /// The watermark after a record with timestamp `ts`.
    pub fn observe(&mut self, ts: i64) -> Option<i64> {
        let seen = ts.saturating_sub(self.lateness_ms);
        self.current = Some(self.current.map_or(seen, |c| c.max(seen)));
        self.current
    }

    /// The watermark now.
    pub fn current(&self) -> Option<i64> {
        self.current
    }
}

/// A session: records of one key with no gap longer than the session's
/// timeout between them. Stored in state with [`Session::to_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Records in the session.
    pub records: u64,
    /// Timestamp of the earliest record.
    pub first_ms: i64,
    /// Timestamp of the latest record.
    pub last_ms: i64,
}

impl Session {
    /// A session of one record at `ts`.
    pub fn new(ts: i64) -> Session {
        Session {
            records: 1,
            first_ms: ts,
            last_ms: ts,
        }
    }

    /// The session with one more record at `ts`.
    pub fn extend(self, ts: i64) -> Session {
        Session {
            records: self.records + 1,
            first_ms: self.first_ms.min(ts),
            last_ms: self.last_ms.max(ts),
        }
    }

    /// 24 bytes: records, first, last (big-endian).
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..8].copy_from_slice(&self.records.to_be_bytes());
        out[8..16].copy_from_slice(&self.first_ms.to_be_bytes());
        out[16..].copy_from_slice(&self.last_ms.to_be_bytes());
        out
    }

    /// A session from [`Session::to_bytes`]; `None` if `bytes` is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Session> {
        let bytes: &[u8; 24] = bytes.try_into().ok()?;
        let word = |i: usize| <[u8; 8]>::try_from(&bytes[i..i + 8]).expect("8 bytes");
        Some(Session {
            records: u64::from_be_bytes(word(0)),
            first_ms: i64::from_be_bytes(word(8)),
            last_ms: i64::from_be_bytes(word(16)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_align_to_the_epoch_also_before_it() {
        assert_eq!(
            tumbling(125, 60),
            Window {
                start_ms: 120,
                end_ms: 180
            }
        );
        assert_eq!(tumbling(120, 60).start_ms, 120);
        assert_eq!(tumbling(119, 60).start_ms, 60);
        assert_eq!(tumbling(-1, 60).start_ms, -60);
    }

    #[test]
    fn hopping_windows_hold_the_timestamp_earliest_first() {
        let starts: Vec<i64> = hopping(125, 60, 20).iter().map(|w| w.start_ms).collect();
        assert_eq!(starts, [80, 100, 120]);
        assert!(
            hopping(125, 60, 20)
                .iter()
                .all(|w| w.start_ms <= 125 && 125 < w.end_ms)
        );
        assert_eq!(hopping(125, 60, 60), vec![tumbling(125, 60)]);
    }

    #[test]
    fn window_keys_round_trip_and_sort_by_window() {
        for start in [-120, 0, 60, i64::MAX - 60] {
            let w = tumbling(start, 60);
            let k = w.key(b"dev");
            assert_eq!(Window::parse_key(&k, 60), Some((&b"dev"[..], w)));
        }
        assert!(tumbling(-60, 60).key(b"a") < tumbling(0, 60).key(b"a"));
        assert_eq!(Window::parse_key(b"short", 60), None);
    }

    #[test]
    fn the_watermark_follows_records_and_closes_windows() {
        let mut wm = Watermark::new(None, 10);
        assert_eq!(wm.observe(100), Some(90));
        assert_eq!(wm.observe(50), Some(90));
        assert!(tumbling(50, 40).closed_by(wm.current()));
        assert!(!tumbling(85, 40).closed_by(wm.current()));
    }

    #[test]
    fn sessions_round_trip() {
        let s = Session::new(10).extend(5).extend(30);
        assert_eq!((s.records, s.first_ms, s.last_ms), (3, 5, 30));
        assert_eq!(Session::from_bytes(&s.to_bytes()), Some(s));
        assert_eq!(Session::from_bytes(b"nope"), None);
    }
}
