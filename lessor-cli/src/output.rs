//! Output formatting: aligned tables and key-value blocks for people, bytes shown as text, and
//! the JSON encoding of keys and values shared by `--json` and `dump`.
//!
//! Keys and values are arbitrary bytes. In JSON a byte string that is valid UTF-8 is written as
//! a string field (`"key": "/a"`); any other is written hex-encoded under the same name with
//! `_hex` appended (`"key_hex": "ff00"`), and the plain field is left out. For people, text is
//! printed as it is with control characters escaped, and other bytes as `b"\xff\x00"`.

use std::io::{self, Write};

use lessor::{KeyValue, LeaseId};
use serde::{Deserialize, Serialize};

/// Rows of cells printed as columns separated by two spaces, each as wide as its widest cell
/// (counted in characters). The last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `headers`.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Writes `name value` lines with the values aligned: the layout of `get`, `ttl` and `stats`.
pub fn write_fields(out: &mut dyn Write, fields: &[(&str, String)]) -> io::Result<()> {
    let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, value) in fields {
        writeln!(out, "{name:<width$}  {value}")?;
    }
    Ok(())
}

/// Bytes for people: UTF-8 text as it is (control characters escaped, so that a row stays one
/// line), anything else as an escaped byte string `b"..."`.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut shown = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    shown.extend(c.escape_default());
                } else {
                    shown.push(c);
                }
            }
            shown
        }
        Err(_) => format!("b\"{}\"", bytes.escape_ascii()),
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes `text` encodes in hex (either case), or `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// A key in JSON: `{"key": "..."}` or `{"key_hex": "..."}` (flattened into its parent).
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct JsonKey {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_hex: Option<String>,
}

/// A value in JSON: `{"value": "..."}` or `{"value_hex": "..."}` (flattened into its parent).
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct JsonValue {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_hex: Option<String>,
}

/// Text when `bytes` is UTF-8, else hex: the pair of fields to write.
fn encode(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(hex(bytes))),
    }
}

/// The bytes a text-or-hex pair of fields names; `what` names the field in the error.
fn decode(text: &Option<String>, hexed: &Option<String>, what: &str) -> Result<Vec<u8>, String> {
    match (text, hexed) {
        (Some(text), None) => Ok(text.clone().into_bytes()),
        (None, Some(h)) => unhex(h).ok_or_else(|| format!("\"{what}_hex\" is not hex: {h:?}")),
        (Some(_), Some(_)) => Err(format!("both \"{what}\" and \"{what}_hex\" are given")),
        (None, None) => Err(format!("neither \"{what}\" nor \"{what}_hex\" is given")),
    }
}

impl JsonKey {
    pub fn new(bytes: &[u8]) -> JsonKey {
        let (key, key_hex) = encode(bytes);
        JsonKey { key, key_hex }
    }

    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        decode(&self.key, &self.key_hex, "key")
    }
}

impl JsonValue {
    pub fn new(bytes: &[u8]) -> JsonValue {
        let (value, value_hex) = encode(bytes);
        JsonValue { value, value_hex }
    }

    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        decode(&self.value, &self.value_hex, "value")
    }
}

/// A key with its value and metadata in JSON: `get`, `range`, and the key lines of `dump`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct JsonKv {
    #[serde(flatten)]
    pub key: JsonKey,
    #[serde(flatten)]
    pub value: JsonValue,
    /// The lease id, `null` for a key without one.
    pub lease: Option<u64>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

impl JsonKv {
    pub fn new(kv: &KeyValue) -> JsonKv {
        JsonKv {
            key: JsonKey::new(&kv.key),
            value: JsonValue::new(&kv.value),
            lease: kv.lease.map(LeaseId::get),
            create_revision: kv.create_revision.get(),
            mod_revision: kv.mod_revision.get(),
            version: kv.version,
        }
    }
}

/// Writes `value` as one line of JSON.
pub fn write_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// `1 key`, `2 keys`: a count with its noun.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A size in bytes for people: `812 B`, `1.5 KiB`, `24.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["ID", "TTL", "KEYS"]);
        t.row(vec!["7".into(), "10s".into(), "2".into()]);
        t.row(vec!["12345".into(), "1m05s".into(), "0".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID     TTL    KEYS\n7      10s    2\n12345  1m05s  0\n"
        );
    }

    #[test]
    fn bytes_show_as_text_or_escaped() {
        assert_eq!(show(b"/cron/lock/job1"), "/cron/lock/job1");
        assert_eq!(show("héllo".as_bytes()), "héllo");
        assert_eq!(show(b"a\nb"), "a\\nb");
        assert_eq!(show(&[0xff, b'a']), "b\"\\xffa\"");
    }

    #[test]
    fn hex_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&all)).unwrap(), all);
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff").unwrap(), vec![0x00, 0xab, 0xff]);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn json_bytes_are_text_or_hex() {
        let k = JsonKey::new(b"/a");
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"key":"/a"}"#);
        let k = JsonKey::new(&[0xff, 0x00]);
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"key_hex":"ff00"}"#);
        assert_eq!(k.bytes().unwrap(), vec![0xff, 0x00]);
        let both = JsonKey {
            key: Some("a".into()),
            key_hex: Some("61".into()),
        };
        assert!(both.bytes().unwrap_err().contains("both"));
        assert!(
            JsonValue::default()
                .bytes()
                .unwrap_err()
                .contains("neither")
        );
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(24 << 20), "24.0 MiB");
    }
}
