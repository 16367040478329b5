//! Frame encoding and the incremental decoder.

use crate::bytes::{Bytes, Lend, Owner, claim_splice, with_backing, with_splicing};
use crate::ids::PeerId;
use crate::message::Envelope;
use postcard::ser_flavors::Flavor;
use std::sync::Arc;

/// Bytes of the length header in front of every frame.
pub const HEADER_LEN: usize = 4;

/// Default limit on a frame's body: 256 MiB. Frames claiming more are refused
/// before anything is allocated for them.
pub const DEFAULT_MAX_FRAME: usize = 256 << 20;

/// Why bytes could not be encoded or decoded. After a decode error the stream
/// is out of sync and the connection must be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame announces (or would need) more bytes than the limit allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced or required body length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The frame body is not a valid envelope.
    #[error("malformed frame: {0}")]
    Malformed(#[source] postcard::Error),
    /// The envelope ended before the frame did.
    #[error("malformed frame: {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A buffer given as one whole frame holds less than its header announces.
    #[error("incomplete frame: {len} of {needed} bytes")]
    Incomplete {
        /// Bytes present, header included.
        len: usize,
        /// Bytes the header announces, header included.
        needed: usize,
    },
    /// A value nests deeper than [`crate::Value::MAX_DEPTH`].
    #[error("malformed frame: values nested deeper than {0}")]
    TooDeep(usize),
    /// A buffer's place in the sender's arena cannot be handed over (see
    /// [`crate::ArenaResolver`]).
    #[error("malformed frame: {0}")]
    Arena(String),
}

/// A postcard flavor that appends to a borrowed `Vec`, so one buffer can hold
/// several frames and large byte strings are copied with one `memcpy`.
struct AppendVec<'a>(&'a mut Vec<u8>);

impl Flavor for AppendVec<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A large byte string left out of a frame by [`encode_frame_vectored`]: its
/// bytes belong at offset `at` of the output buffer, before the byte there.
#[derive(Clone, Debug)]
pub struct Splice {
    /// Offset in the output buffer where the bytes go.
    pub at: usize,
    /// The bytes, shared with the value they came from.
    pub bytes: Bytes,
}

/// A postcard flavor like [`AppendVec`] that leaves large byte strings offered
/// by [`Bytes`] out of the buffer and lists them as [`Splice`]s.
struct SpliceVec<'a> {
    out: &'a mut Vec<u8>,
    splices: &'a mut Vec<Splice>,
    spliced: usize,
}

impl Flavor for SpliceVec<'_> {
    type Output = usize;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.out.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() >= Bytes::SHARE_MIN {
            if let Some(bytes) = claim_splice(data) {
                self.spliced += bytes.len();
                self.splices.push(Splice {
                    at: self.out.len(),
                    bytes,
                });
                return Ok(());
            }
        }
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.spliced)
    }
}

/// Appends `envelope` as one frame to `out` like [`encode_frame`], except that
/// byte strings of [`Bytes::SHARE_MIN`] bytes or more are not copied: they are
/// appended to `splices`, to be written between the pieces of `out` (a
/// vectored write). Returns the whole frame's length.
///
/// On error `out` and `splices` are left as they were.
pub fn encode_frame_vectored(
    envelope: &Envelope,
    out: &mut Vec<u8>,
    splices: &mut Vec<Splice>,
) -> Result<usize, WireError> {
    let start = out.len();
    let first_splice = splices.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let flavor = SpliceVec {
        out: &mut *out,
        splices: &mut *splices,
        spliced: 0,
    };
    let result = with_splicing(|| postcard::serialize_with_flavor(envelope, flavor));
    let spliced = match result {
        Ok(spliced) => spliced,
        Err(e) => {
            out.truncate(start);
            splices.truncate(first_splice);
            return Err(WireError::Malformed(e));
        }
    };
    let body = out.len() - start - HEADER_LEN + spliced;
    let Ok(len) = u32::try_from(body) else {
        out.truncate(start);
        splices.truncate(first_splice);
        return Err(WireError::FrameTooLarge {
            len: body,
            max: u32::MAX as usize,
        });
    };
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(HEADER_LEN + body)
}

/// Appends `envelope` as one frame (length header and body) to `out`.
///
/// On error `out` is left as it was.
pub fn encode_frame(envelope: &Envelope, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = postcard::serialize_with_flavor(envelope, AppendVec(out)) {
        out.truncate(start);
        return Err(WireError::Malformed(e));
    }
    let body = out.len() - start - HEADER_LEN;
    let Ok(len) = u32::try_from(body) else {
        out.truncate(start);
        return Err(WireError::FrameTooLarge {
            len: body,
            max: u32::MAX as usize,
        });
    };
    out[start..start + HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The body length announced by the header at the start of `buf`, if the
/// header is complete.
pub fn frame_length(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_le_bytes(header) as usize)
}

/// Reads the source and destination of a frame body without decoding its
/// message, for forwarding.
pub fn peek_route(body: &[u8]) -> Result<(PeerId, PeerId), WireError> {
    let (route, _) =
        postcard::take_from_bytes::<(PeerId, PeerId)>(body).map_err(WireError::Malformed)?;
    Ok(route)
}

/// Splits a byte stream into envelopes. Pure: it owns no buffer and does no IO.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl FrameDecoder {
    /// A decoder refusing frame bodies longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// The configured limit on a frame body.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Checks the header at the start of `buf`: `Ok(Some(total))` gives the
    /// whole frame's length once the header is there, `Ok(None)` asks for more
    /// bytes, `Err` means the announced length is over the limit.
    pub fn check_header(&self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        match frame_length(buf) {
            None => Ok(None),
            Some(len) if len > self.max_frame => Err(WireError::FrameTooLarge {
                len,
                max: self.max_frame,
            }),
            Some(len) => Ok(Some(HEADER_LEN + len)),
        }
    }

    /// Decodes the first frame of `buf`.
    ///
    /// Returns the envelope and the number of bytes it used, `Ok(None)` if `buf`
    /// does not yet hold a whole frame, or an error if the stream is corrupt.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Envelope, usize)>, WireError> {
        let Some(total) = self.check_header(buf)? else {
            return Ok(None);
        };
        let Some(body) = buf.get(HEADER_LEN..total) else {
            return Ok(None);
        };
        Ok(Some((decode_body(body)?, total)))
    }

    /// Decodes `frame`, which holds exactly one whole frame, taking ownership of
    /// it so that byte strings of [`Bytes::SHARE_MIN`] bytes or more become
    /// views of it instead of copies. `frame` is dropped with the last view (or
    /// at once if there is none): a buffer type whose `Drop` recycles it is how
    /// a reader reuses its large buffers. It must lend the same bytes every time.
    pub fn decode_owned<B>(&self, frame: B) -> Result<Envelope, WireError>
    where
        B: Lend,
    {
        let bytes = frame.as_ref();
        let Some(total) = self.check_header(bytes)? else {
            return Err(WireError::Incomplete {
                len: bytes.len(),
                needed: HEADER_LEN,
            });
        };
        if bytes.len() < total {
            return Err(WireError::Incomplete {
                len: bytes.len(),
                needed: total,
            });
        }
        if bytes.len() > total {
            return Err(WireError::TrailingBytes(bytes.len() - total));
        }
        let frame: Owner = Arc::new(frame);
        with_backing(&frame, || decode_body(&(*frame).as_ref()[HEADER_LEN..]))
    }
}

/// Decodes one frame body (without its header) into an envelope.
pub(crate) fn decode_body(body: &[u8]) -> Result<Envelope, WireError> {
    crate::value::depth::reset();
    let result = postcard::take_from_bytes::<Envelope>(body);
    if crate::value::depth::exceeded() {
        return Err(WireError::TooDeep(crate::Value::MAX_DEPTH));
    }
    if let Some(why) = crate::shared::take_failure() {
        return Err(WireError::Arena(why));
    }
    let (envelope, rest) = result.map_err(WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(envelope)
}
