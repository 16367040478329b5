//! Streams: envelopes encoded back to back and delivered in arbitrary chunks
//! come out of the decoder whole, in order, each as soon as its last byte
//! arrives, the way a socket reader uses it (append a chunk to a buffer, decode
//! until `Ok(None)`, drain the bytes used).

mod common;

use common::envelope;
use cpy2py_wire::{Envelope, FrameDecoder, Message, PeerId, encode_frame};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// A stream of `envelopes` and the offset at which each frame ends.
fn stream(envelopes: &[Envelope]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for e in envelopes {
        encode_frame(e, &mut out).unwrap();
        ends.push(out.len());
    }
    (out, ends)
}

/// Feeds `bytes` to a decoder in chunks ending at `cuts`, like a socket reader.
/// After every chunk, checks that exactly the frames fully received so far
/// have come out (`ends` are the frame end offsets).
fn read_in_chunks(bytes: &[u8], ends: &[usize], cuts: &[usize]) -> Vec<Envelope> {
    let decoder = FrameDecoder::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        buf.extend_from_slice(&bytes[start..cut]);
        start = cut;
        while let Some((envelope, used)) = decoder.decode(&buf).expect("a valid stream") {
            assert!(
                used > 0 && used <= buf.len(),
                "used {used} of {}",
                buf.len()
            );
            buf.drain(..used);
            out.push(envelope);
        }
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(out.len(), complete, "frames decoded after {cut} bytes");
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn envelopes_survive_arbitrary_splits(
        envelopes in vec(envelope(), 0..12),
        cuts in vec(any::<Index>(), 0..40),
    ) {
        let (bytes, ends) = stream(&envelopes);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        prop_assert_eq!(read_in_chunks(&bytes, &ends, &cuts), envelopes);
    }

    #[test]
    fn envelopes_survive_byte_by_byte_delivery(envelopes in vec(envelope(), 1..4)) {
        let (bytes, ends) = stream(&envelopes);
        let cuts: Vec<usize> = (0..bytes.len()).collect();
        prop_assert_eq!(read_in_chunks(&bytes, &ends, &cuts), envelopes);
    }
}

#[test]
fn one_chunk_holding_many_frames() {
    let envelopes: Vec<Envelope> = (0..1000)
        .map(|i| Envelope {
            src: PeerId(i),
            dst: PeerId(i + 1),
            message: Message::Shutdown,
        })
        .collect();
    let (bytes, ends) = stream(&envelopes);
    // Each frame: header 4, Shutdown tag 1, and src and dst as varints (one
    // byte below 128, two bytes up to 16383).
    let src_bytes = 128 + 872 * 2; // src 0..=999
    let dst_bytes = 127 + 873 * 2; // dst 1..=1000
    assert_eq!(bytes.len(), 1000 * 5 + src_bytes + dst_bytes);
    assert_eq!(read_in_chunks(&bytes, &ends, &[]), envelopes);
}

#[test]
fn decode_reads_only_the_first_frame() {
    let a = Envelope {
        src: PeerId(1),
        dst: PeerId(2),
        message: Message::Shutdown,
    };
    let b = Envelope {
        src: PeerId(3),
        dst: PeerId(4),
        message: Message::Shutdown,
    };
    let (bytes, _) = stream(&[a.clone(), b.clone()]);
    let decoder = FrameDecoder::default();
    assert_eq!(decoder.decode(&bytes).unwrap(), Some((a, 7)));
    assert_eq!(decoder.decode(&bytes[7..]).unwrap(), Some((b, 7)));
}
