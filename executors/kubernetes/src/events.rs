//! The pod's Warning events in the job log after a failed stage (`print_pod_warning_events`,
//! on by default), as upstream prints them: listed by the pod's name and type `Warning` (200
//! at a time, following `continue`), each event once (by uid and count), none older than the
//! newest already printed, oldest first, as `Event retrieved from the cluster: <message>`.
//! An API that cannot list events (no RBAC for them, a server without them) prints nothing.

use std::collections::{HashSet, VecDeque};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::Api;
use runner_core::log::JobLog;

use crate::retry::RetryPolicy;

/// Upstream's page size.
const PAGE: u32 = 200;
/// How many printed events are remembered (upstream's LRU capacity).
const REMEMBERED: usize = 100_000;

/// When an event last happened, by upstream's order of preference.
pub fn last_occurred(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|series| series.last_observed_time.as_ref())
        .map(|time| time.0)
        .or_else(|| event.last_timestamp.as_ref().map(|time| time.0))
        .or_else(|| event.event_time.as_ref().map(|time| time.0))
        .or_else(|| event.first_timestamp.as_ref().map(|time| time.0))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0)
        })
}

fn key(event: &Event) -> String {
    format!(
        "{}:{}",
        event.metadata.uid.as_deref().unwrap_or_default(),
        event.count.unwrap_or_default()
    )
}

/// What has been printed of one job's events.
#[derive(Debug, Default)]
pub struct PodEvents {
    seen: HashSet<String>,
    order: VecDeque<String>,
    newest: Option<Timestamp>,
}

impl PodEvents {
    /// The events of `events` not printed yet, oldest first, now counted as printed.
    pub fn select(&mut self, events: Vec<Event>) -> Vec<Event> {
        let mut fresh: Vec<Event> = Vec::new();
        let mut keys = HashSet::new();
        for event in events {
            let when = last_occurred(&event);
            if let (Some(newest), Some(when)) = (self.newest, when) {
                if when < newest {
                    continue;
                }
            }
            let key = key(&event);
            if self.seen.contains(&key) || !keys.insert(key) {
                continue;
            }
            fresh.push(event);
        }
        fresh.sort_by_key(last_occurred);
        for event in &fresh {
            if let Some(when) = last_occurred(event) {
                self.newest = Some(self.newest.map_or(when, |newest| newest.max(when)));
            }
            let key = key(event);
            if self.order.len() == REMEMBERED {
                if let Some(oldest) = self.order.pop_front() {
                    self.seen.remove(&oldest);
                }
            }
            self.seen.insert(key.clone());
            self.order.push_back(key);
        }
        fresh
    }

    /// Lists `pod`'s Warning events and prints the new ones into `log`.
    pub async fn report(
        &mut self,
        events: &Api<Event>,
        pod: &str,
        retry: &RetryPolicy,
        log: &JobLog,
    ) {
        let mut params = ListParams::default()
            .fields(&format!("involvedObject.name={pod},type=Warning"))
            .limit(PAGE);
        let mut all = Vec::new();
        loop {
            let page = match retry
                .run("listing the pod's events", |_| events.list(&params))
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::debug!("Error retrieving events list: {error}");
                    return;
                }
            };
            let next = page
                .metadata
                .continue_
                .clone()
                .filter(|token| !token.is_empty());
            all.extend(page.items);
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        for event in self.select(all) {
            log.warning(&format!(
                "Event retrieved from the cluster: {}",
                event.message.as_deref().unwrap_or_default()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uid: &str, count: i32, at: &str, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "uid": uid},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "type": "Warning", "count": count, "lastTimestamp": at, "message": message,
        }))
        .unwrap()
    }

    fn messages(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .map(|event| event.message.as_deref().unwrap_or_default())
            .collect()
    }

    #[test]
    fn events_come_once_oldest_first_and_never_older_than_the_newest_printed() {
        let mut state = PodEvents::default();
        let first = state.select(vec![
            event("b", 1, "2026-12-03T06:00:02Z", "second"),
            event("a", 1, "2026-12-03T06:00:01Z", "first"),
            event("a", 1, "2026-12-03T06:00:01Z", "first"),
        ]);
        assert_eq!(messages(&first), ["first", "second"]);
        let again = state.select(vec![
            event("a", 1, "2026-12-03T06:00:01Z", "first"),
            event("b", 1, "2026-12-03T06:00:02Z", "second"),
            // The same event seen again (its count went up) is new.
            event("b", 2, "2026-12-03T06:00:05Z", "second, again"),
            // Older than the newest printed: skipped, as upstream does.
            event("c", 1, "2026-12-03T06:00:00Z", "late"),
        ]);
        assert_eq!(messages(&again), ["second, again"]);
    }
}
