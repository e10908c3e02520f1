//! A service's own output: the file its process writes stdout and stderr to, in Hestia's data
//! directory (`logs/<service>.log`), size-capped with one rotation (`<service>.log.1`).
//!
//! The process writes to the file itself (no pipe into Hestia), so a backend outlives Hestia's
//! death without ever hitting a broken pipe, and an adopted backend's log simply continues.
//! Hestia follows the file into its own log, rotates it when it passes the cap (copy, then
//! truncate: the process appends, so it goes on at the new end) and serves its tail. Every line
//! Hestia reads back is [`crate::redact::scrub`]bed: configured secrets a backend prints are masked.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

/// Above this size the file is rotated to `<service>.log.1` (replacing the previous one).
pub const LOG_CAP_BYTES: u64 = 8 * 1024 * 1024;
/// How often the follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// A line longer than this is passed on in pieces (a process writing without newlines).
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Chunk size when reading a file backwards for its last lines.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The log file of one service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServiceLog {
    service_id: Arc<str>,
    path: PathBuf,
    cap: u64,
}

impl ServiceLog {
    /// `<data_dir>/logs/<service_id>.log`; with no data directory (an engine built in code, not
    /// from a config), the system's temporary directory's `hestia/`.
    pub fn new(data_dir: &Path, service_id: &str) -> ServiceLog {
        let data_dir = if data_dir.as_os_str().is_empty() {
            std::env::temp_dir().join("hestia")
        } else {
            data_dir.to_path_buf()
        };
        ServiceLog {
            service_id: Arc::from(service_id),
            path: data_dir.join("logs").join(format!("{service_id}.log")),
            cap: LOG_CAP_BYTES,
        }
    }

    /// Another size cap (tests use a small one).
    pub fn with_cap(mut self, cap: u64) -> ServiceLog {
        self.cap = cap;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The previous file, once the current one passed the cap.
    pub fn rotated_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// The file for a new process's stdout and stderr: opened for appending, created (with its
    /// directory) when missing.
    pub fn open_for_process(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }

    /// The current size of the file (0 when there is none yet).
    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `line` as it may leave Hestia: every configured secret replaced by `***`, URLs redacted.
    pub fn mask(&self, line: &str) -> String {
        crate::redact::scrubbed(line)
    }

    /// The complete lines written from `offset` on (masked), and the offset after them. A file
    /// shorter than `offset` was rotated: reading starts again at its beginning.
    pub fn read_from(&self, offset: u64) -> std::io::Result<(Vec<String>, u64)> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), 0));
            }
            Err(error) => return Err(error),
        };
        let len = file.metadata()?.len();
        let offset = if len < offset { 0 } else { offset };
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.take(len - offset).read_to_end(&mut bytes)?;
        let mut consumed = 0;
        let mut lines = Vec::new();
        let mut rest = &bytes[..];
        loop {
            match rest.iter().position(|b| *b == b'\n') {
                Some(end) if end <= MAX_LINE_BYTES => {
                    lines.push(self.line(&rest[..end]));
                    consumed += end + 1;
                    rest = &rest[end + 1..];
                }
                _ if rest.len() > MAX_LINE_BYTES => {
                    lines.push(self.line(&rest[..MAX_LINE_BYTES]));
                    consumed += MAX_LINE_BYTES;
                    rest = &rest[MAX_LINE_BYTES..];
                }
                // An unfinished line waits for its end.
                _ => break,
            }
        }
        Ok((lines, offset + consumed as u64))
    }

    fn line(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        self.mask(text.trim_end_matches('\r'))
    }

    /// The last `lines` lines (masked), reaching into the rotated file when the current one has
    /// fewer. No file yet: no lines.
    pub fn tail(&self, lines: usize) -> std::io::Result<Vec<String>> {
        let mut tail = last_lines(&self.path, lines)?;
        if tail.len() < lines {
            let mut older = last_lines(&self.rotated_path(), lines - tail.len())?;
            older.append(&mut tail);
            tail = older;
        }
        Ok(tail.iter().map(|line| self.mask(line)).collect())
    }

    /// Forwards what the process writes from `offset` on into Hestia's log, line by line, and
    /// rotates the file when it passes the cap, until `done` turns true (then reads a last time).
    pub fn follow(&self, offset: u64, mut done: watch::Receiver<bool>) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut offset = offset;
            loop {
                let finished = *done.borrow_and_update();
                offset = log.forward(offset);
                if finished {
                    return;
                }
                let _ = tokio::time::timeout(FOLLOW_POLL, done.changed()).await;
            }
        });
    }

    /// One round of following: new lines to tracing, then rotation if due.
    fn forward(&self, offset: u64) -> u64 {
        let (lines, offset) = match self.read_from(offset) {
            Ok(read) => read,
            Err(error) => {
                warn!(service = %self.service_id, path = %self.path.display(), %error, "cannot read the service's log");
                return offset;
            }
        };
        for line in lines {
            info!(service = %self.service_id, stream = "output", "{line}");
        }
        if offset > self.cap {
            return match self.rotate() {
                Ok(()) => 0,
                Err(error) => {
                    warn!(service = %self.service_id, path = %self.path.display(), %error, "cannot rotate the service's log");
                    offset
                }
            };
        }
        offset
    }

    /// Copies the file to `.1` and empties it; the process appends, so it goes on at the start.
    fn rotate(&self) -> std::io::Result<()> {
        std::fs::copy(&self.path, self.rotated_path())?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(0)
    }
}

/// The last `count` lines of the file at `path`, read backwards in chunks; none if it is missing.
fn last_lines(path: &Path, count: usize) -> std::io::Result<Vec<String>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let len = file.metadata()?.len();
    let mut start = len;
    let mut bytes: Vec<u8> = Vec::new();
    // One more newline than lines wanted: the one that ends the line before the first.
    while start > 0 && bytes.iter().filter(|b| **b == b'\n').count() <= count {
        let chunk = TAIL_CHUNK.min(start);
        start -= chunk;
        file.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0; chunk as usize];
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&bytes);
        bytes = buf;
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| line.trim_end_matches('\r').to_owned())
        .collect();
    if start > 0 && !lines.is_empty() {
        // The first line read may be the end of a longer one.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(count);
    Ok(lines.split_off(skip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn log_in(dir: &Path) -> ServiceLog {
        ServiceLog::new(dir, "svc")
    }

    #[test]
    fn the_tail_is_the_last_lines_across_the_rotation_and_masks_secrets() {
        let dir = tempfile::tempdir().unwrap();
        crate::redact::remember(["hunter2"]);
        let log = log_in(dir.path());
        std::fs::create_dir_all(log.path().parent().unwrap()).unwrap();
        std::fs::write(log.rotated_path(), "old 1\nold 2\n").unwrap();
        let mut file = log.open_for_process().unwrap();
        writeln!(file, "new 1 password=hunter2").unwrap();
        writeln!(file, "new 2").unwrap();

        assert_eq!(log.tail(1).unwrap(), vec!["new 2"]);
        assert_eq!(
            log.tail(3).unwrap(),
            vec!["old 2", "new 1 password=***", "new 2"]
        );
        assert_eq!(log.tail(10).unwrap().len(), 4);
    }

    #[test]
    fn reading_stops_at_an_unfinished_line_and_restarts_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path()).with_cap(10);
        let mut file = log.open_for_process().unwrap();
        write!(file, "one\ntw").unwrap();
        let (lines, offset) = log.read_from(0).unwrap();
        assert_eq!((lines, offset), (vec!["one".to_owned()], 4));
        writeln!(file, "o").unwrap();
        let (lines, offset) = log.read_from(offset).unwrap();
        assert_eq!((lines, offset), (vec!["two".to_owned()], 8));

        // Past the cap the follower rotates; the process goes on writing at the start.
        writeln!(file, "three").unwrap();
        assert_eq!(log.forward(offset), 0);
        assert_eq!(
            std::fs::read_to_string(log.rotated_path()).unwrap(),
            "one\ntwo\nthree\n"
        );
        writeln!(file, "four").unwrap();
        assert_eq!(log.read_from(0).unwrap().0, vec!["four"]);
    }

    #[test]
    fn a_missing_file_has_no_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path());
        assert!(log.tail(5).unwrap().is_empty());
        assert_eq!(log.read_from(0).unwrap(), (Vec::new(), 0));
    }
}
