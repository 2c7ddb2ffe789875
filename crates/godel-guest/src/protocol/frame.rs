//! The wire framing of the host↔guest channel.
//!
//! Every frame is a fixed 24-byte header followed by a JSON message and an
//! optional binary payload:
//!
//! ```text
//! offset size field
//!      0    4 magic "GDL" + protocol version byte (1)
//!      4    4 stream id (u32 LE); 0 is the control stream
//!      8    4 JSON length (u32 LE, ≤ MAX_JSON)
//!     12    4 payload length (u32 LE, ≤ MAX_DATA)
//!     16    4 CRC-32 (IEEE) of JSON ‖ payload
//!     20    4 CRC-32 (IEEE) of bytes 0..20
//! ```
//!
//! The header checksum makes the lengths trustworthy before anything is
//! allocated, and both lengths are bounded, so a reader never allocates more
//! than one maximal frame. [`FrameDecoder`] is push-based (feed bytes, pop
//! frames) so the same code serves the blocking guest and the async host. On a
//! bad header or body it drops one byte and scans for the next magic, so a
//! corrupted or truncated frame costs that frame, never the connection.
//!
//! A frame whose tail never comes (the writer was cut off: a snapshot
//! restore replaces the host end mid-frame) would swallow the following
//! bytes as its body. While waiting for a body the decoder therefore also
//! looks inside it for a complete, checksummed control-stream frame (stream
//! 0, small, no payload: `Sync`, `SyncAck`, `Hello`); finding one abandons the
//! partial frame, so a new peer's handshake always gets through.

use bytes::{Bytes, BytesMut};

use super::Message;

/// Magic bytes, the last one being the protocol version.
pub const MAGIC: [u8; 4] = *b"GDL\x01";
/// The protocol version carried in the magic.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
/// Largest JSON part of a frame.
pub const MAX_JSON: usize = 4 << 20;
/// Largest binary payload of a frame.
pub const MAX_DATA: usize = 1 << 20;
/// The chunk size senders use for file, tar and output payloads.
pub const CHUNK: usize = 256 << 10;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_JSON + MAX_DATA;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub stream: u32,
    pub msg: Message,
    pub data: Bytes,
}

impl Frame {
    pub fn new(stream: u32, msg: Message) -> Self {
        Frame {
            stream,
            msg,
            data: Bytes::new(),
        }
    }

    pub fn with_data(stream: u32, msg: Message, data: impl Into<Bytes>) -> Self {
        Frame {
            stream,
            msg,
            data: data.into(),
        }
    }

    /// Encode into wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let json = serde_json::to_vec(&self.msg).map_err(|e| FrameError::Encode(e.to_string()))?;
        encode_parts(self.stream, &json, &self.data)
    }
}

/// Encode a frame from already-serialised parts.
pub fn encode_parts(stream: u32, json: &[u8], data: &[u8]) -> Result<Vec<u8>, FrameError> {
    if json.len() > MAX_JSON {
        return Err(FrameError::TooLarge {
            json: json.len(),
            data: data.len(),
        });
    }
    if data.len() > MAX_DATA {
        return Err(FrameError::TooLarge {
            json: json.len(),
            data: data.len(),
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + json.len() + data.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let mut c = Crc32::new();
    c.update(json);
    c.update(data);
    out.extend_from_slice(&c.finish().to_le_bytes());
    let hcrc = crc32(&out[..20]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(data);
    Ok(out)
}

/// Why bytes on the channel were not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("skipped {0} bytes that were not a frame")]
    Garbage(usize),
    #[error("frame header checksum mismatch")]
    BadHeader,
    #[error("frame too large (json {json} bytes, data {data} bytes)")]
    TooLarge { json: usize, data: usize },
    #[error("frame body checksum mismatch on stream {stream}")]
    BadBody { stream: u32 },
    #[error("undecodable message on stream {stream}: {error}")]
    BadMessage { stream: u32, error: String },
    #[error("a control frame interrupted a partial frame ({0} bytes dropped)")]
    Interrupted(usize),
    #[error("channel ended inside a frame ({0} bytes pending)")]
    Truncated(usize),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Largest JSON of a control-stream frame recognised inside a pending body.
const MAX_CONTROL_JSON: usize = 4096;

/// Push-based, resynchronising frame decoder.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    /// Where the search for an interrupting control frame resumes.
    scanned: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes. Call [`FrameDecoder::next_frame`] until it returns `None`.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Forget buffered bytes (the peer reconnected). Returns how many were dropped.
    pub fn reset(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        self.scanned = 0;
        n
    }

    fn consume(&mut self, n: usize) -> BytesMut {
        self.scanned = 0;
        self.buf.split_to(n)
    }

    /// Position of a complete control frame inside the pending bytes.
    fn find_control_frame(&mut self) -> Option<usize> {
        let mut i = self.scanned.max(1);
        while let Some(off) = find_magic(&self.buf[i..]) {
            let p = i + off;
            match control_frame_at(&self.buf[p..]) {
                Some(true) => return Some(p),
                None => {
                    self.scanned = p;
                    return None;
                }
                Some(false) => i = p + 1,
            }
        }
        self.scanned = self.buf.len().saturating_sub(MAGIC.len() - 1).max(1);
        None
    }

    /// The end of the channel: an error if a partial frame is pending.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        match self.reset() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }

    /// The next complete frame, an error describing skipped bytes, or `None`
    /// when more bytes are needed. Never blocks, never allocates beyond one frame.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        // 1. align on the magic
        match find_magic(&self.buf) {
            Some(0) => {}
            Some(i) => {
                let _ = self.consume(i);
                return Some(Err(FrameError::Garbage(i)));
            }
            None => {
                // keep a possible magic prefix at the end
                let keep = magic_prefix_len(&self.buf);
                let drop = self.buf.len() - keep;
                if drop == 0 {
                    return None;
                }
                let _ = self.consume(drop);
                return Some(Err(FrameError::Garbage(drop)));
            }
        }
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        // 2. the header
        let h = &self.buf[..HEADER_LEN];
        let hcrc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
        if crc32(&h[..20]) != hcrc {
            let _ = self.consume(1);
            return Some(Err(FrameError::BadHeader));
        }
        let stream = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let jlen = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let dlen = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        let bcrc = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        if jlen > MAX_JSON || dlen > MAX_DATA {
            let _ = self.consume(1);
            return Some(Err(FrameError::TooLarge {
                json: jlen,
                data: dlen,
            }));
        }
        let total = HEADER_LEN + jlen + dlen;
        if self.buf.len() < total {
            if let Some(p) = self.find_control_frame() {
                let _ = self.consume(p);
                return Some(Err(FrameError::Interrupted(p)));
            }
            self.buf.reserve(total - self.buf.len());
            return None;
        }
        // 3. the body
        let body = &self.buf[HEADER_LEN..total];
        if crc32(body) != bcrc {
            let _ = self.consume(1);
            return Some(Err(FrameError::BadBody { stream }));
        }
        let mut frame = self.consume(total).freeze();
        let _ = frame.split_to(HEADER_LEN);
        let json = frame.split_to(jlen);
        let data = frame;
        Some(
            serde_json::from_slice::<Message>(&json)
                .map(|msg| Frame { stream, msg, data })
                .map_err(|e| FrameError::BadMessage {
                    stream,
                    error: e.to_string(),
                }),
        )
    }
}

/// Whether `b` starts with a complete, valid control-stream frame without
/// payload; `None` when more bytes are needed to tell.
fn control_frame_at(b: &[u8]) -> Option<bool> {
    if b.len() < HEADER_LEN {
        return None;
    }
    let le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if crc32(&b[..20]) != le(20) || le(4) != 0 || le(12) != 0 {
        return Some(false);
    }
    let jlen = le(8) as usize;
    if jlen > MAX_CONTROL_JSON {
        return Some(false);
    }
    let body = b.get(HEADER_LEN..HEADER_LEN + jlen)?;
    Some(crc32(body) == le(16))
}

fn find_magic(buf: &[u8]) -> Option<usize> {
    buf.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// Length of the longest suffix of `buf` that is a proper prefix of the magic.
fn magic_prefix_len(buf: &[u8]) -> usize {
    (1..MAGIC.len())
        .rev()
        .find(|&k| buf.len() >= k && buf[buf.len() - k..] == MAGIC[..k])
        .unwrap_or(0)
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Incremental CRC-32 (IEEE 802.3, as zlib).
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    pub fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }
    pub fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// CRC-32 of one slice.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(stream: u32, nonce: u64) -> Frame {
        Frame::new(stream, Message::Ping { nonce })
    }

    fn drain(d: &mut FrameDecoder) -> (Vec<Frame>, Vec<FrameError>) {
        let mut frames = Vec::new();
        let mut errs = Vec::new();
        while let Some(r) = d.next_frame() {
            match r {
                Ok(f) => frames.push(f),
                Err(e) => errs.push(e),
            }
        }
        (frames, errs)
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let f = Frame::with_data(7, Message::Data, Bytes::from_static(&[0, 1, 2, 255]));
        let wire = f.encode().unwrap();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b));
            while let Some(r) = d.next_frame() {
                got.push(r.unwrap());
            }
        }
        assert_eq!(got, vec![f]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn garbage_before_a_frame_is_skipped() {
        let mut d = FrameDecoder::new();
        d.feed(b"READY up=1.23\nGD");
        d.feed(&ping(0, 1).encode().unwrap());
        let (frames, errs) = drain(&mut d);
        assert_eq!(frames, vec![ping(0, 1)]);
        assert!(matches!(errs[..], [FrameError::Garbage(_), ..]));
    }

    #[test]
    fn corrupted_body_is_reported_and_the_next_frame_survives() {
        let mut bad = ping(3, 42).encode().unwrap();
        let last = bad.len() - 2;
        bad[last] ^= 0x40;
        let mut d = FrameDecoder::new();
        d.feed(&bad);
        d.feed(&ping(4, 43).encode().unwrap());
        let (frames, errs) = drain(&mut d);
        assert_eq!(frames, vec![ping(4, 43)]);
        assert!(errs.contains(&FrameError::BadBody { stream: 3 }));
    }

    #[test]
    fn corrupted_header_is_reported() {
        let mut bad = ping(3, 42).encode().unwrap();
        bad[9] ^= 0xFF; // json length
        let mut d = FrameDecoder::new();
        d.feed(&bad);
        d.feed(&ping(5, 1).encode().unwrap());
        let (frames, errs) = drain(&mut d);
        assert_eq!(frames, vec![ping(5, 1)]);
        assert_eq!(errs[0], FrameError::BadHeader);
    }

    #[test]
    fn truncated_frame_then_a_new_frame_resyncs() {
        // A frame cut short (the peer went away mid-write) followed by a full one.
        let whole = Frame::with_data(9, Message::Data, vec![7u8; 1000])
            .encode()
            .unwrap();
        let mut d = FrameDecoder::new();
        d.feed(&whole[..500]);
        assert!(d.next_frame().is_none(), "waits for the rest");
        // The following frames fill the claimed length, fail the body check,
        // and the decoder finds the real frames inside.
        for n in 0..40 {
            d.feed(&ping(1, n).encode().unwrap());
        }
        let (frames, errs) = drain(&mut d);
        assert!(errs.contains(&FrameError::BadBody { stream: 9 }));
        assert!(frames.len() >= 30, "got {}", frames.len());
        assert_eq!(frames.last().unwrap(), &ping(1, 39));
    }

    #[test]
    fn a_sync_interrupts_a_frame_whose_tail_never_comes() {
        let big = Frame::with_data(9, Message::Data, vec![1u8; 900_000])
            .encode()
            .unwrap();
        let sync = Frame::new(0, Message::Sync { nonce: 77 }).encode().unwrap();
        let mut d = FrameDecoder::new();
        d.feed(&big[..1000]);
        assert!(d.next_frame().is_none());
        // The new peer's sync arrives in two pieces.
        d.feed(&sync[..10]);
        assert!(d.next_frame().is_none());
        d.feed(&sync[10..]);
        let (frames, errs) = drain(&mut d);
        assert_eq!(errs, vec![FrameError::Interrupted(1000)]);
        assert_eq!(frames, vec![Frame::new(0, Message::Sync { nonce: 77 })]);
    }

    #[test]
    fn data_frames_inside_a_body_do_not_interrupt_it() {
        // A payload that itself contains encoded (non-control) frames.
        let inner = ping(3, 1).encode().unwrap();
        let payload: Vec<u8> = inner.iter().copied().cycle().take(50_000).collect();
        let outer = Frame::with_data(4, Message::Data, payload);
        let wire = outer.encode().unwrap();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(4096) {
            d.feed(chunk);
            while let Some(r) = d.next_frame() {
                got.push(r.unwrap());
            }
        }
        assert_eq!(got, vec![outer]);
    }

    #[test]
    fn truncated_at_end_of_channel_is_an_error() {
        let whole = ping(1, 1).encode().unwrap();
        let mut d = FrameDecoder::new();
        d.feed(&whole[..10]);
        assert!(d.next_frame().is_none());
        assert_eq!(d.finish(), Err(FrameError::Truncated(10)));
    }

    #[test]
    fn oversized_lengths_are_refused_without_allocating() {
        // A header with a valid checksum that claims 4 GiB.
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        let c = crc32(&h);
        h.extend_from_slice(&c.to_le_bytes());
        let mut d = FrameDecoder::new();
        d.feed(&h);
        assert!(matches!(
            d.next_frame(),
            Some(Err(FrameError::TooLarge { .. }))
        ));
        assert!(encode_parts(0, b"{}", &vec![0; MAX_DATA + 1]).is_err());
    }

    #[test]
    fn undecodable_json_is_reported_per_stream() {
        let wire = encode_parts(6, br#"{"op":"no_such_op"}"#, b"").unwrap();
        let mut d = FrameDecoder::new();
        d.feed(&wire);
        assert!(matches!(
            d.next_frame(),
            Some(Err(FrameError::BadMessage { stream: 6, .. }))
        ));
    }
}
