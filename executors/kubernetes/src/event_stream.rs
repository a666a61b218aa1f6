//! `FF_PRINT_POD_EVENTS`: from the pod's creation on, its events are watched and printed to
//! the job log as a table of `Type`, `Reason` and `Message` (upstream writes them through
//! Go's `tabwriter` with a minimum cell width of 3 and a padding of 3, flushing after every
//! event: the header is aligned with the first event, every later event on its own), in
//! place of the "Waiting for pod" lines.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::api::{WatchEvent, WatchParams};
use kube::Api;
use runner_core::log::{JobLog, StreamId, StreamKind};

use crate::retry::RetryPolicy;

/// The pause before the events are watched again after the watch ended.
const REWATCH_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Go's `tabwriter` settings upstream uses: `minwidth` 3, `padding` 3.
const MIN_WIDTH: usize = 3;
const PADDING: usize = 3;

/// The table's lines as upstream's writer prints them.
#[derive(Debug, Default)]
pub struct EventTable {
    header_printed: bool,
}

impl EventTable {
    /// The lines one more event adds (the header with the first one).
    pub fn lines(&mut self, kind: &str, reason: &str, message: &str) -> Vec<String> {
        let mut rows = Vec::new();
        if !self.header_printed {
            self.header_printed = true;
            rows.push(["Type", "Reason", "Message"]);
        }
        rows.push([kind, reason, message]);
        let width = |column: usize| {
            rows.iter()
                .map(|row| (row[column].chars().count() + PADDING).max(MIN_WIDTH))
                .max()
                .unwrap_or(MIN_WIDTH)
        };
        let (first, second) = (width(0), width(1));
        rows.iter()
            .map(|row| {
                format!(
                    "{:<first$}{:<second$}{}",
                    row[0],
                    row[1],
                    row[2],
                    first = first,
                    second = second
                )
            })
            .collect()
    }
}

/// The printing task; dropping it (at cleanup) stops the printing.
#[derive(Debug)]
pub struct Printer(tokio::task::JoinHandle<()>);

impl Drop for Printer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches the events of pod `name` and prints each, until the [`Printer`] is dropped. The
/// watch is made again when the server ends it, from the last version seen; an event is
/// printed once for each version of it.
pub fn start(events: Api<Event>, name: &str, retry: RetryPolicy, log: JobLog) -> Printer {
    let params = WatchParams::default()
        .fields(&format!("involvedObject.name={name}"))
        .timeout(290);
    Printer(tokio::spawn(async move {
        // Upstream writes the table raw to the executor-level stderr stream, no colours.
        let mut out = log.stream(StreamId::RUNNER, StreamKind::Stderr);
        let mut table = EventTable::default();
        let mut printed = std::collections::HashSet::new();
        let mut version = "0".to_string();
        loop {
            let stream = match retry
                .run("watching the pod's events", |_| {
                    events.watch(&params, &version)
                })
                .await
            {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!("watching the pod's events: {error}");
                    return;
                }
            };
            let mut stream = stream.boxed();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(WatchEvent::Added(event)) | Ok(WatchEvent::Modified(event)) => {
                        if let Some(seen) = &event.metadata.resource_version {
                            version = seen.clone();
                        }
                        let key = (
                            event.metadata.uid.clone(),
                            event.metadata.resource_version.clone(),
                        );
                        if !printed.insert(key) {
                            continue;
                        }
                        for line in table.lines(
                            event.type_.as_deref().unwrap_or(""),
                            event.reason.as_deref().unwrap_or(""),
                            event.message.as_deref().unwrap_or(""),
                        ) {
                            out.write(format!("{line}\n").as_bytes());
                        }
                    }
                    Ok(WatchEvent::Bookmark(bookmark)) => {
                        version = bookmark.metadata.resource_version;
                    }
                    // An expired version: from now on.
                    Ok(WatchEvent::Error(_)) => version = "0".to_string(),
                    Ok(WatchEvent::Deleted(_)) => {}
                    Err(error) => {
                        tracing::debug!("the pod's event watch: {error}");
                        break;
                    }
                }
            }
            // A stream that keeps failing is not watched again in a tight loop.
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_the_header_with_the_first_event_and_each_later_event_alone() {
        let mut table = EventTable::default();
        assert_eq!(
            table.lines(
                "Normal",
                "Scheduled",
                "Successfully assigned default/p to node"
            ),
            [
                "Type     Reason      Message",
                "Normal   Scheduled   Successfully assigned default/p to node",
            ]
        );
        assert_eq!(
            table.lines("Warning", "Failed", "Error: ErrImagePull"),
            ["Warning   Failed   Error: ErrImagePull"]
        );
        assert_eq!(table.lines("", "", "bare"), ["   ".to_string() + "   bare"]);
    }
}
