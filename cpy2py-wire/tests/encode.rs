//! `encode_frame`: it appends whole frames to a caller's buffer, so several
//! frames can be batched into one write, and leaves the buffer as it was when
//! it fails.

mod common;

use common::{frame, value_envelope};
use cpy2py_wire::{
    Bytes, Envelope, FrameDecoder, HEADER_LEN, Message, PeerId, Value, encode_frame, frame_length,
};

#[test]
fn frames_append_after_existing_bytes() {
    let a = Envelope {
        src: PeerId::MASTER,
        dst: PeerId(1),
        message: Message::Shutdown,
    };
    let b = value_envelope(Value::Str("second".into()));

    let mut out = b"previous".to_vec();
    encode_frame(&a, &mut out).unwrap();
    encode_frame(&b, &mut out).unwrap();

    let (fa, fb) = (frame(&a), frame(&b));
    assert_eq!(&out[..8], b"previous");
    assert_eq!(out[8..8 + fa.len()], fa[..]);
    assert_eq!(out[8 + fa.len()..], fb[..]);

    let decoder = FrameDecoder::default();
    let rest = &out[8..];
    let (first, used) = decoder.decode(rest).unwrap().unwrap();
    assert_eq!((first, used), (a, fa.len()));
    let (second, used) = decoder.decode(&rest[used..]).unwrap().unwrap();
    assert_eq!((second, used), (b, fb.len()));
}

#[test]
fn header_announces_the_body_length() {
    for n in [0, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
        let f = frame(&value_envelope(Value::Bytes(Bytes::from(vec![7; n]))));
        let body = f.len() - HEADER_LEN;
        assert_eq!(frame_length(&f), Some(body));
        assert_eq!(f[..HEADER_LEN], u32::try_from(body).unwrap().to_le_bytes());
    }
    assert_eq!(frame_length(&[1, 2, 3]), None);
    assert_eq!(frame_length(&[1, 2, 3, 4, 5]), Some(0x0403_0201));
}
