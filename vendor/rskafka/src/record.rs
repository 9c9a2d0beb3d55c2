use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::client::partition::Compression;

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
    /// Appends a record. Fails only when a part is longer than Kafka's length fields
    /// allow (2 GiB) or the set already holds `i32::MAX` records.
    pub fn push<'h>(
        &mut self,
        timestamp: DateTime<Utc>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, &'h [u8])> + Clone,
    ) -> Result<(), crate::client::error::Error> {
        self.append(timestamp, |out, timestamp_delta, offset_delta| {
            crate::protocol::record::write_record(
                out,
                timestamp_delta,
                offset_delta,
                key,
                value,
                headers.map(|(name, value)| (name.as_bytes(), value)),
            )
        })
    }

    /// Appends a record whose `n_headers` headers come encoded: `headers` are their
    /// bytes, one part after the other, each header a name then a value as
    /// [`encode_header_bytes`](Self::encode_header_bytes) writes them. Headers that every
    /// record of a batch shares can so be encoded once.
    pub fn push_encoded_headers(
        &mut self,
        timestamp: DateTime<Utc>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        n_headers: usize,
        headers: &[&[u8]],
    ) -> Result<(), crate::client::error::Error> {
        self.append(timestamp, |out, timestamp_delta, offset_delta| {
            crate::protocol::record::write_record_encoded_headers(
                out,
                timestamp_delta,
                offset_delta,
                key,
                value,
                n_headers,
                headers,
            )
        })
    }

    /// [`push_encoded_headers`](Self::push_encoded_headers) with a value of `value_len`
    /// bytes that `write_value` appends to the set's buffer itself, so that a value made
    /// for the record (a JSON object, say) is not built elsewhere and copied. Fails,
    /// leaving the set as it was, if `write_value` appends any other number of bytes.
    pub fn push_written_value(
        &mut self,
        timestamp: DateTime<Utc>,
        key: Option<&[u8]>,
        value_len: usize,
        write_value: impl FnOnce(&mut Vec<u8>),
        n_headers: usize,
        headers: &[&[u8]],
    ) -> Result<(), crate::client::error::Error> {
        self.append(timestamp, |out, timestamp_delta, offset_delta| {
            crate::protocol::record::write_record_written_value(
                out,
                timestamp_delta,
                offset_delta,
                key,
                value_len,
                write_value,
                n_headers,
                headers,
            )
        })
    }

    /// Appends `bytes` to `out` as a header's name or value is encoded (its length as a
    /// varint, then the bytes), for [`push_encoded_headers`](Self::push_encoded_headers).
    pub fn encode_header_bytes(
        out: &mut Vec<u8>,
        bytes: &[u8],
    ) -> Result<(), crate::client::error::Error> {
        crate::protocol::record::put_bytes(out, bytes).map_err(|e| encode_error(&e.to_string()))
    }

    /// Appends the record `write` writes, given its timestamp and offset deltas; rolls
    /// back what it wrote if it fails.
    fn append(
        &mut self,
        timestamp: DateTime<Utc>,
        write: impl FnOnce(&mut Vec<u8>, i64, i32) -> Result<(), crate::protocol::traits::WriteError>,
    ) -> Result<(), crate::client::error::Error> {
        let millis = timestamp.timestamp_millis();
        if self.count == 0 {
            self.first_timestamp = millis;
            self.max_timestamp = millis;
        }
        let offset_delta = i32::try_from(self.count).map_err(|_| encode_error("records"))?;
        let rollback = self.bytes.len();
        if let Err(e) = write(&mut self.bytes, millis - self.first_timestamp, offset_delta) {
            self.bytes.truncate(rollback);
            return Err(encode_error(&e.to_string()));
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
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// logcatch patch: the records as they were encoded, read back (for `logcatch tap`,
    /// which shows what a producer ships): key, value, headers and timestamp each. A
    /// header name that is not UTF-8 is refused, as in a fetched record.
    pub fn decode(&self) -> Result<Vec<Record>, crate::client::error::Error> {
        use crate::protocol::traits::ReadType;
        let mut reader = std::io::Cursor::new(&self.bytes[..]);
        let mut records = Vec::with_capacity(self.count);
        for _ in 0..self.count {
            let record = crate::protocol::record::Record::read(&mut reader)
                .map_err(|e| encode_error(&format!("cannot read an encoded record: {e}")))?;
            let millis = self.first_timestamp + record.timestamp_delta;
            records.push(Record {
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|header| (header.key, header.value))
                    .collect(),
                timestamp: chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default(),
            });
        }
        Ok(records)
    }

    /// Bytes of memory the buffer holds (its capacity), whatever it holds now.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The finished set, compressed, for [`PartitionClient::produce_encoded`]: cheap to
    /// clone (for a retry). Compressing here rather than while the request is written
    /// lets a producer compress the next batch while one is in flight. Leaves the set
    /// empty; with compression it keeps its buffer for the next records.
    ///
    /// [`PartitionClient::produce_encoded`]: crate::client::partition::PartitionClient::produce_encoded
    pub fn freeze(
        &mut self,
        compression: Compression,
    ) -> Result<EncodedBatch, crate::client::error::Error> {
        let protocol = crate::client::partition::protocol_compression(compression);
        let bytes: bytes::Bytes = if matches!(compression, Compression::NoCompression) {
            std::mem::take(&mut self.bytes).into()
        } else {
            let mut compressed = Vec::with_capacity(self.bytes.len() / 2);
            crate::protocol::record::RecordBatchBodyRef::write_compressed(
                &mut compressed,
                protocol,
                crate::protocol::record::Uncompressed::Encoded(&self.bytes),
            )
            .map_err(|e| encode_error(&format!("{compression:?} compression failed: {e}")))?;
            compressed.into()
        };
        let crc = crate::client::partition::record_batch(
            compression,
            self.first_timestamp,
            self.max_timestamp,
            crate::protocol::record::ControlBatchOrRecords::Encoded {
                count: self.count,
                bytes: bytes.clone(),
                crc: None,
                detached: false,
            },
        )
        .encoded_crc()
        .map_err(|e| encode_error(&e.to_string()))?
        .expect("encoded records");
        let batch = EncodedBatch {
            crc,
            bytes,
            count: self.count,
            compression,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
        };
        self.clear();
        Ok(batch)
    }

    /// Empties the set, keeping its buffer.
    fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Reserves room for at least `bytes` more encoded bytes.
    pub fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    /// Where the set ends now, to [`truncate`](Self::truncate) back to.
    pub fn mark(&self) -> EncodedMark {
        EncodedMark {
            bytes: self.bytes.len(),
            count: self.count,
            max_timestamp: self.max_timestamp,
        }
    }

    /// Drops the records pushed after `mark` (e.g. the rest of a group that failed).
    pub fn truncate(&mut self, mark: EncodedMark) {
        if mark.count <= self.count {
            self.bytes.truncate(mark.bytes);
            self.count = mark.count;
            self.max_timestamp = mark.max_timestamp;
        }
    }
}

/// logcatch patch: the bytes a record batch writes besides its records, which a broker's
/// `message.max.bytes` counts too: base offset (8), batch length (4), partition leader
/// epoch (4), magic (1), CRC (4), attributes (2), last offset delta (4), first and max
/// timestamp (8 + 8), producer id (8), producer epoch (2), base sequence (4) and the
/// record count (4).
pub const RECORD_BATCH_OVERHEAD: usize = 61;

/// Finished (compressed) [`EncodedRecords`], shared (not copied) by its clones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub(crate) bytes: bytes::Bytes,
    /// The record batch's CRC, computed here rather than on the way to the broker.
    pub(crate) crc: crate::protocol::record::BatchCrc,
    pub(crate) count: usize,
    pub(crate) compression: Compression,
    pub(crate) first_timestamp: i64,
    pub(crate) max_timestamp: i64,
}

impl EncodedBatch {
    /// The number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes of the (compressed) records, without the record batch's header.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// logcatch patch: the buffer of uncompressed records back, emptied, for the next
    /// records, once the batch has been sent and no clone of it is left. `freeze` without
    /// compression hands over the [`EncodedRecords`]' own buffer, so without this each
    /// request took a fresh one, whose pages the kernel zeroes as they are written and
    /// which the allocator returns after its purge delay. `None` for compressed records
    /// (the encoding buffer stays with the `EncodedRecords`) or while a clone is alive.
    pub fn into_records(self) -> Option<EncodedRecords> {
        if self.compression != Compression::NoCompression {
            return None;
        }
        let mut bytes = Vec::from(self.bytes.try_into_mut().ok()?);
        bytes.clear();
        Some(EncodedRecords {
            bytes,
            ..EncodedRecords::default()
        })
    }
}

/// A position in [`EncodedRecords`], from [`EncodedRecords::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedMark {
    bytes: usize,
    count: usize,
    max_timestamp: i64,
}

fn encode_error(what: &str) -> crate::client::error::Error {
    crate::client::error::Error::InvalidResponse(format!("records cannot be encoded: {what}"))
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

    #[test]
    fn decode_should_read_back_what_push_and_push_encoded_headers_wrote() {
        let at = |millis| Utc.timestamp_millis_opt(millis).unwrap();
        let mut records = EncodedRecords::default();
        let headers = [("a", &b"1"[..]), ("b", &b""[..])];
        records
            .push(at(1_000), Some(b"key"), Some(b"value"), headers.into_iter())
            .unwrap();
        let mut shared = Vec::new();
        EncodedRecords::encode_header_bytes(&mut shared, b"name").unwrap();
        EncodedRecords::encode_header_bytes(&mut shared, &[0xff, 0]).unwrap();
        records
            .push_encoded_headers(at(900), None, Some(b""), 1, &[&shared])
            .unwrap();
        let want = [
            Record {
                key: Some(b"key".to_vec()),
                value: Some(b"value".to_vec()),
                headers: [("a".into(), b"1".to_vec()), ("b".into(), Vec::new())].into(),
                timestamp: at(1_000),
            },
            Record {
                key: None,
                value: Some(Vec::new()),
                headers: [("name".into(), vec![0xff, 0])].into(),
                timestamp: at(900),
            },
        ];
        assert_eq!(records.decode().unwrap(), want);
        assert!(EncodedRecords::default().decode().unwrap().is_empty());
    }

    #[test]
    fn push_written_value_should_write_what_push_encoded_headers_writes() {
        let at = Utc.timestamp_millis_opt(1_000).unwrap();
        let mut shared = Vec::new();
        EncodedRecords::encode_header_bytes(&mut shared, b"name").unwrap();
        EncodedRecords::encode_header_bytes(&mut shared, b"value").unwrap();
        // Lengths around the varints' steps (64 and 8,192 bytes).
        for len in [0, 1, 63, 64, 100, 8_191, 8_192, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (mut copied, mut written) = (EncodedRecords::default(), EncodedRecords::default());
            copied
                .push_encoded_headers(at, Some(b"k"), Some(&value), 1, &[&shared])
                .unwrap();
            written
                .push_written_value(
                    at,
                    Some(b"k"),
                    len,
                    |out| out.extend_from_slice(&value),
                    1,
                    &[&shared],
                )
                .unwrap();
            assert_eq!(written, copied, "{len} bytes");
        }
        // A value written longer or shorter than said: refused, the set as it was.
        let mut records = EncodedRecords::default();
        records
            .push(at, None, Some(b"first"), std::iter::empty())
            .unwrap();
        let before = records.clone();
        for wrong in [4, 6] {
            let error = records
                .push_written_value(
                    at,
                    None,
                    wrong,
                    |out| out.extend_from_slice(b"value"),
                    0,
                    &[],
                )
                .unwrap_err();
            assert!(error.to_string().contains("written as 5"), "{error}");
            assert_eq!(records, before);
        }
    }

    #[test]
    fn into_records_should_give_back_the_buffer_of_an_uncompressed_batch_once_unshared() {
        let at = Utc.timestamp_millis_opt(1_000).unwrap();
        let mut records = EncodedRecords::default();
        records.reserve(4096);
        records
            .push(at, None, Some(b"value"), std::iter::empty())
            .unwrap();
        let buffer = records.bytes.as_ptr();
        let batch = records.freeze(Compression::NoCompression).unwrap();
        let clone = batch.clone();
        assert!(batch.into_records().is_none(), "a clone still shares it");
        let back = clone.into_records().expect("unshared now");
        assert_eq!(back.bytes.as_ptr(), buffer, "the same buffer, not a copy");
        assert!(back.bytes.capacity() >= 4096);
        assert!(back.is_empty() && back.bytes.is_empty());

        let mut records = EncodedRecords::default();
        records
            .push(at, None, Some(b"value"), std::iter::empty())
            .unwrap();
        let batch = records.freeze(Compression::Lz4).unwrap();
        assert!(
            batch.into_records().is_none(),
            "compressed: the buffer stayed"
        );
    }
}
