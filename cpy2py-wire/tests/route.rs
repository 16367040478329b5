//! `peek_route`: the master reads the source and destination of a frame body
//! without decoding its message, for forwarding between twins.

mod common;

use common::{envelope, frame, with_header};
use cpy2py_wire::{FrameDecoder, HEADER_LEN, PeerId, WireError, peek_route};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn peek_route_reads_src_and_dst(e in envelope()) {
        let bytes = frame(&e);
        let body = &bytes[HEADER_LEN..];
        prop_assert_eq!(peek_route(body).unwrap(), (e.src, e.dst));
    }

    #[test]
    fn peek_route_ignores_the_message(
        src in any::<u32>(),
        dst in any::<u32>(),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // A forwarder must not care what follows the route, even garbage
        // that the destination will refuse.
        let mut body = frame(&cpy2py_wire::Envelope {
            src: PeerId(src),
            dst: PeerId(dst),
            message: cpy2py_wire::Message::Shutdown,
        })[HEADER_LEN..].to_vec();
        body.pop(); // drop the Shutdown tag
        body.extend_from_slice(&junk);
        prop_assert_eq!(peek_route(&body).unwrap(), (PeerId(src), PeerId(dst)));
    }

    #[test]
    fn peek_route_never_panics(body in proptest::collection::vec(any::<u8>(), 0..32)) {
        let _ = peek_route(&body);
    }
}

#[test]
fn peek_route_of_a_known_body() {
    // src 300 (0xac 0x02), dst 2, Message::Shutdown.
    assert_eq!(
        peek_route(&[0xac, 0x02, 2, 4]).unwrap(),
        (PeerId(300), PeerId(2))
    );
}

#[test]
fn peek_route_of_a_message_the_decoder_refuses() {
    // Message variant 200 does not exist: the decoder refuses the frame, but
    // the route is still readable.
    let body = [5, 6, 200, 1];
    assert!(matches!(
        FrameDecoder::default().decode(&with_header(&body)),
        Err(WireError::Malformed(_))
    ));
    assert_eq!(peek_route(&body).unwrap(), (PeerId(5), PeerId(6)));
}

#[test]
fn peek_route_refuses_short_bodies() {
    for body in [
        &[][..],
        &[1],
        &[0x80],
        &[1, 0x80],
        &[0x80, 0x80, 0x80, 0x80, 0x80, 1],
    ] {
        let r = peek_route(body);
        assert!(matches!(r, Err(WireError::Malformed(_))), "{body:?}: {r:?}");
    }
}
