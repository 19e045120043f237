//! How keys and values are written as text, in dumps, on the command line
//! and in the shell.
//!
//! Printable ASCII stands for itself, except the backslash; `\\`, `\t`,
//! `\n`, `\r` and `\xHH` (two hex digits) stand for the rest. So any byte
//! string round-trips exactly, text stays readable, and an escaped string
//! never holds a tab, a newline or a byte outside ASCII.
//!
//! Where a key or value is printed for a person to paste back — into
//! `strata get`/`put`/`delete` at a POSIX shell's prompt, or into `strata
//! shell` — it is written as a [`word`]: the escaped form, single-quoted
//! unless it holds only characters no shell treats specially. Inside
//! single quotes neither shell changes anything, and the escapes are
//! undone by the command itself.

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

/// Characters a shell word may hold unquoted: none of them is special to
/// a POSIX shell or to `strata shell` (no quotes, `\\`, `$`, globs, `#`,
/// `~`, braces, separators).
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.,/:@%+=".contains(c)
}

/// `bytes` as one shell word that pastes back as an argument meaning
/// exactly `bytes`: escaped, with `'` written `\x27` (so it never ends the
/// quotes) and a leading `-` written `\x2d` (so it is never taken for an
/// option, or for `put`'s `-`, the value from stdin), then single-quoted
/// unless every character is [`plain`]. An empty value is `''`.
pub fn word(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' => text.push_str("\\x27"),
            b'-' if i == 0 => text.push_str("\\x2d"),
            _ => text.push_str(&escape(&[b])),
        }
    }
    if !text.is_empty() && text.chars().all(plain) {
        text
    } else {
        format!("'{text}'")
    }
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

    proptest! {
        #[test]
        fn every_word_is_quoted_or_plain_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let w = word(&bytes);
            let inner = match w.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) {
                Some(inner) => {
                    prop_assert!(!inner.contains('\''));
                    inner
                }
                None => {
                    prop_assert!(w.chars().all(plain) && !w.is_empty());
                    &w
                }
            };
            prop_assert!(!inner.starts_with('-'));
            prop_assert_eq!(unescape(inner).expect("own output"), bytes);
        }
    }

    #[test]
    fn words_stay_bare_when_a_shell_would_keep_them() {
        assert_eq!(word(b"user0001"), "user0001");
        assert_eq!(word(b"a b"), "'a b'");
        assert_eq!(word(b"it's"), "'it\\x27s'");
        assert_eq!(word(b"-"), "'\\x2d'");
        assert_eq!(word(b"a-b"), "a-b");
        assert_eq!(word(b""), "''");
        assert_eq!(word(b"$HOME*"), "'$HOME*'");
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
