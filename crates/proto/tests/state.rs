//! The records kept in NATS KV outlive the release that wrote them: during a rolling upgrade,
//! and in every bucket a stack keeps. These bytes were written by the release that moved the
//! records into `proto/tern/v1/state.proto`; each release must still read them as they were.

use prost::Message;
use tern_proto::{ArmBudgetBucket, OperationRecord, PlanRef, VmLock};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn record() -> OperationRecord {
    OperationRecord {
        owner: "tern-failover-7#0000002a".into(),
        lease_until_ms: 1_796_600_000_000,
        jobs: [("failover".to_owned(), "job-1".to_owned())].into(),
        done_steps: vec!["failover".into()],
        outcome: String::new(),
        started_ms: 1_796_599_990_000,
        notes: [("sends.commit".to_owned(), "1".to_owned()), ("sent.commit".to_owned(), "1796600000000 1".to_owned())]
            .into(),
        terminal_events: Vec::new(),
    }
}

const RECORD: &str = "0a187465726e2d6661696c6f7665722d372330303030303032611080dcd1eda4341a110a086661696c6f76657212056a6f622d3122086661696c6f76657230f08dd1eda4343a110a0c73656e64732e636f6d6d69741201313a1e0a0b73656e742e636f6d6d6974120f313739363630303030303030302031";

#[test]
fn an_operation_record_written_by_an_earlier_release_reads_the_same() {
    let bytes = record().encode_to_vec();
    assert_eq!(hex(&bytes), RECORD, "the wire form of OperationRecord changed");
    assert_eq!(OperationRecord::decode(unhex(RECORD).as_slice()).unwrap(), record());
}

#[test]
fn budget_buckets_plan_refs_and_vm_locks_keep_their_wire_form() {
    let bucket = ArmBudgetBucket { tokens: 12.5, updated_ms: 1_796_600_000_000, paused_until_ms: 7 };
    assert_eq!(hex(&bucket.encode_to_vec()), "0900000000000029401080dcd1eda4341807");
    assert_eq!(hex(&PlanRef { plan_id: "p-1".into() }.encode_to_vec()), "0a03702d31");
    assert_eq!(hex(&VmLock { plan_id: "p-1".into() }.encode_to_vec()), "0a03702d31");
}

#[test]
fn a_record_with_a_field_this_release_does_not_know_still_reads() {
    // A later release adds field 99; this one keeps what it knows.
    let mut bytes = record().encode_to_vec();
    bytes.extend([0x9a, 0x06, 0x02, b'h', b'i']);
    assert_eq!(OperationRecord::decode(bytes.as_slice()).unwrap(), record());
}
