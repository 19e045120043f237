//! How keys and values are written as text, in dumps, on the command line
//! and in the shell.
//!
//! Printable ASCII stands for itself, except the backslash; `\\`, `\t`,
//! `\n`, `\r` and `\xHH` (two hex digits) stand for the rest. So any byte
//! string round-trips exactly, text stays readable, and an escaped string
//! never holds a tab, a newline or a byte outside ASCII.

/// The text form of `bytes`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The bytes a text form stands for.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let bad = || {
            format!(
                "bad escape at character {} of {text:?}: use \\\\, \\t, \\n, \\r or \\xHH",
                i + 1
            )
        };
        match b.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            _ => return Err(bad()),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_byte_string_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = escape(&bytes);
            prop_assert!(text.bytes().all(|c| (0x20..=0x7e).contains(&c)));
            prop_assert_eq!(unescape(&text).expect("own output"), bytes);
        }
    }

    #[test]
    fn text_stays_readable_and_bad_escapes_are_refused() {
        assert_eq!(escape(b"alice 42"), "alice 42");
        assert_eq!(escape(b"a\\b\t\x00\xff"), "a\\\\b\\t\\x00\\xff");
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\xzz").is_err());
        assert!(unescape("trailing\\").is_err());
        assert_eq!(unescape("\\x41\\x42").expect("hex"), b"AB");
    }
}
