//! Hostile input: whatever bytes arrive, the decoder returns `Ok(Some)`,
//! `Ok(None)` or `Err` and never panics; frames over the limit are refused from
//! their header alone; a frame must be exactly one envelope; truncated frames
//! ask for more bytes. Nesting depth has its own file, `depth.rs`.

mod common;

use common::{envelope, frame, value_envelope, value_frame, with_header};
use cpy2py_wire::{
    DEFAULT_MAX_FRAME, Envelope, FrameDecoder, HEADER_LEN, Message, PeerId, Value, WireError,
    frame_length,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Decodes `buf` and checks the outcome against what its header announces:
/// `Ok(None)` only while the frame is incomplete, `FrameTooLarge` exactly when
/// the header is over the limit, and otherwise a decision on the whole frame.
fn decode_checked(
    decoder: FrameDecoder,
    buf: &[u8],
) -> Result<Option<(Envelope, usize)>, WireError> {
    let result = decoder.decode(buf);
    let announced = frame_length(buf);
    match (&result, announced) {
        (Ok(None), None) => {}
        (Ok(None), Some(len)) => {
            assert!(len <= decoder.max_frame() && buf.len() < HEADER_LEN + len)
        }
        (Err(WireError::FrameTooLarge { len, max }), Some(announced)) => {
            assert_eq!((*len, *max), (announced, decoder.max_frame()));
            assert!(announced > decoder.max_frame());
        }
        (Ok(Some((_, used))), Some(len)) => {
            assert!(len <= decoder.max_frame());
            assert_eq!(*used, HEADER_LEN + len);
        }
        (Err(_), Some(len)) if len <= decoder.max_frame() && buf.len() >= HEADER_LEN + len => {}
        _ => panic!(
            "{result:?} for {} bytes announcing {announced:?}",
            buf.len()
        ),
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        for decoder in [FrameDecoder::default(), FrameDecoder::new(64), FrameDecoder::new(0)] {
            let _ = decode_checked(decoder, &bytes);
        }
    }

    #[test]
    fn arbitrary_body_behind_a_valid_header_never_panics(body in vec(any::<u8>(), 0..4096)) {
        // With an honest header the frame is complete: the decoder must
        // decide, never ask for more bytes.
        let frame = with_header(&body);
        match decode_checked(FrameDecoder::default(), &frame) {
            Ok(Some((_, used))) => prop_assert_eq!(used, frame.len()),
            Ok(None) => prop_assert!(false, "complete frame reported as partial"),
            Err(_) => {}
        }
    }

    #[test]
    fn corrupted_frames_never_panic(
        e in envelope(),
        flips in vec((any::<Index>(), any::<u8>()), 1..8),
    ) {
        let mut frame = frame(&e);
        let body_len = frame.len() - HEADER_LEN;
        for (at, byte) in flips {
            frame[HEADER_LEN + at.index(body_len)] = byte;
        }
        match decode_checked(FrameDecoder::default(), &frame) {
            Ok(Some((_, used))) => prop_assert_eq!(used, frame.len()),
            Ok(None) => prop_assert!(false, "complete frame reported as partial"),
            Err(_) => {}
        }
    }

    #[test]
    fn truncated_frames_ask_for_more(e in envelope()) {
        let frame = frame(&e);
        for end in 0..frame.len() {
            let r = FrameDecoder::default().decode(&frame[..end]);
            prop_assert!(matches!(r, Ok(None)), "prefix of {} bytes: {:?}", end, r);
        }
    }
}

#[test]
fn empty_and_partial_headers_ask_for_more() {
    let decoder = FrameDecoder::default();
    for buf in [&[][..], &[0], &[0, 0], &[0, 0, 0], &[0xff, 0xff, 0xff]] {
        assert!(matches!(decoder.decode(buf), Ok(None)), "{buf:?}");
    }
}

#[test]
fn oversized_header_is_refused_before_the_body() {
    let decoder = FrameDecoder::default();
    for len in [DEFAULT_MAX_FRAME + 1, u32::MAX as usize] {
        let header = u32::try_from(len).unwrap().to_le_bytes();
        let r = decoder.decode(&header);
        assert!(
            matches!(r, Err(WireError::FrameTooLarge { len: l, max }) if l == len && max == DEFAULT_MAX_FRAME),
            "{len}: {r:?}"
        );
    }
}

#[test]
fn header_at_the_limit_waits_for_the_body() {
    let header = u32::try_from(DEFAULT_MAX_FRAME).unwrap().to_le_bytes();
    assert!(matches!(FrameDecoder::default().decode(&header), Ok(None)));
}

#[test]
fn default_limit_is_256_mib() {
    assert_eq!(DEFAULT_MAX_FRAME, 256 << 20);
    assert_eq!(FrameDecoder::default().max_frame(), DEFAULT_MAX_FRAME);
}

/// Body of a value frame holding a string of `n` ASCII bytes (n < 128):
/// 6 bytes of prefix, Value::Str, length, bytes.
fn string_frame(n: usize) -> Vec<u8> {
    frame(&value_envelope(Value::Str("x".repeat(n))))
}

#[test]
fn small_limit_refuses_bigger_frames() {
    let decoder = FrameDecoder::new(64);
    assert_eq!(decoder.max_frame(), 64);

    // 64-byte body: accepted.
    let fits = string_frame(56);
    assert_eq!(fits.len(), HEADER_LEN + 64);
    assert!(matches!(decoder.decode(&fits), Ok(Some((_, 68)))));

    // 65-byte body: refused from the header alone, and also as a whole.
    let too_big = string_frame(57);
    assert_eq!(too_big.len(), HEADER_LEN + 65);
    for buf in [&too_big[..HEADER_LEN], &too_big[..]] {
        let r = decoder.decode(buf);
        assert!(
            matches!(r, Err(WireError::FrameTooLarge { len: 65, max: 64 })),
            "{r:?}"
        );
    }
    // The default decoder takes it.
    assert!(matches!(
        FrameDecoder::default().decode(&too_big),
        Ok(Some((_, 69)))
    ));
}

#[test]
fn zero_limit_allows_only_empty_bodies() {
    let decoder = FrameDecoder::new(0);
    // An empty body passes the limit but is not an envelope.
    assert!(matches!(
        decoder.decode(&[0, 0, 0, 0]),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decoder.decode(&[1, 0, 0, 0]),
        Err(WireError::FrameTooLarge { len: 1, max: 0 })
    ));
}

#[test]
fn trailing_bytes_inside_a_frame_are_refused() {
    // Shutdown from 0 to 1 is [0, 1, 4]; the header claims more.
    for extra in [&[0xaa][..], &[0, 0, 0], &[4]] {
        let mut body = vec![0, 1, 4];
        body.extend_from_slice(extra);
        let r = FrameDecoder::default().decode(&with_header(&body));
        assert!(
            matches!(r, Err(WireError::TrailingBytes(n)) if n == extra.len()),
            "{extra:?}: {r:?}"
        );
    }
    // Also after a value: Value::None then a stray byte.
    let r = FrameDecoder::default().decode(&value_frame(&[0, 0]));
    assert!(matches!(r, Err(WireError::TrailingBytes(1))), "{r:?}");
}

#[test]
fn bytes_after_a_frame_belong_to_the_next_one() {
    let e = Envelope {
        src: PeerId(1),
        dst: PeerId(2),
        message: Message::Shutdown,
    };
    let mut buf = frame(&e);
    let len = buf.len();
    buf.extend_from_slice(&[0xff; 10]);
    assert_eq!(
        FrameDecoder::default().decode(&buf).unwrap(),
        Some((e, len))
    );
}

#[test]
fn malformed_bodies_are_refused() {
    let cases: &[(&str, &[u8])] = &[
        ("empty body", &[]),
        ("route only", &[0, 1]),
        ("unknown message variant", &[0, 1, 5]),
        (
            "message variant as overlong varint",
            &[0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ),
        ("peer id over u32", &[0xff, 0xff, 0xff, 0xff, 0x1f, 0, 4]),
        ("unknown op variant", &[1, 0, 1, 0, 0, 0, 0, 7]),
        ("unknown outcome", &[0, 0, 2, 0, 0, 2]),
        ("unknown value variant", &[0, 0, 2, 0, 0, 0, 16]),
        ("bool byte 2", &[0, 0, 2, 0, 0, 0, 1, 2]),
        ("option tag 2", &[0, 0, 2, 0, 0, 0, 13, 0, 0, 2]),
        ("invalid UTF-8", &[0, 0, 2, 0, 0, 0, 5, 2, 0xc3, 0x28]),
        (
            "lone surrogate in UTF-8",
            &[0, 0, 2, 0, 0, 0, 5, 3, 0xed, 0xa0, 0x80],
        ),
        (
            "string longer than the body",
            &[0, 0, 2, 0, 0, 0, 5, 10, b'a'],
        ),
        (
            "bytes longer than the body",
            &[0, 0, 2, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        (
            "list claiming 2^63 elements",
            &[
                0, 0, 2, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
        ),
        ("dict missing its value", &[0, 0, 2, 0, 0, 0, 9, 1, 0]),
        (
            "int varint of 11 bytes",
            &[
                0, 0, 2, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0x01,
            ],
        ),
        ("float cut short", &[0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0]),
        (
            "hello pickle protocol missing",
            &[0, 1, 0, 1, 1, 0, 1, 0, 0],
        ),
    ];
    for (what, body) in cases {
        let r = FrameDecoder::default().decode(&with_header(body));
        assert!(matches!(r, Err(WireError::Malformed(_))), "{what}: {r:?}");
    }
}

#[test]
fn errors_display_their_cause() {
    let too_large = FrameDecoder::new(8).decode(&[9, 0, 0, 0]).unwrap_err();
    assert_eq!(
        too_large.to_string(),
        "frame of 9 bytes exceeds the limit of 8 bytes"
    );
    let trailing = FrameDecoder::default()
        .decode(&with_header(&[0, 1, 4, 0, 0]))
        .unwrap_err();
    assert_eq!(
        trailing.to_string(),
        "malformed frame: 2 unexpected trailing bytes"
    );
}
