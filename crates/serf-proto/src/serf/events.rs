//! User events: sending them (with Serf's size limits), and receiving them
//! through the deduplicating buffer of recent Lamport times.

use std::time::Duration;

use super::state::{Queue, State};
use super::{Serf, MAX_EVENTS_PER_LTIME, MAX_EVENT_BYTES_PER_LTIME, USER_EVENT_SIZE_MAX};
use crate::model::Event;
use crate::wire::{self, SerfMessage};

impl State {
    /// One warning per Lamport time whose event (or query) buffer is full;
    /// the rest of a flood at that time is dropped quietly.
    pub(super) fn refused_at_ltime(&mut self, what: &str, name: &str, ltime: u64) {
        if self.full_ltime_warned != Some(ltime) {
            self.full_ltime_warned = Some(ltime);
            tracing::warn!(
                "dropping {what} {name:?} at Lamport time {ltime}: already {MAX_EVENTS_PER_LTIME} \
                 (or {MAX_EVENT_BYTES_PER_LTIME} bytes) kept for that time"
            );
        }
    }

    pub(super) fn handle_user_event(
        &mut self,
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        cc: bool,
        now: Duration,
    ) -> bool {
        self.event_clock.witness(ltime);
        if ltime < self.event_min_time {
            return false;
        }
        let cur = self.event_clock.time();
        let size = self.event_buffer.len() as u64;
        if cur > size && ltime < cur - size {
            return false;
        }
        let idx = (ltime % size) as usize;
        let bytes = name.len() + payload.len();
        match &mut self.event_buffer[idx] {
            Some(seen) if seen.ltime == ltime => {
                if seen
                    .events
                    .iter()
                    .any(|e| e.name == name && e.payload == payload)
                {
                    return false;
                }
                let kept: usize = seen
                    .events
                    .iter()
                    .map(|e| e.name.len() + e.payload.len())
                    .sum();
                if seen.events.len() >= MAX_EVENTS_PER_LTIME
                    || kept + bytes > MAX_EVENT_BYTES_PER_LTIME
                {
                    self.refused_at_ltime("user event", &name, ltime);
                    return false;
                }
                seen.events.push(wire::UserEventRec {
                    name: name.clone(),
                    payload: payload.clone(),
                });
            }
            _ if bytes > MAX_EVENT_BYTES_PER_LTIME => {
                self.refused_at_ltime("user event", &name, ltime);
                return false;
            }
            slot => {
                *slot = Some(wire::UserEvents {
                    ltime,
                    events: vec![wire::UserEventRec {
                        name: name.clone(),
                        payload: payload.clone(),
                    }],
                })
            }
        }
        tracing::info!(event = %name, ltime, "serf user event");
        let e = Event::User {
            ltime,
            name: name.clone(),
            payload,
            coalesce: cc,
        };
        if cc {
            self.user_co.push(&name, ltime, e, now);
        } else {
            self.events.push(e);
        }
        true
    }
}

impl Serf {
    /// Sends a user event; refused, as by Serf, when its name and payload
    /// exceed the configured limit before or after encoding.
    pub fn user_event(
        &mut self,
        name: &str,
        payload: Vec<u8>,
        coalesce: bool,
        now: Duration,
    ) -> anyhow::Result<()> {
        let limit = self.st.cfg.user_event_size_limit;
        let size = name.len() + payload.len();
        anyhow::ensure!(
            size <= limit,
            "user event exceeds configured limit of {limit} bytes before encoding"
        );
        anyhow::ensure!(
            size <= USER_EVENT_SIZE_MAX,
            "user event exceeds sane limit of {USER_EVENT_SIZE_MAX} bytes before encoding"
        );
        let t = self.st.event_clock.time();
        let raw = SerfMessage::UserEvent(wire::UserEvent {
            ltime: t,
            name: name.to_string(),
            payload: payload.clone(),
            cc: coalesce,
        })
        .encode();
        anyhow::ensure!(
            raw.len() <= limit,
            "encoded user event exceeds configured limit of {limit} bytes after encoding"
        );
        anyhow::ensure!(
            raw.len() <= USER_EVENT_SIZE_MAX,
            "encoded user event exceeds reasonable limit of {USER_EVENT_SIZE_MAX} bytes after encoding"
        );
        self.st.event_clock.increment();
        self.st
            .handle_user_event(t, name.to_string(), payload, coalesce, now);
        self.st.enqueue(Queue::Event, raw);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf::testutil::*;

    #[test]
    fn user_events_kept_per_lamport_time_are_bounded() {
        let mut s = serf();
        deliver(
            &mut s,
            (0..1000).map(|i| user_event(7, &format!("e{i}"), b"")),
        );
        let slot = s.st.event_buffer.iter().flatten().find(|u| u.ltime == 7);
        assert_eq!(slot.map(|u| u.events.len()), Some(MAX_EVENTS_PER_LTIME));
        assert_eq!(s.drain_events().len(), MAX_EVENTS_PER_LTIME);
        // Bytes too: big events fill a time's budget before its count does.
        let big = vec![0u8; 9 * 1024];
        deliver(
            &mut s,
            (0..100).map(|i| user_event(8, &format!("b{i}"), &big)),
        );
        let kept: usize =
            s.st.event_buffer
                .iter()
                .flatten()
                .filter(|u| u.ltime == 8)
                .flat_map(|u| &u.events)
                .map(|e| e.name.len() + e.payload.len())
                .sum();
        assert!(kept <= MAX_EVENT_BYTES_PER_LTIME, "{kept} bytes kept");
        assert!(kept > 0);
    }
}
