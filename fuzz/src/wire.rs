//! Harnesses of the frame decoder: one frame, and a stream read in chunks.

use cpy2py_wire::{
    Envelope, FrameDecoder, HEADER_LEN, WireError, encode_frame, frame_length, peek_route,
};

/// A limit small enough that fuzzed headers cross it often.
const SMALL_LIMIT: usize = 1024;

/// `wire_decode`: decodes the first frame of `data`.
///
/// Checks, beyond "no panic": `Ok(None)` only for an incomplete frame; a decoded frame
/// used exactly its header's length and routes as [`peek_route`] says; it re-encodes,
/// and that encoding decodes and re-encodes to the same bytes; a decoder with a small
/// limit refuses exactly the frames over it and otherwise agrees.
pub fn decode(data: &[u8]) {
    let decoder = FrameDecoder::default();
    let result = decoder.decode(data);
    match &result {
        Ok(None) => {
            let complete =
                frame_length(data).is_some_and(|len| data.len() >= HEADER_LEN.saturating_add(len));
            assert!(!complete, "Ok(None) for a complete frame");
        }
        Ok(Some((envelope, used))) => {
            assert_eq!(
                Some(*used),
                frame_length(data).map(|len| HEADER_LEN + len),
                "a frame used other than its announced length"
            );
            assert!(*used <= data.len());
            let route = peek_route(&data[HEADER_LEN..*used]).expect("a decoded frame has a route");
            assert_eq!(route, (envelope.src, envelope.dst));
            round_trip(&decoder, envelope);
        }
        Err(_) => {}
    }
    let small = FrameDecoder::new(SMALL_LIMIT).decode(data);
    match frame_length(data) {
        Some(len) if len > SMALL_LIMIT => assert!(
            matches!(small, Err(WireError::FrameTooLarge { .. })),
            "a frame over the limit was not refused: {small:?}"
        ),
        _ => assert_eq!(summary(&small), summary(&result)),
    }
}

/// `wire_stream`: the first 8 bytes seed the chunk sizes, the rest is the stream.
///
/// The stream is fed in chunks the way a socket reader does: append the chunk, decode
/// frames until `Ok(None)` (read more) or `Err` (the stream is corrupt: stop), drain
/// what was used. The frames found and the error must not depend on the chunking: they
/// are those of decoding the whole stream frame after frame.
pub fn stream(data: &[u8]) {
    let Some((seed, stream)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut rng = u64::from_le_bytes(*seed) | 1;
    let decoder = FrameDecoder::default();

    let mut chunked = Vec::new();
    let mut chunked_error = None;
    let mut buf = Vec::new();
    let mut pos = 0;
    'read: while pos < stream.len() {
        let n = chunk_len(&mut rng, stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        loop {
            match decoder.decode(&buf) {
                Ok(Some((envelope, used))) => {
                    chunked.push((used, encoded(&envelope)));
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    chunked_error = Some(e.to_string());
                    break 'read;
                }
            }
        }
    }

    let mut whole = Vec::new();
    let mut whole_error = None;
    let mut rest = stream;
    loop {
        match decoder.decode(rest) {
            Ok(Some((envelope, used))) => {
                whole.push((used, encoded(&envelope)));
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(e) => {
                whole_error = Some(e.to_string());
                break;
            }
        }
    }
    assert_eq!(
        chunked.len(),
        whole.len(),
        "chunking changed the frames found"
    );
    assert!(chunked == whole, "chunking changed the frames decoded");
    assert_eq!(chunked_error, whole_error, "chunking changed the error");
    if chunked_error.is_none() {
        assert_eq!(buf.as_slice(), rest, "chunking changed the bytes left over");
    }
}

/// The next chunk length, 1..=`left`: mostly small (headers split, bytes one at a
/// time), sometimes everything that is left.
fn chunk_len(rng: &mut u64, left: usize) -> usize {
    // xorshift64: deterministic for a given input, which libFuzzer needs.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let r = *rng as usize;
    let max = match r % 8 {
        0..=2 => 4,
        3..=5 => 64,
        6 => 4096,
        _ => left,
    };
    1 + (r >> 3) % max.min(left)
}

/// Re-encodes a decoded envelope and checks that the encoding is a fixed point.
fn round_trip(decoder: &FrameDecoder, envelope: &Envelope) {
    let once = encoded(envelope);
    let (again, used) = decoder
        .decode(&once)
        .expect("a re-encoded envelope decodes")
        .expect("a re-encoded envelope is a whole frame");
    assert_eq!(used, once.len());
    assert!(encoded(&again) == once, "encoding is not stable");
}

/// The frame of `envelope`. Compared as bytes: `Value::Float(NaN) != itself`.
fn encoded(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(envelope, &mut out).expect("a decoded envelope encodes");
    out
}

/// What a decode result says, for comparing two decoders.
fn summary(result: &Result<Option<(Envelope, usize)>, WireError>) -> String {
    match result {
        Ok(None) => "need more".into(),
        Ok(Some((_, used))) => format!("frame of {used}"),
        Err(e) => format!("error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds, their truncations and some byte soup pass both harnesses.
    #[test]
    fn seeds_and_truncations_pass() {
        for (target, _, bytes) in crate::seeds::all() {
            let harness = match target {
                "wire_decode" => super::decode,
                "wire_stream" => super::stream,
                _ => continue,
            };
            for cut in 0..=bytes.len() {
                harness(&bytes[..cut]);
            }
        }
        for soup in [&[0xff; 64][..], &u32::MAX.to_le_bytes(), &[0x80; 9]] {
            super::decode(soup);
            super::stream(soup);
        }
    }
}
