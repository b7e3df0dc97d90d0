//! Just enough of X.509 (a DER walk, no dependency) to tell an operator
//! what a certificate is: its subject, its names and its validity.

/// What `/certs` and the validator say about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as `CN=example.com, O=Example` (the attributes nuncio
    /// knows, in the certificate's order).
    pub subject: String,
    /// The issuer, written like the subject.
    pub issuer: String,
    /// Subject alternative names: DNS names as written (`*.example.com`),
    /// IP addresses as text.
    pub sans: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Parses a DER certificate; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let (cert, _) = tlv(der, SEQUENCE)?;
        let (tbs, _) = tlv(cert, SEQUENCE)?;
        let mut rest = tbs;
        if rest.first() == Some(&0xA0) {
            rest = tlv(rest, 0xA0)?.1;
        }
        rest = tlv(rest, INTEGER)?.1; // serial
        rest = tlv(rest, SEQUENCE)?.1; // signature algorithm
        let (issuer, r) = tlv(rest, SEQUENCE)?;
        let (validity, r) = tlv(r, SEQUENCE)?;
        let (subject, r) = tlv(r, SEQUENCE)?;
        let (_spki, mut r) = tlv(r, SEQUENCE)?;
        let (not_before, v) = time(validity)?;
        let (not_after, _) = time(v)?;
        let mut sans = Vec::new();
        while let Some(&tag) = r.first() {
            let (content, next) = tlv(r, tag)?;
            if tag == 0xA3 {
                let (extensions, _) = tlv(content, SEQUENCE)?;
                sans = subject_alt_names(extensions).unwrap_or_default();
            }
            r = next;
        }
        Some(CertInfo { subject: name(subject), issuer: name(issuer), sans, not_before, not_after })
    }

    /// Whole days from `now` (Unix seconds) to the end of validity;
    /// negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// The DNS names it is for: the SANs that are not IP addresses, or
    /// with none, the subject's CN (what SNI selection matches against).
    pub fn dns_names(&self) -> Vec<String> {
        let dns: Vec<String> = self.sans.iter().filter(|s| s.parse::<std::net::IpAddr>().is_err()).cloned().collect();
        if !dns.is_empty() {
            return dns;
        }
        self.subject
            .split(", ")
            .find_map(|part| part.strip_prefix("CN="))
            .map(|cn| vec![cn.to_owned()])
            .unwrap_or_default()
    }
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const SAN_OID: &[u8] = &[0x55, 0x1D, 0x11];

/// The content of the TLV at the start of `input` if its tag is `tag`,
/// and what follows it.
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let bytes = usize::from(first & 0x7F);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..bytes] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[bytes..];
        len
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Any TLV: its tag, content and what follows.
fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let (content, rest) = tlv(input, tag)?;
    Some((tag, content, rest))
}

/// A `UTCTime` or `GeneralizedTime` as Unix seconds.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (tag, content, rest) = any(input)?;
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<i64>().ok()).flatten();
    let (year, rest_text) = match tag {
        0x17 if text.len() == 12 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| digits(&rest_text[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of Unix seconds (for messages).
pub(crate) fn date(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A distinguished name as `CN=..., O=...`.
fn name(mut rdns: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((set, rest)) = tlv(rdns, SET) {
        let mut attributes = set;
        while let Some((attribute, next)) = tlv(attributes, SEQUENCE) {
            if let Some((oid, value)) = tlv(attribute, OID) {
                let label = match oid {
                    [0x55, 0x04, 0x03] => Some("CN"),
                    [0x55, 0x04, 0x06] => Some("C"),
                    [0x55, 0x04, 0x07] => Some("L"),
                    [0x55, 0x04, 0x08] => Some("ST"),
                    [0x55, 0x04, 0x0A] => Some("O"),
                    [0x55, 0x04, 0x0B] => Some("OU"),
                    _ => None,
                };
                if let (Some(label), Some((_, text, _))) = (label, any(value)) {
                    parts.push(format!("{label}={}", String::from_utf8_lossy(text)));
                }
            }
            attributes = next;
        }
        rdns = rest;
    }
    parts.join(", ")
}

/// The names of the subjectAltName extension, if the list has it.
fn subject_alt_names(mut extensions: &[u8]) -> Option<Vec<String>> {
    while let Some((extension, rest)) = tlv(extensions, SEQUENCE) {
        let (oid, mut fields) = tlv(extension, OID)?;
        if oid == SAN_OID {
            if fields.first() == Some(&0x01) {
                fields = tlv(fields, 0x01)?.1; // critical
            }
            let (value, _) = tlv(fields, 0x04)?;
            let (mut names, _) = tlv(value, SEQUENCE)?;
            let mut out = Vec::new();
            while let Some((tag, content, next)) = any(names) {
                match (tag, content.len()) {
                    (0x82, _) => out.push(String::from_utf8_lossy(content).into_owned()),
                    (0x87, 4) => out.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(content).ok()?).to_string()),
                    (0x87, 16) => out.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(content).ok()?).to_string()),
                    _ => {}
                }
                names = next;
            }
            return Some(out);
        }
        extensions = rest;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(days_from_civil(2024, 2, 29) * 86_400 + 5), "2024-02-29");
        assert_eq!(date(days_from_civil(1999, 12, 31) * 86_400), "1999-12-31");
    }

    #[test]
    fn reads_what_rcgen_wrote() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into(), "*.b.test".into()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(rcgen::DnType::CommonName, "a.test");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Nuncio Tests");
        params.not_before = rcgen::date_time_ymd(2020, 1, 2);
        params.not_after = rcgen::date_time_ymd(2040, 3, 4);
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::parse(cert.der()).unwrap();
        assert_eq!(info.sans, ["a.test", "*.b.test", "127.0.0.1"]);
        assert!(info.subject.contains("CN=a.test") && info.subject.contains("O=Nuncio Tests"), "{}", info.subject);
        assert_eq!(date(info.not_before), "2020-01-02");
        assert_eq!(date(info.not_after), "2040-03-04");
        assert_eq!(info.dns_names(), ["a.test", "*.b.test"]);
        assert!(CertInfo::parse(b"not a certificate").is_none());
    }
}
