//! Round trips: every message survives encode → frame → decode, for
//! generated contents.

use privtel_model::{BatchId, Program};
use privtel_wire::{
    Ack, Batch, Connection, EnrichQuery, Hello, Message, Rejection, Welcome, decode_frame, encode_frame,
};
use proptest::prelude::*;

fn round_trip(msg: &Message) -> Result<(), TestCaseError> {
    let frame = msg.to_frame(2, false).unwrap();
    let mut bytes = Vec::new();
    encode_frame(&frame, privtel_wire::DEFAULT_MAX_PAYLOAD, &mut bytes).unwrap();
    prop_assert_eq!(bytes.len(), frame.payload.len() + privtel_wire::HEADER_LEN);
    let (back, used) = decode_frame(&bytes, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
    prop_assert_eq!(used, bytes.len());
    let decoded = Message::from_frame(&back, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
    prop_assert_eq!(&decoded, msg);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 64 } else { 512 }, ..ProptestConfig::default() })]

    #[test]
    fn batches(program in privtel_testkit::program(), id in any::<u128>(), seq in any::<u64>(), records in prop::collection::vec(privtel_testkit::record(), 0..20), policy_hash in any::<[u8; 32]>(), skipped in any::<u64>()) {
        round_trip(&Message::Batch(Batch { program, batch_id: BatchId::from_u128(id), first_seq: seq, records, skipped, policy_hash }))?;
    }

    #[test]
    fn hellos_and_welcomes(customer in privtel_testkit::customer_id(), device in privtel_testkit::device_id(), v in any::<u32>(), hw in any::<u64>(), on in prop::collection::vec(any::<bool>(), 7), stream in any::<u64>()) {
        let consent = Program::ALL.iter().copied().zip(on).collect();
        round_trip(&Message::Hello(Hello::new("x", customer, device, consent, v).with_stream(stream)))?;
        round_trip(&Message::Welcome(Welcome::new(2, hw)))?;
    }

    #[test]
    fn acks(id in any::<u128>(), up_to in any::<u64>(), rej in prop::collection::vec((any::<u64>(), any::<u16>(), "\\PC{0,20}", any::<bool>()), 0..5), after in prop::option::of(any::<u64>())) {
        let rejections = rej.into_iter().map(|(seq, code, reason, retryable)| Rejection { seq, code: privtel_wire::RejectCode(code), reason, retryable }).collect();
        round_trip(&Message::Ack(Ack { batch_id: BatchId::from_u128(id), accepted_up_to: up_to, rejections, retry_after_ms: after }))?;
    }

    #[test]
    fn enrichment(binaries in prop::collection::vec(privtel_testkit::digest(), 0..10), domains in prop::collection::vec(privtel_testkit::domain(), 0..10), id in any::<u64>(), verdicts in prop::collection::vec(privtel_testkit::binary_verdict(), 0..10), dv in prop::collection::vec(privtel_testkit::domain_verdict(), 0..10)) {
        round_trip(&Message::EnrichQuery(EnrichQuery::Direct { query_id: id, binaries: binaries.clone(), domains: domains.clone() }))?;
        let query = privtel_wire::private_query(id, &binaries, &domains, 2);
        round_trip(&Message::EnrichQuery(query.clone()))?;
        let mut index = privtel_wire::VerdictIndex::new(4, [1; 32]);
        verdicts.into_iter().for_each(|v| index.add_binary(v));
        dv.into_iter().for_each(|v| index.add_domain(v));
        round_trip(&Message::EnrichAnswer(index.answer(&query).unwrap()))?;
    }
}

#[test]
fn every_sample_round_trips_and_frames_are_small() {
    for (name, msg) in super::samples() {
        let frame = msg.to_frame(2, false).unwrap();
        let mut bytes = Vec::new();
        encode_frame(&frame, privtel_wire::DEFAULT_MAX_PAYLOAD, &mut bytes).unwrap();
        assert!(bytes.len() - frame.payload.len() <= 24, "{name}: frame overhead");
        let (back, _) = decode_frame(&bytes, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(Message::from_frame(&back, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap(), msg, "{name}");
    }
}

#[test]
fn negotiation_picks_the_highest_common_version_and_refuses_none() {
    // Both sides in memory: the client's hello and the server's reply.
    let hello = match &super::samples()[0].1 {
        Message::Hello(h) => h.clone(),
        _ => unreachable!(),
    };
    let mut to_server = Vec::new();
    Connection::new(&mut to_server).send(&Message::Hello(hello.clone())).unwrap();
    let mut server = Connection::new(Duplex { input: to_server.as_slice(), output: Vec::new() });
    let got = server.server_handshake(|_, v| Welcome::new(v, 0)).unwrap();
    assert_eq!(got, hello);
    assert_eq!(server.version(), Some(2));

    let mut old = hello;
    old.versions = vec![0];
    let mut to_server = Vec::new();
    Connection::new(&mut to_server).send(&Message::Hello(old)).unwrap();
    let mut server = Connection::new(Duplex { input: to_server.as_slice(), output: Vec::new() });
    let err = server.server_handshake(|_, v| Welcome::new(v, 0)).unwrap_err();
    assert_eq!(err.to_string(), "no common protocol version: we speak [2], the peer [0]");
    // The refusal went out as an Error message.
    let reply = Connection::new(server.into_inner().output.as_slice()).recv().unwrap();
    assert!(matches!(reply, Message::Error(e) if e.code == privtel_wire::ErrorCode::UnsupportedVersion));
}

#[test]
fn unknown_kinds_are_skipped_after_negotiation_only() {
    let mut bytes = Vec::new();
    let unknown = privtel_wire::Frame::new(2, 200, 0, vec![1, 2, 3]);
    encode_frame(&unknown, 1 << 20, &mut bytes).unwrap();
    Connection::new(&mut bytes)
        .send(&Message::Goodbye(privtel_wire::Goodbye { reason: "bye".into() }))
        .unwrap();
    // Before negotiation: an error naming the kind.
    let err = Connection::new(bytes.as_slice()).recv().unwrap_err();
    assert_eq!(err.to_string(), "unknown message kind 200");
    // After: skipped, and the next message comes through.
    let mut welcome = Vec::new();
    Connection::new(&mut welcome).send(&Message::Welcome(Welcome::new(2, 0))).unwrap();
    let input = [welcome, bytes].concat();
    let mut client = Connection::new(Duplex { input: input.as_slice(), output: Vec::new() });
    client
        .client_handshake(&match &super::samples()[0].1 {
            Message::Hello(h) => h.clone(),
            _ => unreachable!(),
        })
        .unwrap();
    assert!(matches!(client.recv().unwrap(), Message::Goodbye(_)));
    assert_eq!(client.skipped(), 1);
}

/// Reads from one buffer, writes to another.
pub(crate) struct Duplex<'a> {
    pub(crate) input: &'a [u8],
    pub(crate) output: Vec<u8>,
}

impl std::io::Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "lz4")]
#[test]
fn compressed_frames_round_trip_and_bombs_are_refused() {
    let msg = &super::samples()[2].1;
    let mut wire = Vec::new();
    Connection::new(&mut wire).with_compression(true).send(msg).unwrap();
    let (frame, _) = decode_frame(&wire, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
    assert_eq!(frame.flags, privtel_wire::FLAG_LZ4);
    assert!(frame.payload.len() < msg.encode_payload().unwrap().len(), "compression shrinks a batch");
    assert_eq!(&Connection::new(wire.as_slice()).recv().unwrap(), msg);
    // A compressed payload claiming 4 GiB once decompressed: refused from
    // its size prefix, before allocating.
    let mut bomb = u32::MAX.to_le_bytes().to_vec();
    bomb.extend_from_slice(&[0u8; 16]);
    let frame = privtel_wire::Frame::new(1, 9, privtel_wire::FLAG_LZ4, bomb);
    let err = Message::from_frame(&frame, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err();
    assert!(matches!(err, privtel_wire::Error::TooLarge { .. }), "{err}");
    // Within the frame limit, but more than MAX_LZ4_EXPANSION times its
    // bytes (5 bytes claiming 16 MiB): refused before allocating.
    let mut claim = (16u32 << 20).to_le_bytes().to_vec();
    claim.push(0);
    let frame = privtel_wire::Frame::new(2, 9, privtel_wire::FLAG_LZ4, claim);
    let err = Message::from_frame(&frame, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap_err();
    assert!(
        matches!(&err, privtel_wire::Error::Decode { reason, .. } if reason.contains("times the")),
        "refused from the size prefix, not by decompressing: {err}"
    );
    // A payload that would expand more than that is sent plain, and reads.
    let repetitive = Message::Goodbye(privtel_wire::Goodbye { reason: "a".repeat(100_000) });
    let mut wire = Vec::new();
    Connection::new(&mut wire).with_compression(true).send(&repetitive).unwrap();
    let (frame, _) = decode_frame(&wire, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
    assert_eq!(frame.flags, 0, "sent plain");
    assert_eq!(Connection::new(wire.as_slice()).recv().unwrap(), repetitive);
}

#[test]
fn in_place_framing_gives_the_same_bytes() {
    for (name, msg) in super::samples() {
        let mut a = Vec::new();
        encode_frame(&msg.to_frame(2, false).unwrap(), privtel_wire::DEFAULT_MAX_PAYLOAD, &mut a).unwrap();
        let mut b = vec![0xee]; // appends after what is there
        msg.encode_frame_into(2, privtel_wire::DEFAULT_MAX_PAYLOAD, &mut b).unwrap();
        assert_eq!(&b[1..], a.as_slice(), "{name}");
        let (back, used) = Message::decode_frame_from(&a, privtel_wire::DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!((back, used), (msg, a.len()), "{name}");
    }
    // Too large for the maximum: refused, and the buffer is left as it was.
    let mut out = vec![1, 2, 3];
    let batch = &super::samples()[2].1;
    assert!(batch.encode_frame_into(1, 64, &mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
}
