//! Bounded buffers that keep the first and the last bytes of a stream, so a command that
//! prints gigabytes costs the runner a fixed amount of memory and its report still shows
//! both ends (where the command said what it does, and where it said how it ended).

use std::collections::VecDeque;

/// Keeps the last `limit` bytes pushed into it and whether anything was dropped.
pub struct TailBuffer {
    limit: usize,
    buf: VecDeque<u8>,
    dropped: bool,
}

impl TailBuffer {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: VecDeque::with_capacity(limit.min(64 * 1024)),
            dropped: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.limit {
            self.dropped = true;
            &bytes[bytes.len() - self.limit..]
        } else {
            bytes
        };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.limit);
        if overflow > 0 {
            self.dropped = true;
            self.buf.drain(..overflow);
        }
        self.buf.extend(bytes);
    }

    /// The kept bytes as text (invalid UTF-8 replaced; a character cut at the front is
    /// dropped) and whether the start of the stream is missing.
    pub fn into_string(self) -> (String, bool) {
        let bytes: Vec<u8> = self.buf.into_iter().collect();
        let mut start = 0;
        if self.dropped {
            // Skip UTF-8 continuation bytes of a character cut in half.
            while start < bytes.len() && start < 4 && (bytes[start] & 0xC0) == 0x80 {
                start += 1;
            }
        }
        (
            String::from_utf8_lossy(&bytes[start..]).into_owned(),
            self.dropped,
        )
    }
}

/// Both ends of a stream: its first `head_limit` bytes, its last `tail_limit` bytes, and
/// how many bytes between them were not kept.
pub struct HeadTail {
    head_limit: usize,
    head: Vec<u8>,
    tail: TailBuffer,
    total: u64,
}

/// What a [`HeadTail`] kept, as text.
#[derive(Debug, PartialEq, Eq)]
pub struct Ends {
    /// The beginning, when the stream was too long to keep whole.
    pub head: Option<String>,
    /// The end (the whole stream when `head` is none).
    pub tail: String,
    /// Bytes between `head` and `tail` that were not kept.
    pub dropped: u64,
}

impl HeadTail {
    pub fn new(head_limit: usize, tail_limit: usize) -> Self {
        Self {
            head_limit,
            head: Vec::with_capacity(head_limit.min(64 * 1024)),
            tail: TailBuffer::new(tail_limit),
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_limit - self.head.len();
        let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(to_head);
        self.tail.push(rest);
    }

    pub fn into_ends(self) -> Ends {
        let kept = (self.head.len() + self.tail.buf.len()) as u64;
        let dropped = self.total - kept;
        if dropped == 0 {
            let mut whole = self.head;
            whole.extend(self.tail.buf);
            return Ends {
                head: None,
                tail: String::from_utf8_lossy(&whole).into_owned(),
                dropped: 0,
            };
        }
        // A character cut at the head's end is left out (and counted as dropped).
        let valid = match std::str::from_utf8(&self.head) {
            Ok(_) => self.head.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.head.len(),
        };
        let head = String::from_utf8_lossy(&self.head[..valid]).into_owned();
        let cut = (self.head.len() - valid) as u64;
        let tail_len = self.tail.buf.len();
        let (tail, _) = self.tail.into_string();
        // Bytes of a character cut at the tail's front are not shown either.
        let skipped = (tail_len - tail.len().min(tail_len)) as u64;
        Ends {
            head: Some(head),
            dropped: dropped + cut + skipped.min(3),
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_limit() {
        let mut t = TailBuffer::new(10);
        t.push(b"abc");
        t.push(b"def");
        assert_eq!(t.into_string(), ("abcdef".to_string(), false));
    }

    #[test]
    fn keeps_the_last_bytes_over_the_limit() {
        let mut t = TailBuffer::new(4);
        t.push(b"abc");
        t.push(b"defgh");
        assert_eq!(t.into_string(), ("efgh".to_string(), true));
        let mut t = TailBuffer::new(4);
        t.push(b"0123456789");
        assert_eq!(t.into_string(), ("6789".to_string(), true));
    }

    #[test]
    fn does_not_start_with_half_a_character() {
        let mut t = TailBuffer::new(5);
        t.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the cut falls between characters
        assert_eq!(t.into_string(), ("é€".to_string(), true));
        let mut t = TailBuffer::new(4);
        t.push("aé€".as_bytes()); // the cut falls inside é
        assert_eq!(t.into_string(), ("€".to_string(), true));
    }

    #[test]
    fn head_and_tail_keep_both_ends_and_count_the_middle() {
        let mut b = HeadTail::new(4, 6);
        b.push(b"0123");
        b.push(b"456789abcdefghij");
        let ends = b.into_ends();
        assert_eq!(ends.head.as_deref(), Some("0123"));
        assert_eq!(ends.tail, "efghij");
        assert_eq!(ends.dropped, 10, "20 bytes, 4 + 6 kept");

        let mut short = HeadTail::new(4, 6);
        short.push(b"0123456789");
        assert_eq!(
            short.into_ends(),
            Ends {
                head: None,
                tail: "0123456789".into(),
                dropped: 0
            },
            "what fits is kept whole"
        );
    }

    #[test]
    fn characters_cut_at_either_end_are_not_shown_but_counted() {
        let mut b = HeadTail::new(4, 4);
        // "abc" + "é" (2 bytes: the head ends inside it) + 8 x "x" + "é" + "yz"
        b.push("abcé".as_bytes());
        b.push(b"xxxxxxxx");
        b.push("éyz".as_bytes());
        let ends = b.into_ends();
        assert_eq!(ends.head.as_deref(), Some("abc"));
        assert_eq!(ends.tail, "éyz");
        let total = "abcéxxxxxxxxéyz".len() as u64;
        assert_eq!(ends.dropped, total - 3 - "éyz".len() as u64);
    }
}
