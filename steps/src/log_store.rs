//! One request's log, as `FollowLogs` serves it: an append-only file (so a long job's log
//! costs disk, not memory) with its length published, read from any byte offset. A follower
//! that lost its stream asks again from the offset it reached and gets neither a gap nor a
//! repeat; a follower at the end waits for more, or for the end of the log.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

use tokio::sync::watch;

/// What a follower sees of the log: how many bytes it holds and whether it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    /// The bytes written so far.
    pub len: u64,
    /// No more bytes will come.
    pub closed: bool,
}

/// An append-only log in a temporary file.
#[derive(Debug)]
pub struct LogStore {
    file: Mutex<std::fs::File>,
    extent: watch::Sender<Extent>,
}

/// What [`LogStore::read_from`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes from the asked offset on.
    Data(Vec<u8>),
    /// The log is complete and the offset is at (or past) its end.
    End,
}

impl LogStore {
    /// An empty log in a new temporary file (removed once the file is closed).
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            file: Mutex::new(tempfile::tempfile()?),
            extent: watch::Sender::new(Extent::default()),
        })
    }

    fn file(&self) -> std::sync::MutexGuard<'_, std::fs::File> {
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `data`; ignored once the log is closed.
    pub fn append(&self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() || self.extent.borrow().closed {
            return Ok(());
        }
        let mut file = self.file();
        file.seek(SeekFrom::End(0))?;
        file.write_all(data)?;
        let len = file.stream_position()?;
        drop(file);
        self.extent.send_modify(|extent| extent.len = len);
        Ok(())
    }

    /// Marks the log complete: followers at its end stop waiting.
    pub fn close(&self) {
        self.extent.send_modify(|extent| extent.closed = true);
    }

    /// The log's extent now.
    pub fn extent(&self) -> Extent {
        *self.extent.borrow()
    }

    /// Up to `max` bytes from `offset`, waiting while the log is open and holds nothing past
    /// it.
    pub async fn read_from(&self, offset: u64, max: usize) -> std::io::Result<Chunk> {
        let mut changes = self.extent.subscribe();
        let extent = *changes
            .wait_for(|extent| extent.len > offset || extent.closed)
            .await
            .map_err(|_| std::io::Error::other("the log is gone"))?;
        if extent.len <= offset {
            return Ok(Chunk::End);
        }
        let wanted = usize::try_from(extent.len - offset)
            .unwrap_or(usize::MAX)
            .min(max.max(1));
        let mut data = vec![0; wanted];
        let mut file = self.file();
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut data)?;
        Ok(Chunk::Data(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Follows from `offset` to the end, `max` bytes per read.
    async fn follow(store: &LogStore, mut offset: u64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Chunk::Data(data) = store.read_from(offset, max).await.expect("read") {
            offset += data.len() as u64;
            out.extend(data);
        }
        out
    }

    #[tokio::test]
    async fn a_follower_gets_what_is_written_after_it_waits_and_stops_at_the_close() {
        let store = std::sync::Arc::new(LogStore::new().expect("a log"));
        let follower = {
            let store = store.clone();
            tokio::spawn(async move { follow(&store, 0, 3).await })
        };
        tokio::task::yield_now().await;
        store.append(b"hello ").expect("append");
        store.append(b"world\n").expect("append");
        store.close();
        store.append(b"ignored").expect("append after close");
        assert_eq!(follower.await.expect("follower"), b"hello world\n");
        assert_eq!(
            store.extent(),
            Extent {
                len: 12,
                closed: true
            }
        );
        assert_eq!(store.read_from(12, 10).await.expect("read"), Chunk::End);
        assert_eq!(store.read_from(99, 10).await.expect("read"), Chunk::End);
    }

    proptest! {
        /// However the writes are split and wherever a follower drops, resuming from the
        /// offset it reached gives every byte once.
        #[test]
        fn resuming_from_the_reached_offset_neither_loses_nor_repeats(
            writes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
            drops in proptest::collection::vec(1usize..30, 0..5),
            max in 1usize..17,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
            runtime.block_on(async {
                let store = LogStore::new().expect("a log");
                for write in &writes {
                    store.append(write).expect("append");
                }
                store.close();
                let all: Vec<u8> = writes.concat();
                let mut seen = Vec::new();
                let mut offset = 0u64;
                // Each "connection" reads a few chunks, then drops; the next resumes.
                for reads in drops.iter().copied().chain(std::iter::once(usize::MAX)) {
                    for _ in 0..reads {
                        match store.read_from(offset, max).await.expect("read") {
                            Chunk::Data(data) => {
                                offset += data.len() as u64;
                                seen.extend(data);
                            }
                            Chunk::End => break,
                        }
                    }
                }
                prop_assert_eq!(seen, all);
                Ok(())
            })?;
        }
    }
}
