//! The API versions weir implements: what ApiVersions advertises, and the
//! only versions whose bodies are decoded. Built from weir's own table,
//! not from `kafka-protocol`'s ranges (they say what the crate can decode,
//! not what weir answers correctly).

use kafka_protocol::messages::ApiKey;

/// One API: its key and the versions implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supported {
    /// The API.
    pub key: ApiKey,
    /// The lowest version implemented.
    pub min: i16,
    /// The highest version implemented.
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> Supported {
    Supported { key, min, max }
}

/// Every API weir answers, with the versions it implements.
pub const SUPPORTED: &[Supported] = &[
    api(ApiKey::Produce, 3, 10),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 6),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 7),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 4),
    api(ApiKey::SaslHandshake, 1, 1),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::InitProducerId, 0, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
    api(ApiKey::DescribeQuorum, 0, 2),
];

/// The versions implemented of the API with this key, if it is one.
pub fn supported(key: i16) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|api| api.key as i16 == key)
}

/// Whether weir implements this version of the API with this key.
pub fn is_supported(key: i16, version: i16) -> bool {
    supported(key).is_some_and(|api| (api.min..=api.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_advertised_version_is_one_the_codec_knows() {
        for api in SUPPORTED {
            let codec = api.key.valid_versions();
            assert!(
                codec.min <= api.min && api.max <= codec.max,
                "{:?} advertised {}..={} but the codec knows {}..={}",
                api.key,
                api.min,
                api.max,
                codec.min,
                codec.max
            );
        }
    }

    #[test]
    fn each_api_is_listed_once() {
        let mut keys: Vec<i16> = SUPPORTED.iter().map(|api| api.key as i16).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SUPPORTED.len());
        assert!(is_supported(ApiKey::ApiVersions as i16, 0));
        assert!(!is_supported(ApiKey::Produce as i16, 2));
        assert!(!is_supported(999, 0));
    }
}
