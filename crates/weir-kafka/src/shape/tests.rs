//! The walk's schemas against `kafka-protocol`'s encoder: requests with
//! every array populated, encoded at every advertised version, must be
//! accepted and consumed to their last byte; a count that cannot fit is
//! refused before anything is allocated.

use kafka_protocol::messages::ApiKey;

use super::*;
use crate::samples::{encode_body as encode, populated, versioned};
use crate::versions::SUPPORTED;

#[test]
fn every_advertised_version_walks_to_the_last_byte() {
    let mut checked = 0;
    for api in SUPPORTED {
        for version in api.min..=api.max {
            let mut requests = vec![populated(api.key)];
            requests.extend(versioned(api.key, version));
            let mut encoded = 0;
            for request in requests {
                let Some(bytes) = encode(&request, version) else {
                    continue;
                };
                encoded += 1;
                let consumed = check_consumed(api.key, version, &bytes).unwrap_or_else(|error| {
                    panic!("{:?} v{version} refused: {error}\n{request:?}", api.key)
                });
                assert_eq!(
                    consumed,
                    bytes.len(),
                    "{:?} v{version}: the walk took {consumed} of {} bytes",
                    api.key,
                    bytes.len()
                );
                // Every strict prefix is refused: nothing is read past the end.
                for cut in 0..bytes.len() {
                    assert!(
                        check_consumed(api.key, version, &bytes[..cut]).is_err() || cut == consumed,
                        "{:?} v{version} accepted a request cut at {cut} of {}",
                        api.key,
                        bytes.len()
                    );
                }
                checked += 1;
            }
            assert!(
                encoded > 0,
                "no request of {:?} v{version} encodes",
                api.key
            );
        }
    }
    assert!(checked > 100, "only {checked} requests checked");
}

#[test]
fn a_count_that_cannot_fit_is_refused_before_decoding() {
    // Metadata v0: an array of 54,265,856 topics in 5 bytes (the reproducer
    // of kafka-protocol-rs pull request 152).
    let body = [0x03, 0x3c, 0x0c, 0x00, 0xb6];
    let error = check(ApiKey::Metadata, 0, &body).unwrap_err();
    assert!(
        error.contains("cannot fit") || error.contains("exceeds"),
        "{error}"
    );
    // A flexible count past the limit.
    let mut produce = Vec::new();
    produce.push(0); // null transactional id (compact)
    produce.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
    produce.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // 2^31 topics
    let error = check(ApiKey::Produce, 9, &produce).unwrap_err();
    assert!(
        error.contains("exceeds") || error.contains("cannot fit"),
        "{error}"
    );
    // A string longer than the bytes left.
    let join = [0, 200, b'g'];
    assert!(check(ApiKey::JoinGroup, 0, &join).is_err());
}
