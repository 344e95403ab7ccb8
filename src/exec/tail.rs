//! A bounded buffer that keeps the last bytes of a stream, so a command that prints
//! gigabytes costs the runner a fixed amount of memory.

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
}
