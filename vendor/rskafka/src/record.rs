use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// High-level record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub timestamp: DateTime<Utc>,
}

impl Record {
    /// Returns the approximate uncompressed size of this [`Record`]
    pub fn approximate_size(&self) -> usize {
        self.key.as_ref().map(|k| k.len()).unwrap_or_default()
            + self.value.as_ref().map(|v| v.len()).unwrap_or_default()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// logcatch patch: records encoded one after the other into one buffer in Kafka's record
/// format (v2), from borrowed parts, for [`PartitionClient::produce_encoded`]. A producer
/// building a [`Record`] per line pays an allocation for the value, the key and each
/// header's name and value (plus the header map's nodes); this pays none per record.
///
/// [`PartitionClient::produce_encoded`]: crate::client::partition::PartitionClient::produce_encoded
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedRecords {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: usize,
    /// Milliseconds since the epoch of the first record and the latest one.
    pub(crate) first_timestamp: i64,
    pub(crate) max_timestamp: i64,
}

impl EncodedRecords {
    /// An empty set with room for `bytes` of encoded records.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Appends a record. Fails only when a part is longer than Kafka's length fields
    /// allow (2 GiB) or the set already holds `i32::MAX` records.
    pub fn push<'h>(
        &mut self,
        timestamp: DateTime<Utc>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> Result<(), crate::client::error::Error> {
        let millis = timestamp.timestamp_millis();
        if self.count == 0 {
            self.first_timestamp = millis;
            self.max_timestamp = millis;
        }
        let offset_delta = i32::try_from(self.count).map_err(|_| too_large("records"))?;
        let rollback = self.bytes.len();
        let written = crate::protocol::record::write_record(
            &mut self.bytes,
            millis - self.first_timestamp,
            offset_delta,
            key,
            value,
            headers.map(|(name, value)| (name.as_bytes(), value)),
        );
        if let Err(e) = written {
            self.bytes.truncate(rollback);
            return Err(too_large(&e.to_string()));
        }
        self.max_timestamp = self.max_timestamp.max(millis);
        self.count += 1;
        Ok(())
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the encoded records (before compression).
    pub fn encoded_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Empties the set, keeping its buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }
}

fn too_large(what: &str) -> crate::client::error::Error {
    crate::client::error::Error::InvalidResponse(format!("record cannot be encoded: {what}"))
}

/// Record that has offset information attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAndOffset {
    pub record: Record,
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn test_approximate_size() {
        let record = Record {
            key: Some(vec![0; 23]),
            value: Some(vec![0; 45]),
            headers: vec![("a".to_string(), vec![0; 5]), ("b".to_string(), vec![0; 7])]
                .into_iter()
                .collect(),
            timestamp: Utc.timestamp_millis_opt(1337).unwrap(),
        };

        assert_eq!(record.approximate_size(), 23 + 45 + 1 + 5 + 1 + 7);
    }
}
