//! Docker's multiplexed stream framing: an 8-byte header `[stream, 0, 0, 0, len(u32 BE)]` then `len` bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Stream numbers used in frame headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamType {
    /// Standard input (written by attach when a client echoes stdin).
    Stdin = 0,
    /// Standard output.
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
    /// System messages (used by exec for errors).
    System = 3,
}

impl StreamType {
    /// Maps a header byte to a stream type.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => StreamType::Stdin,
            1 => StreamType::Stdout,
            2 => StreamType::Stderr,
            3 => StreamType::System,
            _ => return None,
        })
    }
}

/// Encodes one frame.
pub fn encode(stream: StreamType, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + data.len());
    b.extend_from_slice(&[stream as u8, 0, 0, 0]);
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b.freeze()
}

/// Incremental decoder: feed bytes, take complete frames.
#[derive(Debug, Default)]
pub struct Demuxer {
    buf: BytesMut,
}

impl Demuxer {
    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame, if any. An unknown stream byte is an error.
    pub fn next_frame(&mut self) -> Result<Option<(StreamType, Bytes)>, String> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let st = StreamType::from_u8(self.buf[0])
            .ok_or_else(|| format!("unrecognized stream: {}", self.buf[0]))?;
        self.buf.advance(8);
        Ok(Some((st, self.buf.split_to(len).freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut wire = encode(StreamType::Stdout, b"hello").to_vec();
        wire.extend_from_slice(&encode(StreamType::Stderr, b"oops"));
        let mut d = Demuxer::default();
        let mut got = vec![];
        for chunk in wire.chunks(3) {
            d.feed(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (StreamType::Stdout, Bytes::from_static(b"hello")));
        assert_eq!(got[1], (StreamType::Stderr, Bytes::from_static(b"oops")));
    }
}
