//! The record log: append-only segment files of stored versions, in
//! sequence order, beside the sled database that indexes them.
//!
//! Why records live here and not in a sled tree (measured; BENCHMARKS.md
//! "Storage format 2"): sled 0.34 is log-structured and rewrites a leaf
//! each time it consolidates or splits it, and it only cleans a segment of
//! its own once at most half of it is live. Even appended in order, the
//! compressed records (about 2 KB each) took 1.41 times their size on disk
//! in sled (the archive 6.4 KB an article in all at 100k, against
//! PostgreSQL's 4.1 KB for everything). Written once to
//! a file of our own, a record takes its size and nothing more, a read is
//! one `pread` of exactly its bytes, and sled keeps only small index
//! entries, which it holds in far less memory.
//!
//! # Layout
//! `records/` in the data directory holds segment files named by the
//! sequence number of their first record (20 digits). A segment is a run
//! of frames: `len (u32 LE) ‖ crc32 (u32 LE) ‖ record` ([`super::record`]).
//! A new segment is started once the current one passes
//! [`SEGMENT_BYTES`]. An erased frame (its record removed for good: a
//! damaged record set aside, later a deletion) keeps its length with the
//! [`ERASED`] bit set and has its bytes zeroed, so a scan steps over it.
//!
//! # Durability and the commit point
//! The writer appends a batch's frames and syncs the segment file
//! (`fdatasync`) *before* the sled transaction that points at them, and
//! that transaction also records the log's committed end (`meta/log_tail`).
//! So whatever sled holds after a crash points at durable bytes; frames
//! past the committed end belong to a batch that was never acknowledged,
//! and opening the store cuts them off (and removes segment files started
//! after it).

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufReader, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use crate::error::{Error, Result};

/// A segment is closed and a new one started once it holds this much.
pub const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes of a frame's head: length and checksum.
pub const FRAME_HEAD: u64 = 8;
/// Set in a frame's length field when its record was erased.
pub const ERASED: u32 = 1 << 31;

/// Where a record is: its segment, the offset of its frame, and the
/// record's length (without the frame head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pointer {
    /// The segment's id: the sequence number of its first record.
    pub segment: u64,
    /// Offset of the frame in the segment file.
    pub offset: u64,
    /// Length of the record.
    pub len: u32,
}

/// The end of the committed log: the last segment and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// The segment being appended to.
    pub segment: u64,
    /// Its committed length.
    pub end: u64,
}

impl Tail {
    /// The stored form (`meta/log_tail`).
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..].copy_from_slice(&self.end.to_be_bytes());
        out
    }

    /// The inverse of [`Tail::encode`].
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        Some(Self {
            segment: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            end: u64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

/// The frames of one batch, laid out for a segment before they are written.
pub struct PendingBatch {
    segment: u64,
    start: u64,
    buffer: Vec<u8>,
    /// Whether the batch starts a new segment file.
    new_segment: bool,
}

impl PendingBatch {
    /// Adds a record's frame and returns where it will be.
    pub fn push(&mut self, record: &[u8]) -> Pointer {
        let len = u32::try_from(record.len()).expect("records are far below 2 GiB");
        let pointer = Pointer {
            segment: self.segment,
            offset: self.start + self.buffer.len() as u64,
            len,
        };
        self.buffer.extend_from_slice(&len.to_le_bytes());
        self.buffer
            .extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        self.buffer.extend_from_slice(record);
        pointer
    }

    /// Where the batch's first frame will be, if it has any.
    pub fn first(&self) -> Option<Pointer> {
        (!self.buffer.is_empty()).then(|| Pointer {
            segment: self.segment,
            offset: self.start,
            len: u32::from_le_bytes(self.buffer[..4].try_into().expect("a frame head")),
        })
    }

    /// The tail once this batch is committed.
    pub fn tail(&self) -> Tail {
        Tail {
            segment: self.segment,
            end: self.start + self.buffer.len() as u64,
        }
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

/// The segment files of a data directory.
pub struct RecordLog {
    dir: PathBuf,
    /// Read handles, opened on first use; `pread` needs no lock.
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    /// The committed end; only the writer moves it.
    tail: Mutex<Option<Tail>>,
}

fn segment_name(segment: u64) -> String {
    format!("{segment:020}.log")
}

fn io(path: &Path, doing: &'static str, e: std::io::Error) -> Error {
    Error::DataDir {
        path: path.to_path_buf(),
        doing,
        source: Arc::new(e),
    }
}

impl RecordLog {
    /// Opens the log in `data_dir/records`, cutting off whatever lies past
    /// the committed `tail` (frames of a batch that was never committed).
    ///
    /// # Errors
    /// [`Error::DataDir`] when the directory or a segment cannot be used.
    pub fn open(data_dir: &Path, tail: Option<Tail>) -> Result<Self> {
        let dir = data_dir.join("records");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "creating the record log", e))?;
        let log = Self {
            dir,
            files: RwLock::default(),
            tail: Mutex::new(tail),
        };
        for segment in log.segments()? {
            let path = log.path(segment);
            match tail {
                Some(tail) if segment < tail.segment => {}
                Some(tail) if segment == tail.segment => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io(&path, "opening a segment of the record log", e))?;
                    let len = file
                        .metadata()
                        .map_err(|e| io(&path, "reading a segment's length", e))?
                        .len();
                    if len > tail.end {
                        tracing::info!(
                            segment,
                            bytes = len - tail.end,
                            "cutting off the uncommitted end of the record log"
                        );
                        file.set_len(tail.end)
                            .and_then(|()| file.sync_all())
                            .map_err(|e| io(&path, "cutting off an uncommitted end", e))?;
                    } else if len < tail.end {
                        return Err(Error::Corrupt {
                            key: format!("records/{}", segment_name(segment)),
                            reason: format!(
                                "the segment has {len} bytes, but {} were committed",
                                tail.end
                            ),
                        });
                    }
                }
                _ => {
                    tracing::info!(
                        segment,
                        "removing a record-log segment that was never committed"
                    );
                    std::fs::remove_file(&path)
                        .map_err(|e| io(&path, "removing an uncommitted segment", e))?;
                }
            }
        }
        Ok(log)
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// The segment ids present, in order.
    fn segments(&self) -> Result<Vec<u64>> {
        let mut segments = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, "listing the record log", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(&self.dir, "listing the record log", e))?;
            let name = entry.file_name();
            let Some(segment) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            segments.push(segment);
        }
        segments.sort_unstable();
        Ok(segments)
    }

    /// The committed end.
    pub fn tail(&self) -> Option<Tail> {
        *self.tail.lock().expect("never poisoned")
    }

    /// Lays out a batch that starts with sequence number `first_sequence`:
    /// in the current segment, or a new one when it is full.
    pub fn begin_batch(&self, first_sequence: u64) -> PendingBatch {
        match self.tail() {
            Some(tail) if tail.end < SEGMENT_BYTES => PendingBatch {
                segment: tail.segment,
                start: tail.end,
                buffer: Vec::new(),
                new_segment: false,
            },
            _ => PendingBatch {
                segment: first_sequence,
                start: 0,
                buffer: Vec::new(),
                new_segment: true,
            },
        }
    }

    /// Writes a batch's frames and makes them durable (`fdatasync`), before
    /// anything points at them. The tail moves only at [`Self::committed`].
    ///
    /// # Errors
    /// [`Error::SyncFailed`] when writing or syncing fails: the store then
    /// stops taking writes.
    pub fn write(&self, batch: &PendingBatch) -> Result<()> {
        if batch.buffer.is_empty() {
            return Ok(());
        }
        let path = self.path(batch.segment);
        let failed = |e: std::io::Error| {
            Error::SyncFailed(Arc::new(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            )))
        };
        let file = OpenOptions::new()
            .create(batch.new_segment)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        file.write_all_at(&batch.buffer, batch.start)
            .map_err(failed)?;
        file.sync_data().map_err(failed)?;
        if batch.new_segment {
            // The new file's name must be durable too.
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Records that a written batch was committed: its end is the tail.
    pub fn committed(&self, batch: &PendingBatch) {
        if !batch.buffer.is_empty() {
            *self.tail.lock().expect("never poisoned") = Some(batch.tail());
        }
    }

    fn file(&self, segment: u64) -> Result<Arc<File>> {
        if let Some(file) = self.files.read().expect("never poisoned").get(&segment) {
            return Ok(Arc::clone(file));
        }
        let path = self.path(segment);
        let file = Arc::new(File::open(&path).map_err(|e| Error::Corrupt {
            key: format!("records/{}", segment_name(segment)),
            reason: format!("cannot open the segment: {e}"),
        })?);
        self.files
            .write()
            .expect("never poisoned")
            .insert(segment, Arc::clone(&file));
        Ok(file)
    }

    /// Reads the record at `pointer`, checking its frame.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the frame does not match the pointer or its
    /// checksum, or the record was erased; [`Error::DataDir`] when the
    /// segment cannot be read.
    pub fn read(&self, pointer: Pointer) -> Result<Vec<u8>> {
        let corrupt = |reason: String| Error::Corrupt {
            key: format!(
                "records/{}@{}",
                segment_name(pointer.segment),
                pointer.offset
            ),
            reason,
        };
        let file = self.file(pointer.segment)?;
        let mut frame = vec![0u8; FRAME_HEAD as usize + pointer.len as usize];
        file.read_exact_at(&mut frame, pointer.offset)
            .map_err(|e| corrupt(format!("cannot read the record: {e}")))?;
        let (head, record) = frame.split_at(FRAME_HEAD as usize);
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if len & ERASED != 0 {
            return Err(corrupt("the record was erased".into()));
        }
        if len != pointer.len {
            return Err(corrupt(format!(
                "the frame holds {len} bytes, the index says {}",
                pointer.len
            )));
        }
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if crc32fast::hash(record) != crc {
            return Err(corrupt("the record does not match its checksum".into()));
        }
        frame.drain(..FRAME_HEAD as usize);
        Ok(frame)
    }

    /// The record of the frame at `pointer`, `None` when it was erased; an
    /// error when no frame of that length is there or its checksum fails.
    ///
    /// # Errors
    /// As [`RecordLog::read`].
    pub fn frame_at(&self, pointer: Pointer) -> Result<Option<Vec<u8>>> {
        let file = self.file(pointer.segment)?;
        let mut head = [0u8; FRAME_HEAD as usize];
        file.read_exact_at(&mut head, pointer.offset)
            .map_err(|e| io(&self.path(pointer.segment), "reading a record", e))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if len & ERASED != 0 && len & !ERASED == pointer.len {
            return Ok(None);
        }
        self.read(pointer).map(Some)
    }

    /// The record bytes at `pointer` as they are, without any check (to set
    /// a damaged record aside byte for byte).
    ///
    /// # Errors
    /// When the segment cannot be read.
    pub fn read_raw(&self, pointer: Pointer) -> Result<Vec<u8>> {
        let file = self.file(pointer.segment)?;
        let mut record = vec![0u8; pointer.len as usize];
        file.read_exact_at(&mut record, pointer.offset + FRAME_HEAD)
            .map_err(|e| io(&self.path(pointer.segment), "reading a record", e))?;
        Ok(record)
    }

    /// Removes every segment file: a conversion that starts again throws
    /// away what an interrupted one wrote.
    ///
    /// # Errors
    /// [`Error::DataDir`] when a file cannot be removed.
    pub fn remove_all(data_dir: &Path) -> Result<()> {
        let dir = data_dir.join("records");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir, "removing an unfinished record log", e)),
        }
    }

    /// Every frame up to the committed tail, in order: its pointer and its
    /// record (or why it cannot be read; an erased frame is skipped).
    pub fn scan(&self) -> Result<Scan<'_>> {
        match self.tail() {
            None => Ok(Scan {
                log: self,
                bound: None,
                segments: Vec::new().into_iter(),
                start: None,
                current: None,
            }),
            Some(tail) => self.scan_from(None, tail),
        }
    }

    /// The frames from `start` (the frame at that pointer; `None`: the
    /// beginning of the log) up to `bound`, in order.
    pub fn scan_from(&self, start: Option<Pointer>, bound: Tail) -> Result<Scan<'_>> {
        let first = start.map_or(0, |p| p.segment);
        let segments: Vec<u64> = self
            .segments()?
            .into_iter()
            .filter(|s| *s >= first && *s <= bound.segment)
            .collect();
        Ok(Scan {
            log: self,
            bound: Some(bound),
            segments: segments.into_iter(),
            start,
            current: None,
        })
    }

    /// Removes a record for good: its bytes are zeroed (the frame keeps
    /// its length, marked erased, so scans step over it); with `sync`, made
    /// durable before this returns (otherwise the caller syncs).
    ///
    /// # Errors
    /// [`Error::SyncFailed`] when the segment cannot be written.
    pub fn erase(&self, pointer: Pointer, sync: bool) -> Result<()> {
        let path = self.path(pointer.segment);
        let failed = |e: std::io::Error| {
            Error::SyncFailed(Arc::new(std::io::Error::new(
                e.kind(),
                format!("erasing a record in {}: {e}", path.display()),
            )))
        };
        let file = OpenOptions::new().write(true).open(&path).map_err(failed)?;
        let mut frame = vec![0u8; FRAME_HEAD as usize + pointer.len as usize];
        frame[..4].copy_from_slice(&(pointer.len | ERASED).to_le_bytes());
        file.write_all_at(&frame, pointer.offset).map_err(failed)?;
        if sync {
            file.sync_data().map_err(failed)?;
        }
        Ok(())
    }
}

/// A frame met by [`RecordLog::scan`].
pub struct Frame {
    /// Where it is.
    pub pointer: Pointer,
    /// The record, or why it cannot be read.
    pub record: std::result::Result<Vec<u8>, String>,
}

/// The iterator of [`RecordLog::scan`] and [`RecordLog::scan_from`].
pub struct Scan<'a> {
    log: &'a RecordLog,
    /// Where to stop.
    bound: Option<Tail>,
    segments: std::vec::IntoIter<u64>,
    /// Where to begin in the first segment.
    start: Option<Pointer>,
    current: Option<(u64, u64, u64, BufReader<File>)>,
}

impl Iterator for Scan<'_> {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let segment = self.segments.next()?;
                let path = self.log.path(segment);
                let mut file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) => return Some(Err(io(&path, "reading the record log", e))),
                };
                let end = match self.bound {
                    Some(tail) if tail.segment == segment => tail.end,
                    _ => match file.metadata() {
                        Ok(meta) => meta.len(),
                        Err(e) => return Some(Err(io(&path, "reading the record log", e))),
                    },
                };
                let offset = match self.start.take() {
                    Some(start) if start.segment == segment => start.offset,
                    _ => 0,
                };
                if offset > 0 {
                    use std::io::Seek;
                    if let Err(e) = file.seek(std::io::SeekFrom::Start(offset)) {
                        return Some(Err(io(&path, "reading the record log", e)));
                    }
                }
                self.current = Some((
                    segment,
                    offset,
                    end,
                    BufReader::with_capacity(256 * 1024, file),
                ));
            }
            let (segment, offset, end, reader) = self.current.as_mut().expect("set above");
            if *offset + FRAME_HEAD > *end {
                self.current = None;
                continue;
            }
            let mut head = [0u8; FRAME_HEAD as usize];
            if let Err(e) = reader.read_exact(&mut head) {
                let path = self.log.path(*segment);
                return Some(Err(io(&path, "reading the record log", e)));
            }
            let raw_len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
            let len = raw_len & !ERASED;
            let pointer = Pointer {
                segment: *segment,
                offset: *offset,
                len,
            };
            if *offset + FRAME_HEAD + u64::from(len) > *end {
                // A length that runs past the end: the rest of the segment
                // cannot be framed.
                *offset = *end;
                return Some(Ok(Frame {
                    pointer,
                    record: Err(format!(
                        "a frame of {len} bytes runs past the segment's end"
                    )),
                }));
            }
            let mut record = vec![0u8; len as usize];
            if let Err(e) = reader.read_exact(&mut record) {
                let path = self.log.path(*segment);
                return Some(Err(io(&path, "reading the record log", e)));
            }
            *offset += FRAME_HEAD + u64::from(len);
            if raw_len & ERASED != 0 {
                continue;
            }
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
            let record = if crc32fast::hash(&record) == crc {
                Ok(record)
            } else {
                Err("the record does not match its checksum".into())
            };
            return Some(Ok(Frame { pointer, record }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_read_back_scanned_and_erased() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), None).unwrap();
        let mut batch = log.begin_batch(1);
        let a = batch.push(b"first record");
        let b = batch.push(b"second");
        log.write(&batch).unwrap();
        log.committed(&batch);
        assert_eq!(log.read(a).unwrap(), b"first record");
        assert_eq!(log.read(b).unwrap(), b"second");
        let scanned: Vec<_> = log
            .scan()
            .unwrap()
            .map(|f| f.unwrap().record.unwrap())
            .collect();
        assert_eq!(scanned, [b"first record".to_vec(), b"second".to_vec()]);

        log.erase(a, true).unwrap();
        assert!(log.read(a).is_err());
        let scanned: Vec<_> = log.scan().unwrap().map(|f| f.unwrap().pointer).collect();
        assert_eq!(scanned, [b], "an erased frame is stepped over");
    }

    #[test]
    fn opening_cuts_off_what_was_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), None).unwrap();
        let mut batch = log.begin_batch(1);
        let kept = batch.push(b"committed");
        log.write(&batch).unwrap();
        log.committed(&batch);
        let tail = log.tail().unwrap();
        let mut lost = log.begin_batch(2);
        lost.push(b"written, never committed");
        log.write(&lost).unwrap();
        drop(log);
        // A segment started by an uncommitted batch goes too.
        std::fs::write(dir.path().join("records").join(segment_name(99)), b"x").unwrap();

        let log = RecordLog::open(dir.path(), Some(tail)).unwrap();
        let scanned: Vec<_> = log.scan().unwrap().map(|f| f.unwrap().pointer).collect();
        assert_eq!(scanned, [kept]);
        assert!(!dir.path().join("records").join(segment_name(99)).exists());
        let len = std::fs::metadata(dir.path().join("records").join(segment_name(1)))
            .unwrap()
            .len();
        assert_eq!(len, tail.end);
    }

    #[test]
    fn a_damaged_frame_is_an_error_not_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), None).unwrap();
        let mut batch = log.begin_batch(7);
        let a = batch.push(b"some record bytes");
        log.write(&batch).unwrap();
        log.committed(&batch);
        let path = dir.path().join("records").join(segment_name(7));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let log = RecordLog::open(dir.path(), log.tail()).unwrap();
        assert!(log.read(a).unwrap_err().to_string().contains("checksum"));
        let frame = log.scan().unwrap().next().unwrap().unwrap();
        assert!(frame.record.is_err());
    }
}
