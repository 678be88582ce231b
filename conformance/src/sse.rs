//! A minimal Server-Sent Events reader over a real HTTP connection, with a
//! bounded wait per event.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

/// One SSE event: its `id:` and `data:`.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub data: String,
}

pub struct SseReader {
    reader: BufReader<Box<dyn Read + Send + Sync + 'static>>,
}

impl SseReader {
    /// Open `GET {base}/v1/events` with the token and an optional
    /// `Last-Event-ID`. Reads time out after `per_read`.
    pub fn open(
        base: &str,
        token: &str,
        last_event_id: Option<&str>,
        per_read: Duration,
    ) -> SseReader {
        let agent = ureq::AgentBuilder::new().timeout_read(per_read).build();
        let mut req = agent
            .get(&format!("{base}/v1/events"))
            .set("authorization", &format!("Bearer {token}"))
            .set("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.set("last-event-id", id);
        }
        let resp = req.call().expect("opening the SSE stream");
        assert_eq!(resp.status(), 200);
        assert!(resp.content_type().starts_with("text/event-stream"));
        SseReader {
            reader: BufReader::new(resp.into_reader()),
        }
    }

    /// The next event, or None if none arrived within `within`.
    pub fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        let mut id = None;
        let mut data: Vec<String> = Vec::new();
        // A read that times out mid-line keeps what it got in `partial`.
        let mut partial = String::new();
        loop {
            if Instant::now() > deadline {
                return None;
            }
            match self.reader.read_line(&mut partial) {
                Ok(0) => return None,
                Ok(_) if !partial.ends_with('\n') => continue,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return None,
            }
            let full = std::mem::take(&mut partial);
            let line = full.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return Some(SseEvent {
                        id,
                        data: data.join("\n"),
                    });
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim_start().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.trim_start().to_string());
            }
        }
    }
}
