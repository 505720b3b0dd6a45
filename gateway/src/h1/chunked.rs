//! The `chunked` transfer coding (RFC 9112 §7.1), read incrementally. The engine forwards a
//! chunked body as it came, byte for byte, so the decoder's main job is to find where the body
//! ends; it also hands out the data bytes for the one case that needs them decoded (an HTTP/1.0
//! client, which cannot take chunked). Sizes, extensions and trailer lines are bounded.

/// Longest chunk-size line (size plus extensions) or trailer line. Default: 4 KiB.
const MAX_LINE: usize = 4096;
/// Most trailer bytes. Default: 16 KiB.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size.
    Size,
    /// After the size: extensions until CR LF.
    Ext,
    /// CR seen at the end of the size line.
    SizeLf,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After the data: expecting CR.
    DataCr,
    /// Expecting LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR seen at the end of a trailer line.
    TrailerLf,
    /// CR seen on the final empty line.
    EndLf,
    /// The whole body has been seen.
    Done,
}

/// Incremental chunked-body scanner.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: usize,
    line: usize,
    trailers: usize,
    /// Data bytes seen so far.
    pub data_len: u64,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk(pub &'static str);

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    /// A scanner at the start of a body.
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailers: 0,
            data_len: 0,
        }
    }

    /// True once the terminating empty line has been seen.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Scans `buf`; returns how many of its bytes belong to the body (all of them unless the
    /// body ends inside `buf`). `data` gets each run of chunk data.
    pub fn feed(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&buf[i..i + take]);
                    self.data_len += take as u64;
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size => match hex(b) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BadChunk("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                    }
                    None if self.digits == 0 => return Err(BadChunk("missing chunk size")),
                    None if b == b'\r' => self.state = State::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => self.state = State::Ext,
                    None => return Err(BadChunk("invalid chunk size")),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(BadChunk("bare LF in chunk line")),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(BadChunk("chunk extensions too long"));
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk("expected LF after chunk size"));
                    }
                    self.line = 0;
                    self.digits = 0;
                    let size = std::mem::take(&mut self.size);
                    self.state = if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(size)
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(BadChunk("expected CR after chunk data"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk("expected LF after chunk data"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    b'\n' => return Err(BadChunk("bare LF in trailers")),
                    _ => {
                        self.line = 1;
                        self.state = State::Trailer;
                        self.count_trailer()?;
                    }
                },
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(BadChunk("bare LF in trailers")),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(BadChunk("trailer line too long"));
                        }
                        self.count_trailer()?;
                    }
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(BadChunk("expected LF after trailer"));
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(BadChunk("expected LF at the end of the body"));
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), BadChunk> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(BadChunk("trailers too long"));
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(parts: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), BadChunk> {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for p in parts {
            used += c.feed(p, |d| out.extend_from_slice(d))?;
            if c.done() {
                break;
            }
        }
        Ok((out, used, c.done()))
    }

    #[test]
    fn finds_the_end_and_the_data() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (data, used, done) = decode(&[body]).expect("valid");
        assert!(done);
        assert_eq!(data, b"hello world");
        assert_eq!(&body[used..], b"NEXT");
    }

    #[test]
    fn refuses_malformed_bodies() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"ffffffffffffffff0\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert!(decode(&[bad]).is_err(), "accepted {bad:?}");
        }
    }

    proptest! {
        /// Any split of a valid body into pieces decodes the same and ends at the same byte.
        #[test]
        fn any_split_decodes_alike(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..8), cuts in proptest::collection::vec(0usize..400, 0..6)) {
            let mut body = Vec::new();
            let mut want = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
                want.extend_from_slice(c);
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let total = body.len();
            body.extend_from_slice(b"tail");
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % body.len()).collect();
            points.sort();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for p in points {
                parts.push(&body[at..p]);
                at = p;
            }
            parts.push(&body[at..]);
            let (data, used, done) = decode(&parts).expect("valid");
            prop_assert!(done);
            prop_assert_eq!(data, want);
            prop_assert_eq!(used, total);
        }
    }
}
