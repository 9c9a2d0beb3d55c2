//! logcatch patch: DescribeConfigs (API key 32), versions 0 to 2 (before flexible
//! versions), enough to read a topic's or a broker's configuration values.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_DescribeConfigs>

use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error,
    messages::{
        ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError,
        WriteVersionedType, read_versioned_array, write_versioned_array,
    },
    primitives::{Array, Boolean, Int8, Int16, Int32, NullableString, String_},
    traits::{ReadType, WriteType},
};

/// The kind of resource whose configuration is described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigResourceType {
    Topic,
    Broker,
}

impl ConfigResourceType {
    fn code(self) -> i8 {
        match self {
            ConfigResourceType::Topic => 2,
            ConfigResourceType::Broker => 4,
        }
    }
}

#[derive(Debug)]
pub struct DescribeConfigsRequest {
    /// The resources whose configurations we want to describe.
    pub resources: Vec<DescribeConfigsResource>,

    /// Whether to include synonyms in the answer (ignored before version 1).
    pub include_synonyms: bool,
}

#[derive(Debug)]
pub struct DescribeConfigsResource {
    pub resource_type: ConfigResourceType,
    /// The topic name, or the broker id as text.
    pub resource_name: String,
    /// The configuration keys to list, or `None` for all of them.
    pub configuration_keys: Option<Vec<String>>,
}

impl RequestBody for DescribeConfigsRequest {
    type ResponseBody = DescribeConfigsResponse;

    const API_KEY: ApiKey = ApiKey::DescribeConfigs;

    /// Versions 3 and 4 add documentation and types (4 is flexible): not needed.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(2)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(4));
}

impl<W> WriteVersionedType<W> for DescribeConfigsRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 2);
        write_versioned_array(writer, version, Some(&self.resources))?;
        if v >= 1 {
            Boolean(self.include_synonyms).write(writer)?;
        }
        Ok(())
    }
}

impl<W> WriteVersionedType<W> for DescribeConfigsResource
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        _version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        Int8(self.resource_type.code()).write(writer)?;
        String_(self.resource_name.clone()).write(writer)?;
        let keys = self
            .configuration_keys
            .as_ref()
            .map(|keys| keys.iter().cloned().map(String_).collect());
        Array(keys).write(writer)?;
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct DescribeConfigsResponse {
    /// How long the request was throttled for a quota violation, or zero.
    pub throttle_time_ms: Int32,
    pub results: Vec<DescribeConfigsResult>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct DescribeConfigsResult {
    pub error: Option<Error>,
    pub error_message: Option<String>,
    pub resource_type: i8,
    pub resource_name: String,
    pub configs: Vec<DescribeConfigsEntry>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct DescribeConfigsEntry {
    pub name: String,
    /// `None` for a sensitive value.
    pub value: Option<String>,
    pub read_only: bool,
    pub is_sensitive: bool,
}

impl<R> ReadVersionedType<R> for DescribeConfigsResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        assert!(version.0.0 <= 2);
        let throttle_time_ms = Int32::read(reader)?;
        let results = read_versioned_array(reader, version)?.unwrap_or_default();
        Ok(Self {
            throttle_time_ms,
            results,
        })
    }
}

impl<R> ReadVersionedType<R> for DescribeConfigsResult
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let error = Error::new(Int16::read(reader)?.0);
        let error_message = NullableString::read(reader)?.0;
        let resource_type = Int8::read(reader)?.0;
        let resource_name = String_::read(reader)?.0;
        let configs = read_versioned_array(reader, version)?.unwrap_or_default();
        Ok(Self {
            error,
            error_message,
            resource_type,
            resource_name,
            configs,
        })
    }
}

impl<R> ReadVersionedType<R> for DescribeConfigsEntry
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        let name = String_::read(reader)?.0;
        let value = NullableString::read(reader)?.0;
        let read_only = Boolean::read(reader)?.0;
        if v == 0 {
            // is_default
            Boolean::read(reader)?;
        } else {
            // config_source
            Int8::read(reader)?;
        }
        let is_sensitive = Boolean::read(reader)?.0;
        if v >= 1 {
            // Synonyms: name, value, source; read and dropped.
            let count = Int32::read(reader)?.0;
            for _ in 0..count.max(0) {
                String_::read(reader)?;
                NullableString::read(reader)?;
                Int8::read(reader)?;
            }
        }
        Ok(Self {
            name,
            value,
            read_only,
            is_sensitive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn request_v1_should_encode_resource_keys_and_synonyms_flag() {
        let request = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: ConfigResourceType::Topic,
                resource_name: "logs".into(),
                configuration_keys: Some(vec!["max.message.bytes".into()]),
            }],
            include_synonyms: false,
        };
        let mut got = Vec::new();
        request
            .write_versioned(&mut got, ApiVersion(Int16(1)))
            .unwrap();
        let mut want = vec![0, 0, 0, 1, 2];
        string(&mut want, "logs");
        want.extend_from_slice(&[0, 0, 0, 1]);
        string(&mut want, "max.message.bytes");
        want.push(0);
        assert_eq!(got, want);

        // Version 0 has no synonyms flag; `None` asks for every key.
        let request = DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: ConfigResourceType::Broker,
                resource_name: "1".into(),
                configuration_keys: None,
            }],
            include_synonyms: true,
        };
        let mut got = Vec::new();
        request
            .write_versioned(&mut got, ApiVersion(Int16(0)))
            .unwrap();
        let mut want = vec![0, 0, 0, 1, 4];
        string(&mut want, "1");
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(got, want);
    }

    #[test]
    fn response_should_decode_each_version_with_its_fields() {
        for v in 0..=2i16 {
            let mut bytes = vec![0, 0, 0, 7]; // throttle
            bytes.extend_from_slice(&[0, 0, 0, 2]); // two results
            // A topic with one entry.
            bytes.extend_from_slice(&[0, 0]); // no error
            bytes.extend_from_slice(&[0xff, 0xff]); // null message
            bytes.push(2);
            string(&mut bytes, "logs");
            bytes.extend_from_slice(&[0, 0, 0, 1]);
            string(&mut bytes, "max.message.bytes");
            string(&mut bytes, "2048");
            bytes.push(0); // read only
            bytes.push(1); // is_default (v0) or config_source (v1+)
            bytes.push(0); // sensitive
            if v >= 1 {
                bytes.extend_from_slice(&[0, 0, 0, 1]);
                string(&mut bytes, "message.max.bytes");
                string(&mut bytes, "4096");
                bytes.push(5);
            }
            // A refused broker resource.
            bytes.extend_from_slice(&[0, 35]); // unsupported version... any code
            string(&mut bytes, "no");
            bytes.push(4);
            string(&mut bytes, "1");
            bytes.extend_from_slice(&[0, 0, 0, 0]);

            let mut reader = Cursor::new(bytes.clone());
            let got =
                DescribeConfigsResponse::read_versioned(&mut reader, ApiVersion(Int16(v))).unwrap();
            assert_eq!(reader.position() as usize, bytes.len(), "v{v} read whole");
            assert_eq!(got.throttle_time_ms, Int32(7));
            assert_eq!(
                got.results[0],
                DescribeConfigsResult {
                    error: None,
                    error_message: None,
                    resource_type: 2,
                    resource_name: "logs".into(),
                    configs: vec![DescribeConfigsEntry {
                        name: "max.message.bytes".into(),
                        value: Some("2048".into()),
                        read_only: false,
                        is_sensitive: false,
                    }],
                },
                "v{v}"
            );
            assert!(got.results[1].error.is_some());
            assert_eq!(got.results[1].error_message.as_deref(), Some("no"));
            assert!(got.results[1].configs.is_empty());
        }
    }
}
