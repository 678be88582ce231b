//! `--id-map FILE`: the old id → new id of every message the server
//! confirmed (imported, or imported before), one JSON object per line in
//! file order: `{"line":12,"oldId":"vendor-1","messageUid":7299...,
//! "messageUidStr":"7299..."}` (`line` is the line number in the import
//! file). Written batch by batch and flushed after each, so after a crash
//! or Ctrl-C it holds every message confirmed until then (a torn last
//! line is dropped when the file is read back): `--resume` skips the old
//! ids it lists.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

pub struct IdMapWriter {
    out: BufWriter<File>,
}

impl IdMapWriter {
    /// A new map (truncated), or with `append` the end of an existing one
    /// (its torn last line cut off first).
    pub fn open(path: &Path, append: bool) -> anyhow::Result<Self> {
        let file = if append {
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let keep = whole_lines_len(&mut f)?;
            f.set_len(keep)?;
            f.seek(SeekFrom::End(0))?;
            f
        } else {
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?
        };
        Ok(IdMapWriter {
            out: BufWriter::new(file),
        })
    }

    pub fn record(&mut self, line: usize, old_id: &str, new_id: u64) -> anyhow::Result<()> {
        let entry = json!({
            "line": line,
            "oldId": old_id,
            "messageUid": new_id,
            "messageUidStr": new_id.to_string(),
        });
        writeln!(self.out, "{entry}")?;
        Ok(())
    }

    /// After each batch: what is written survives the process.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Bytes of `f` up to and including its last newline.
fn whole_lines_len(f: &mut File) -> anyhow::Result<u64> {
    let mut len = 0u64;
    let mut reader = BufReader::new(&mut *f);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok(len);
        }
        len += n as u64;
    }
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "oldId")]
    old_id: String,
}

/// The old ids an existing map lists (none if there is no file).
pub fn confirmed(path: &Path) -> anyhow::Result<HashSet<String>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut done = HashSet::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        // A torn last line (the process died mid-write) is not confirmed.
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            done.insert(e.old_id);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appending_cuts_a_torn_line_and_resume_reads_what_was_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.jsonl");
        let mut w = IdMapWriter::open(&path, false).unwrap();
        w.record(1, "a", 10).unwrap();
        w.record(3, "b\"q", 11).unwrap();
        w.flush().unwrap();
        drop(w);
        // A crash in the middle of the next line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"line":4,"oldId":"c","mess"#).unwrap();
        drop(f);
        let done = confirmed(&path).unwrap();
        assert_eq!(done, HashSet::from(["a".to_string(), "b\"q".to_string()]));
        let mut w = IdMapWriter::open(&path, true).unwrap();
        w.record(4, "c", 12).unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.ends_with(
            "{\"line\":4,\"messageUid\":12,\"messageUidStr\":\"12\",\"oldId\":\"c\"}\n"
        ));
        assert_eq!(confirmed(&path).unwrap().len(), 3);
        assert!(confirmed(&dir.path().join("none")).unwrap().is_empty());
    }
}
