//! Throttling per network segment (issue 16, item 6): at most `max_in_flight` commands in
//! flight at once among the meters of one segment (a collector or a feeder, from the
//! registry, as `[head_end.throttle] segment` says), power restorations first.
//!
//! How it works with the meter actors:
//! - before a step that could send (nothing in flight), the actor asks for a ticket
//!   ([`Segments::take`]); a meter without a segment, or with throttling off, needs none;
//! - the ticket is kept while the command is in flight and given back when it leaves flight
//!   (answer, deadline, not sent) or if the step sent nothing ([`Segments::give_back`]);
//! - a meter refused a ticket holds its due work (nothing is written, no event: a short
//!   queue, like the campaign's rate) and waits in its segment's queue, restorations ahead of
//!   the others ([`Segments::wait`]);
//! - a ticket given back while meters wait is handed to the first of them (reserved for it,
//!   so that nobody arriving meanwhile overtakes the queue) and that meter is woken; a meter
//!   that then has nothing to send gives it back, and it goes to the next one.
//!
//! A ticket reserved for a woken meter that does not come for it within ten seconds (its unit
//! moved to another instance, its segment changed, its head-end is down) goes on to the next.
//!
//! Per instance and in memory: with N instances a segment may have N × `max_in_flight`
//! commands in flight (the limit is per instance). A restarted instance starts with empty
//! segments; a meter recovered with a command in flight takes a ticket at its first step if
//! one is free (the command is in flight either way).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// One segment's state.
#[derive(Default)]
struct Segment {
    in_flight: u32,
    /// Meters waiting: restorations first, then the others, each in arrival order.
    restoring: VecDeque<Arc<str>>,
    other: VecDeque<Arc<str>>,
    /// Meters in the queues (no meter twice).
    queued: HashSet<Arc<str>>,
    /// Tickets handed to woken meters that have not come for them yet, and since when: one
    /// not taken within [`RESERVATION_TTL`] goes back (its meter moved to another instance or
    /// another segment, or its head-end is down).
    reserved: HashMap<Arc<str>, Instant>,
}

/// How long a ticket waits for the woken meter it was handed to.
const RESERVATION_TTL: Duration = Duration::from_secs(10);

impl Segment {
    fn pop(&mut self) -> Option<Arc<str>> {
        let m = self
            .restoring
            .pop_front()
            .or_else(|| self.other.pop_front())?;
        self.queued.remove(&m);
        Some(m)
    }
}

/// The segments of this instance's meters.
pub struct Segments {
    /// 0 = no throttling.
    max_in_flight: u32,
    segments: DashMap<Arc<str>, Mutex<Segment>>,
}

impl Default for Segments {
    /// No throttling.
    fn default() -> Self {
        Segments::new(0)
    }
}

/// What [`Segments::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// No segment, or no throttling: nothing to give back.
    Free,
    /// A ticket of the segment: give it back when the command leaves flight (or if unused).
    Taken,
    /// The segment is full (or others wait ahead): hold, and wait.
    Refused,
}

impl Segments {
    pub(crate) fn new(max_in_flight: u32) -> Segments {
        Segments {
            max_in_flight,
            segments: DashMap::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.max_in_flight > 0
    }

    fn with<T>(&self, segment: &Arc<str>, f: impl FnOnce(&mut Segment) -> T) -> T {
        if let Some(entry) = self.segments.get(segment) {
            let mut s = entry.lock().expect("segment lock");
            return f(&mut s);
        }
        let entry = self
            .segments
            .entry(segment.clone())
            .or_default()
            .downgrade();
        let mut s = entry.lock().expect("segment lock");
        f(&mut s)
    }

    /// A ticket for `meter` in `segment`: its reservation if it was woken with one, else a
    /// free one if the segment has room and nobody waits.
    pub(crate) fn take(&self, segment: Option<&Arc<str>>, meter: &Arc<str>) -> Ticket {
        let (Some(segment), true) = (segment, self.enabled()) else {
            return Ticket::Free;
        };
        let max = self.max_in_flight;
        self.with(segment, |s| {
            if s.reserved.remove(meter).is_some() {
                s.in_flight += 1;
                return Ticket::Taken;
            }
            s.reserved.retain(|_, at| at.elapsed() < RESERVATION_TTL);
            if s.in_flight + (s.reserved.len() as u32) < max && s.queued.is_empty() {
                s.in_flight += 1;
                Ticket::Taken
            } else {
                Ticket::Refused
            }
        })
    }

    /// `meter` was refused and holds work (`restoring`: a power restoration): queue it.
    /// Returns the meters to wake (room freed between the refusal and now).
    pub(crate) fn wait(
        &self,
        segment: &Arc<str>,
        meter: &Arc<str>,
        restoring: bool,
    ) -> Vec<Arc<str>> {
        let max = self.max_in_flight;
        self.with(segment, |s| {
            if s.queued.contains(meter) {
                // A power restoration that came while it waited moves it up.
                if restoring && !s.restoring.contains(meter) {
                    s.other.retain(|m| m != meter);
                    s.restoring.push_back(meter.clone());
                }
            } else if !s.reserved.contains_key(meter) {
                s.queued.insert(meter.clone());
                if restoring {
                    s.restoring.push_back(meter.clone());
                } else {
                    s.other.push_back(meter.clone());
                }
            }
            Self::hand_on(s, max)
        })
    }

    /// `meter` stops (its actor passivates or its unit moved away): out of the queue, and a
    /// ticket reserved for it goes on. Returns the meters to wake.
    pub(crate) fn forget(&self, segment: &Arc<str>, meter: &Arc<str>) -> Vec<Arc<str>> {
        let max = self.max_in_flight;
        self.with(segment, |s| {
            if s.queued.remove(meter) {
                s.restoring.retain(|m| m != meter);
                s.other.retain(|m| m != meter);
            }
            s.reserved.remove(meter);
            Self::hand_on(s, max)
        })
    }

    /// A ticket given back (its command left flight, or the step sent nothing): handed to the
    /// first waiting meter, which is returned to be woken.
    pub(crate) fn give_back(&self, segment: &Arc<str>) -> Vec<Arc<str>> {
        let max = self.max_in_flight;
        self.with(segment, |s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            Self::hand_on(s, max)
        })
    }

    /// Reserves free tickets for waiting meters (restorations first, then arrival order).
    fn hand_on(s: &mut Segment, max: u32) -> Vec<Arc<str>> {
        s.reserved.retain(|_, at| at.elapsed() < RESERVATION_TTL);
        let mut woken = Vec::new();
        while s.in_flight + (s.reserved.len() as u32) < max {
            let Some(m) = s.pop() else { break };
            s.reserved.insert(m.clone(), Instant::now());
            woken.push(m);
        }
        woken
    }

    /// Commands in flight in `segment`, and tickets reserved for woken meters.
    #[cfg(test)]
    pub(crate) fn load(&self, segment: &Arc<str>) -> (u32, usize) {
        self.with(segment, |s| (s.in_flight, s.reserved.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn a_full_segment_queues_meters_and_hands_freed_tickets_to_restorations_first() {
        let seg = Segments::new(2);
        let c = a("COLL-1");
        assert_eq!(seg.take(Some(&c), &a("M1")), Ticket::Taken);
        assert_eq!(seg.take(Some(&c), &a("M2")), Ticket::Taken);
        assert_eq!(seg.take(Some(&c), &a("D3")), Ticket::Refused);
        assert!(seg.wait(&c, &a("D3"), false).is_empty());
        assert_eq!(seg.take(Some(&c), &a("R4")), Ticket::Refused);
        assert!(seg.wait(&c, &a("R4"), true).is_empty());
        // A freed ticket goes to the reconnect, though it came later; nobody overtakes it.
        assert_eq!(seg.give_back(&c), vec![a("R4")]);
        assert_eq!(seg.take(Some(&c), &a("X5")), Ticket::Refused, "queue first");
        assert_eq!(seg.take(Some(&c), &a("R4")), Ticket::Taken);
        assert_eq!(seg.load(&c), (2, 0));
        // The next one to the disconnect; if it has nothing to send it passes it on.
        assert_eq!(seg.give_back(&c), vec![a("D3")]);
        assert_eq!(seg.take(Some(&c), &a("D3")), Ticket::Taken);
        assert!(seg.give_back(&c).is_empty(), "nobody waits");
        assert_eq!(seg.load(&c), (1, 0));
        assert_eq!(seg.take(Some(&c), &a("X5")), Ticket::Taken);
    }

    #[test]
    fn a_meter_that_leaves_passes_its_place_on_and_a_restoration_moves_up() {
        let seg = Segments::new(1);
        let c = a("F");
        assert_eq!(seg.take(Some(&c), &a("M1")), Ticket::Taken);
        for m in ["D2", "D3", "D4"] {
            assert_eq!(seg.take(Some(&c), &a(m)), Ticket::Refused);
            seg.wait(&c, &a(m), false);
        }
        // D3's disconnect was superseded by a reconnect: it moves ahead.
        seg.wait(&c, &a("D3"), true);
        assert_eq!(seg.give_back(&c), vec![a("D3")]);
        // D3 moved to another instance before it came for its ticket: it goes on to D2.
        assert_eq!(seg.forget(&c, &a("D3")), vec![a("D2")]);
        assert_eq!(seg.take(Some(&c), &a("D2")), Ticket::Taken);
        assert_eq!(seg.load(&c), (1, 0));
    }

    #[test]
    fn no_segment_or_no_limit_needs_no_ticket() {
        let seg = Segments::new(1);
        assert_eq!(seg.take(None, &a("M1")), Ticket::Free);
        let off = Segments::new(0);
        for i in 0..100 {
            assert_eq!(off.take(Some(&a("F")), &a(&format!("M{i}"))), Ticket::Free);
        }
    }

    #[test]
    fn never_more_tickets_out_than_the_limit() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u8..3, 0u8..6, any::<bool>()), 1..200))| {
            let seg = Segments::new(3);
            let c = a("C");
            let mut holding: Vec<Arc<str>> = Vec::new();
            for (op, m, restoring) in ops {
                let meter = a(&format!("M{m}"));
                match op {
                    0 if !holding.contains(&meter) => {
                        match seg.take(Some(&c), &meter) {
                            Ticket::Taken => holding.push(meter),
                            Ticket::Refused => { seg.wait(&c, &meter, restoring); }
                            Ticket::Free => prop_assert!(false),
                        }
                    }
                    1 if !holding.is_empty() => {
                        holding.remove(0);
                        seg.give_back(&c);
                    }
                    _ => {}
                }
                let (in_flight, reserved) = seg.load(&c);
                prop_assert_eq!(in_flight as usize, holding.len());
                prop_assert!(in_flight as usize + reserved <= 3);
            }
        });
    }
}
