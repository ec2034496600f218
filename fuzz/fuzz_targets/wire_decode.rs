//! Arbitrary bytes as a stream of frames, and as the payload of every
//! message kind: typed errors, never a panic; whatever decodes re-encodes to
//! a value that decodes equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privtel_wire::{Connection, Message, decode_frame};

fuzz_target!(|data: &[u8]| {
    const MAX: u32 = 1 << 20;
    // As frames.
    let mut rest = data;
    while let Ok((frame, used)) = decode_frame(rest, MAX) {
        if let Ok(msg) = Message::from_frame(&frame, MAX) {
            let again = msg.to_frame(frame.version, false).expect("a decoded message encodes");
            assert_eq!(Message::from_frame(&again, MAX).expect("re-encoded decodes"), msg);
        }
        rest = &rest[used..];
    }
    let _ = Connection::new(data).recv();
    // As the payload of every kind.
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(msg) = Message::decode_payload(kind % 16, payload) {
            let again = msg.encode_payload().expect("a decoded message encodes");
            assert_eq!(Message::decode_payload(kind % 16, &again).expect("re-encoded decodes"), msg);
        }
    }
});
