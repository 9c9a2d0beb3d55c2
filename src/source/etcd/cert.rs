//! The validity period of the etcd client certificate. etcd refuses an expired one during
//! the TLS handshake, which reaches the client as a closed connection, indistinguishable
//! from a lost server; reading the dates from `cert_file` tells the two apart.

use chrono::{DateTime, NaiveDate, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;

/// Why the certificate in `path` (PEM, the first one) is not valid at `now`; `None` when
/// it is, or when it cannot be read or parsed (connecting will say why).
pub fn problem(path: &Path, now: DateTime<Utc>) -> Option<String> {
    let cert = CertificateDer::from_pem_file(path).ok()?;
    let (not_before, not_after) = validity(&cert)?;
    let file = path.display();
    if now > not_after {
        Some(format!(
            "etcd.tls.cert_file {file}: the client certificate expired at {}",
            not_after.to_rfc3339()
        ))
    } else if now < not_before {
        Some(format!(
            "etcd.tls.cert_file {file}: the client certificate is not valid before {}",
            not_before.to_rfc3339()
        ))
    } else {
        None
    }
}

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// `notBefore` and `notAfter` of an X.509 certificate (RFC 5280 4.1: Certificate →
/// tbsCertificate → [version], serialNumber, signature, issuer, validity).
fn validity(der: &[u8]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs)?.2;
    }
    for _ in ["serialNumber", "signature", "issuer"] {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, validity, _) = element(tbs)? else {
        return None;
    };
    let (tag, not_before, rest) = element(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = element(rest)?;
    Some((not_before, time(tag, not_after)?))
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950–2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn time(tag: u8, text: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(year, field(0)?, field(2)?)?;
    Some(date.and_hms_opt(field(4)?, field(6)?, field(8)?)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::path::PathBuf;

    fn cert_file(dir: &Path, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> PathBuf {
        let mut params = CertificateParams::new(vec!["agent".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let path = dir.join(format!("{not_after:?}.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn problem_should_name_the_file_and_date_of_an_expired_certificate() {
        let dir = tempfile::tempdir().unwrap();
        // UTCTime before 2050, GeneralizedTime from 2050 on.
        for (not_after, expired) in [((2030, 6, 1), "2030-06-01"), ((2051, 1, 2), "2051-01-02")] {
            let path = cert_file(dir.path(), (2020, 1, 1), not_after);
            assert_eq!(problem(&path, at("2025-01-01T00:00:00Z")), None);
            let problem = problem(&path, at("2060-01-01T00:00:00Z")).unwrap();
            assert_eq!(
                problem,
                format!(
                    "etcd.tls.cert_file {}: the client certificate expired at {expired}T00:00:00+00:00",
                    path.display()
                )
            );
            assert!(super::problem(&path, at("2019-12-31T23:59:59Z"))
                .unwrap()
                .contains("not valid before 2020-01-01"));
        }
    }

    #[test]
    fn problem_should_leave_unreadable_files_to_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let now = at("2025-01-01T00:00:00Z");
        assert_eq!(problem(&dir.path().join("missing.pem"), now), None);
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(problem(&junk, now), None);
    }
}
