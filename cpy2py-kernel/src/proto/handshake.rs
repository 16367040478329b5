//! The Hello handshake, as data: what this process announces, and whether a
//! peer's first message is an acceptable Hello.

use crate::LocalInfo;
use cpy2py_wire::{Envelope, Hello, Message, PROTOCOL_VERSION, PeerId};

/// Why a peer's Hello is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first message was something else.
    #[error("the first message was not Hello")]
    NotHello,
    /// The peer speaks another protocol version.
    #[error(
        "protocol version {0} is not ours ({PROTOCOL_VERSION}); install the same cpy2py version in both interpreters"
    )]
    Version(u32),
    /// The peer claims another peer number than the one it was given.
    #[error("expected peer {expected}, got {got}")]
    WrongPeer {
        /// The number it was given.
        expected: PeerId,
        /// The number it claimed.
        got: PeerId,
    },
    /// The peer announces another twin id than the one it was started as.
    #[error("expected twin id {expected:?}, got {got:?}")]
    WrongName {
        /// The id it was started as.
        expected: String,
        /// The id it announced.
        got: String,
    },
}

/// The Hello this process (`local`, peer number `peer`, process `pid`) sends.
pub fn hello(local: &LocalInfo, peer: PeerId, pid: u32) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        peer,
        twin_id: local.name.clone(),
        pid,
        interpreter: local.interpreter.clone(),
        version: local.version.clone(),
        pickle_protocol: local.pickle_protocol,
    }
}

/// Checks a peer's first message: a Hello of our protocol version, from the
/// peer number and with the twin id we expect (when we expect one).
pub fn check_hello(
    envelope: Envelope,
    expect_peer: Option<PeerId>,
    expect_name: Option<&str>,
) -> Result<Hello, HandshakeError> {
    let Message::Hello(hello) = envelope.message else {
        return Err(HandshakeError::NotHello);
    };
    if hello.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::Version(hello.protocol));
    }
    if let Some(peer) = expect_peer {
        if hello.peer != peer || envelope.src != peer {
            return Err(HandshakeError::WrongPeer {
                expected: peer,
                got: hello.peer,
            });
        }
    }
    if let Some(name) = expect_name {
        if hello.twin_id != name {
            return Err(HandshakeError::WrongName {
                expected: name.to_owned(),
                got: hello.twin_id,
            });
        }
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(name: &str) -> LocalInfo {
        LocalInfo {
            name: name.into(),
            interpreter: "rust".into(),
            version: "1".into(),
            pickle_protocol: 5,
        }
    }

    fn from(src: PeerId, hello: Hello) -> Envelope {
        Envelope {
            src,
            dst: PeerId::MASTER,
            message: Message::Hello(hello),
        }
    }

    #[test]
    fn a_twins_hello_is_accepted_with_its_number_and_name() {
        let hello = hello(&local("pypy"), PeerId(3), 42);
        let checked = check_hello(
            from(PeerId(3), hello.clone()),
            Some(PeerId(3)),
            Some("pypy"),
        );
        assert_eq!(checked, Ok(hello));
    }

    #[test]
    fn a_hello_from_another_version_number_or_name_is_refused() {
        let mut old = hello(&local("pypy"), PeerId(3), 42);
        old.protocol = PROTOCOL_VERSION + 1;
        let refused = check_hello(from(PeerId(3), old), None, None).unwrap_err();
        assert_eq!(refused, HandshakeError::Version(PROTOCOL_VERSION + 1));
        assert!(
            refused.to_string().contains("same cpy2py version"),
            "{refused}"
        );

        let other = hello(&local("pypy"), PeerId(4), 42);
        assert_eq!(
            check_hello(from(PeerId(4), other.clone()), Some(PeerId(3)), None),
            Err(HandshakeError::WrongPeer {
                expected: PeerId(3),
                got: PeerId(4)
            })
        );
        // the envelope's sender must match too
        let mut liar = other;
        liar.peer = PeerId(3);
        assert!(check_hello(from(PeerId(4), liar), Some(PeerId(3)), None).is_err());

        let named = hello(&local("cpython"), PeerId(3), 42);
        assert!(matches!(
            check_hello(from(PeerId(3), named), Some(PeerId(3)), Some("pypy")),
            Err(HandshakeError::WrongName { .. })
        ));
    }

    #[test]
    fn anything_but_a_hello_first_is_refused() {
        let envelope = Envelope {
            src: PeerId(3),
            dst: PeerId::MASTER,
            message: Message::Shutdown,
        };
        assert_eq!(
            check_hello(envelope, None, None),
            Err(HandshakeError::NotHello)
        );
    }
}
