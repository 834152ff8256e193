//! Metadata sanitizing: what an event may carry in its free-form JSON.
//!
//! Rules, applied in this order (the README lists them for users):
//! 1. metadata is a JSON object (or absent);
//! 2. keys `__proto__`, `constructor` and `prototype` are removed, at any
//!    depth: they are harmless in PostgreSQL but poison JavaScript dashboards;
//! 3. a value whose key names a secret ([`SECRET_KEY_WORDS`], compared
//!    case-insensitively ignoring `_`, `-`, `.` and spaces) is replaced by
//!    [`REDACTED`], whatever its type;
//! 4. a string value that is or holds a payment card number, a bearer token
//!    or a JWT, and an integer that is a card number, is replaced by
//!    [`REDACTED`] ([`is_secret_value`], [`is_card_number`]);
//! 5. bounds: nesting depth ≤ [`MAX_DEPTH`], keys in total ≤ [`MAX_KEYS`],
//!    each key ≤ [`MAX_KEY_BYTES`], serialized size ≤ [`MAX_BYTES`];
//! 6. a NUL character anywhere (key or string) is rejected: PostgreSQL's
//!    `jsonb` cannot store `\u0000`, and the event must fail here with a
//!    reason rather than fail its whole batch in the database;
//! 7. numbers are kept exactly as sent (serde_json's `arbitrary_precision`:
//!    an integer beyond 64 bits is not rounded through `f64`), when written
//!    out in full they have at most [`MAX_NUMBER_DIGITS`] digits: `jsonb`
//!    stores a number written out (`1e300` takes 301 bytes) and cannot store
//!    some at all (`1e-20000`), so larger and smaller ones are rejected, and
//!    the size bound counts every number written out;
//! 8. an object key beginning with [`SERDE_TOKEN`] is rejected, however it is
//!    written (`\u0024serde_json…` too); in a value it is only text.

use serde_json::{Map, Value};

/// Replacement for redacted values.
pub const REDACTED: &str = "[REDACTED]";
/// Deepest nesting accepted (the top-level object is depth 1).
pub const MAX_DEPTH: usize = 8;
/// Most keys accepted, counted over every nested object.
pub const MAX_KEYS: usize = 256;
/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Largest serialized metadata accepted, in bytes.
pub const MAX_BYTES: usize = 16 * 1024;
/// Most digits a number may have written out in full (`1e399` has 400):
/// every finite double fits (`1.7976931348623157e308` has 309,
/// `5e-324` 325 with its leading zero).
pub const MAX_NUMBER_DIGITS: usize = 400;

/// The prefix of the object keys serde_json reads as a number or raw JSON
/// text rather than as an object (its `arbitrary_precision` and
/// `raw_value` features): an object sent with such a key would be read as
/// another value, or fail to parse once its keys are sorted, so JSON text
/// with such a key is refused before it is parsed ([`refuse_serde_tokens`])
/// and so is such a key of a tree built in code.
pub const SERDE_TOKEN: &str = "$serde_json::private::";

/// Words that, found in a normalized key, mark its value as a secret.
pub const SECRET_KEY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
    "creditcard",
    "cardnumber",
    "ccnumber",
    "cvv",
    "cvc",
    "ssn",
    "socialsecurity",
    "iban",
    "sessionid",
    "credential",
    "pwd",
    "authorisation",
    "authheader",
    "pincode",
];

/// Keys that are a secret's name only when they are the whole (normalized)
/// key: as parts of keys they are mostly harmless (`author`, `passenger`).
pub const SECRET_KEYS_EXACT: &[&str] = &["auth", "pass", "pin"];

const POLLUTION_KEYS: &[&str] = &["__proto__", "constructor", "prototype"];

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("must be a JSON object")]
    NotAnObject,
    #[error("is not valid JSON: {0}")]
    NotJson(String),
    #[error("nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("has more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("key {0:?} is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong(String),
    #[error("is {0} bytes, more than the limit of {MAX_BYTES}")]
    TooLarge(usize),
    #[error("contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store")]
    Nul,
    #[error("number {0} has more than {MAX_NUMBER_DIGITS} digits written out in full")]
    NumberTooLong(String),
    #[error("has a key beginning with {SERDE_TOKEN:?}, reserved by the JSON parser")]
    SerdeToken,
}

/// Sanitized metadata: a JSON object that passed every rule above.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Applies the rules of this module.
    pub fn sanitize(value: Value) -> Result<Self, MetadataError> {
        let Value::Object(object) = value else {
            return Err(MetadataError::NotAnObject);
        };
        let mut tally = Tally::default();
        let object = sanitize_object(object, 1, &mut tally)?;
        let metadata = Self(object);
        let size = metadata.to_json().len() + tally.written_out;
        if size > MAX_BYTES {
            return Err(MetadataError::TooLarge(size));
        }
        Ok(metadata)
    }

    /// Parses and sanitizes metadata carried as a JSON string (as on the topic).
    pub fn parse_json(text: &str) -> Result<Self, MetadataError> {
        if text.len() > MAX_BYTES * 4 {
            return Err(MetadataError::TooLarge(text.len()));
        }
        refuse_serde_tokens(text)?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| MetadataError::NotJson(e.to_string()))?;
        Self::sanitize(value)
    }

    /// The canonical JSON text stored in the topic and the database.
    pub fn to_json(&self) -> String {
        // Serializing a map of JSON values cannot fail.
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// A top-level string field.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// What sanitizing counts across the whole object.
#[derive(Default)]
struct Tally {
    keys: usize,
    /// Bytes the numbers take in `jsonb` beyond their text here.
    written_out: usize,
}

fn sanitize_object(
    object: Map<String, Value>,
    depth: usize,
    tally: &mut Tally,
) -> Result<Map<String, Value>, MetadataError> {
    if depth > MAX_DEPTH {
        return Err(MetadataError::TooDeep);
    }
    let mut clean = Map::with_capacity(object.len());
    for (key, value) in object {
        tally.keys += 1;
        if tally.keys > MAX_KEYS {
            return Err(MetadataError::TooManyKeys);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(MetadataError::KeyTooLong(crate::event::excerpt(&key)));
        }
        if key.contains('\0') {
            return Err(MetadataError::Nul);
        }
        // Written with escapes (which the text check cannot see), and
        // not first in its object (where it changes what is parsed).
        if key.starts_with(SERDE_TOKEN) {
            return Err(MetadataError::SerdeToken);
        }
        if POLLUTION_KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = if is_secret_key(&key) {
            Value::String(REDACTED.to_owned())
        } else {
            sanitize_value(value, depth, tally)?
        };
        clean.insert(key, value);
    }
    Ok(clean)
}

fn sanitize_value(value: Value, depth: usize, tally: &mut Tally) -> Result<Value, MetadataError> {
    Ok(match value {
        Value::Object(object) => Value::Object(sanitize_object(object, depth + 1, tally)?),
        Value::Array(items) => {
            if depth + 1 > MAX_DEPTH {
                return Err(MetadataError::TooDeep);
            }
            Value::Array(
                items
                    .into_iter()
                    .map(|item| sanitize_value(item, depth + 1, tally))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::String(text) if text.contains('\0') => return Err(MetadataError::Nul),
        Value::String(text) if is_secret_value(&text) => Value::String(REDACTED.to_owned()),
        Value::Number(number) if is_card_number(&number) => Value::String(REDACTED.to_owned()),
        Value::Number(number) => {
            let text = number.as_str();
            match written_out_digits(text) {
                Some(digits) if digits <= MAX_NUMBER_DIGITS => {
                    tally.written_out += digits.saturating_sub(text.len());
                    Value::Number(number)
                }
                _ => return Err(MetadataError::NumberTooLong(crate::event::excerpt(text))),
            }
        }
        other => other,
    })
}

/// Refuses JSON text with an object key that begins with [`SERDE_TOKEN`],
/// however the key is written (`"\u0024serde_json::private::Number"` is
/// the same key): run on the text before serde_json parses it, since the
/// parser turns the first such key of an object into another value. The
/// same words in a string value are text, and pass. A scan of the string
/// tokens, not a parse: text that is not JSON passes here and fails in the
/// parser with its own error.
pub fn refuse_serde_tokens(text: &str) -> Result<(), MetadataError> {
    // '$' is written as itself or as a \u escape.
    if !text.contains('$') && !text.contains("\\u") {
        return Ok(());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        let mut escaped = false;
        i += 1;
        while i < bytes.len() && (escaped || bytes[i] != b'"') {
            escaped = !escaped && bytes[i] == b'\\';
            i += 1;
        }
        let Some(token) = text.get(start..=i.min(bytes.len() - 1)) else {
            return Ok(());
        };
        i += 1;
        let is_key = bytes
            .get(i..)
            .and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace()))
            == Some(&b':');
        if !is_key {
            continue;
        }
        let inner = &token[1..token.len().saturating_sub(1).max(1)];
        let reserved = if inner.contains('\\') {
            serde_json::from_str::<String>(token).is_ok_and(|key| key.starts_with(SERDE_TOKEN))
        } else {
            inner.starts_with(SERDE_TOKEN)
        };
        if reserved {
            return Err(MetadataError::SerdeToken);
        }
    }
    Ok(())
}

/// How many digits a JSON number has written out in full, without its
/// exponent (`1.5e3` → 4, `2e-3` → 4: `0.002`); `None` for an exponent
/// too large to read. An upper bound: leading zeros are counted.
fn written_out_digits(text: &str) -> Option<usize> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let whole = i64::try_from(whole.len()).ok()?.checked_add(exponent)?;
    let fraction = i64::try_from(fraction.len()).ok()?.checked_sub(exponent)?;
    usize::try_from(whole.max(1).checked_add(fraction.max(0))?).ok()
}

fn is_secret_key(key: &str) -> bool {
    // Letters and digits only: `api:key`, `api/key`, `pass\u{200b}word` and
    // `API-KEY` are all `apikey`.
    let normalized: String = key
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEY_WORDS
        .iter()
        .any(|word| normalized.contains(word))
        || SECRET_KEYS_EXACT.contains(&normalized.as_str())
}

/// A string that is a card number, a bearer token or a JWT, or holds one in
/// longer text (`"my card is 4111 1111 1111 1111"`, `"header: Bearer …"`).
fn is_secret_value(text: &str) -> bool {
    looks_like_card_number(text)
        || holds_card_number(text)
        || looks_like_bearer_token(text)
        || holds_bearer_token(text)
        || holds_jwt(text)
}

/// A JSON integer (or a float with no fraction) of 15–19 digits starting
/// with 2–6 (the card networks' ranges) that passes the Luhn check.
/// Narrower than for text: integers of 13 digits and those starting with 1
/// are mostly timestamps in milliseconds or microseconds.
fn is_card_number(number: &serde_json::Number) -> bool {
    // The number's text as sent (`arbitrary_precision`): an integer's is
    // its digits, read without parsing.
    let text = number.as_str();
    let digits = if text.bytes().all(|b| b.is_ascii_digit()) {
        std::borrow::Cow::Borrowed(text)
    } else {
        // A float with no fraction: `4111111111111111.0`, `4.111111111111111e15`.
        match number.as_f64() {
            Some(f) if f.fract() == 0.0 && (1e14..1e19).contains(&f) => {
                std::borrow::Cow::Owned(format!("{f:.0}"))
            }
            _ => return false,
        }
    };
    (15..=19).contains(&digits.len())
        && matches!(digits.as_bytes()[0], b'2'..=b'6')
        && luhn(&digits)
}

/// Digits in groups of at least 4, separated by single spaces, dashes or
/// dots (`4111 1111 1111 1111`, `3782-822463-10005`, `4111.1111.…`, or one
/// group), anywhere in `text`, 13–19 of them together passing the Luhn
/// check. Groups shorter than 4 break a run, so dates, IP addresses and
/// lists of small numbers are not read as cards.
fn holds_card_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut run: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let group = &text[start..i];
        if group.len() < 4 {
            // A short group ends the run before it ("4111 1111 1111 1111
            // 12/27": the card is still one), and starts none.
            if run_holds_card(&run) {
                return true;
            }
            run.clear();
            continue;
        }
        run.push(group);
        let continues = i + 1 < bytes.len()
            && matches!(bytes[i], b' ' | b'-' | b'.')
            && bytes[i + 1].is_ascii_digit();
        if !continues {
            if run_holds_card(&run) {
                return true;
            }
            run.clear();
        }
    }
    false
}

/// Whether consecutive groups of `run` make 13–19 digits that pass Luhn.
fn run_holds_card(run: &[&str]) -> bool {
    (0..run.len()).any(|first| {
        let mut digits = String::new();
        for group in &run[first..] {
            digits.push_str(group);
            if digits.len() > 19 {
                return false;
            }
            if digits.len() >= 13 && luhn(&digits) {
                return true;
            }
        }
        false
    })
}

/// The Luhn check of a string of ASCII digits: double every second digit
/// from the right.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .map(|b| u32::from(b - b'0'))
        .enumerate()
        .map(|(i, d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

fn looks_like_card_number(text: &str) -> bool {
    let trimmed = text.trim();
    if trimmed.len() > 40
        || !trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        return false;
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

/// `Bearer`, whitespace, then anything: the whole value.
fn looks_like_bearer_token(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed
        .get(..6)
        .is_some_and(|word| word.eq_ignore_ascii_case("bearer"))
        && trimmed[6..].starts_with(char::is_whitespace)
        && !trimmed[6..].trim().is_empty()
}

/// The word `bearer` (any case) in longer text, then whitespace and a token
/// of at least 8 token characters with a digit among them: "the bearer
/// certificate" is prose, "header was Bearer abcdef123456" is not.
fn holds_bearer_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(5)).any(|at| {
        if !bytes[at..at + 6].eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        // `at` starts an ASCII letter: a character boundary.
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let rest = &text[at + 6..];
        let token_start = rest.trim_start();
        let token: &str = token_start
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
            .next()
            .unwrap_or_default();
        starts_word
            && token_start.len() < rest.len()
            && token.len() >= 8
            && token.chars().any(|c| c.is_ascii_digit())
    })
}

/// A JWT (`eyJ…` in three dot-separated base64url parts) anywhere in `text`.
fn holds_jwt(text: &str) -> bool {
    text.match_indices("eyJ").any(|(at, _)| {
        let candidate = text[at..]
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-_=.".contains(c)))
            .next()
            .unwrap_or_default();
        looks_like_jwt(candidate.trim_end_matches('.'))
    })
}

fn looks_like_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && text.starts_with("eyJ")
        && parts.iter().all(|part| {
            part.len() >= 4
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clean(value: Value) -> Value {
        Metadata::sanitize(value).unwrap().into_value()
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_is_still_sanitized() {
        let kept = Metadata::parse_json(r#"{"a": 1, "a": 2}"#).unwrap();
        assert_eq!(kept.into_value(), json!({"a": 2}));
        let secret = Metadata::parse_json(r#"{"password": "x", "password": "hunter2"}"#).unwrap();
        assert_eq!(secret.into_value(), json!({"password": REDACTED}));
        assert_eq!(
            Metadata::parse_json(r#"{"a": "ok", "a": "nul\u0000"}"#),
            Err(MetadataError::Nul)
        );
    }

    #[test]
    fn every_secret_key_word_is_redacted() {
        for word in SECRET_KEY_WORDS {
            let out = clean(json!({ *word: "hunter2", "plan": "pro" }));
            assert_eq!(out[*word], REDACTED, "{word}");
            assert_eq!(out["plan"], "pro");
        }
    }

    #[test]
    fn secret_keys_match_in_any_case_and_spelling() {
        let out = clean(json!({
            "User_Password": "x", "X-Api-Key": "x", "access.token": {"nested": 1},
            "Credit Card": [1, 2], "refresh_token": 5, "tokens_used": 3, "note": "fine",
            "credentials": {"pw": "x"}, "user_pwd": "x", "PIN code": "1234", "Auth Header": "x",
            "authorisation2": "x", "api:key": "x", "api/key": "x", "api+key": "x",
            "api\tkey": "x", "pass\u{200b}word": "x"
        }));
        for key in [
            "User_Password",
            "X-Api-Key",
            "access.token",
            "Credit Card",
            "refresh_token",
            "tokens_used",
            "credentials",
            "user_pwd",
            "PIN code",
            "Auth Header",
            "authorisation2",
            "api:key",
            "api/key",
            "api+key",
            "api\tkey",
            "pass\u{200b}word",
        ] {
            assert_eq!(out[key], REDACTED, "{key}");
        }
        assert_eq!(out["note"], "fine");
    }

    #[test]
    fn secret_values_are_redacted_at_any_depth() {
        let out = clean(json!({
            "a": "4111 1111 1111 1111",
            "b": "4111-1111-1111-1111",
            "c": {"d": ["Bearer abc.def.ghi"]},
            "e": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "f": "4111 1111 1111 1112",
            "g": "12345",
            "h": "bearer"
        }));
        assert_eq!(out["a"], REDACTED);
        assert_eq!(out["b"], REDACTED);
        assert_eq!(out["c"]["d"][0], REDACTED);
        assert_eq!(out["e"], REDACTED);
        assert_eq!(out["f"], "4111 1111 1111 1112", "fails Luhn: not a card");
        assert_eq!(out["g"], "12345");
        assert_eq!(out["h"], "bearer");
    }

    #[test]
    fn secrets_inside_longer_text_and_numbers_are_redacted() {
        let out = clean(json!({
            "card_in_text": "my card is 4111 1111 1111 1111 thanks",
            "dots": "4111.1111.1111.1111",
            "amex": "paid with 3782-822463-10005.",
            "after_a_date": "2026-11-27 4111111111111111",
            "bearer_in_text": "header was Bearer abcdef123456",
            "bearer_tab": "Bearer\tabc123",
            "jwt_in_text": "tok=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "number": 4111111111111111u64,
            "float": 4111111111111111.0,
            "in_array": [5555555555554444u64],
            // A short group after the card (an expiry, a CVV) ended the run
            // before it was checked.
            "then_expiry": "card 4111-1111-1111-1111 12/27 thanks",
            "then_cvv": "visa 4111 1111 1111 1111 124",
            "then_words": "cc: 4111111111111111 12/27 cvv 123",
            "then_month": "5555 5555 5555 4444 07 2029",
            "amex_then_count": "paid with 378282246310005 1 item",
        }));
        for (key, value) in out.as_object().expect("object") {
            let redacted = value == REDACTED || value[0] == REDACTED;
            assert!(redacted, "{key}: {value}");
        }
    }

    #[test]
    fn ordinary_text_and_numbers_are_kept() {
        let kept = json!({
            "prose": "the bearer of this letter",
            "words": "the bearer certificate",
            "date": "2026-11-27 12:30:45",
            "ips": "192.168.100.200 10.0.0.1 10.0.0.2 172.16.254.1",
            "scores": "10 20 30 40 50 60 70 80 90",
            "id": "order 123456789012345678901234567890",
            "millis": 1764200000000u64,
            "micros": 1764200000000000u64,
            "not_luhn": "4111 1111 1111 1112 is not a card",
            "big": 12345,
        });
        assert_eq!(clean(kept.clone()), kept);
    }

    #[test]
    fn short_secret_names_match_only_whole_keys() {
        let out = clean(
            json!({"auth": "Basic dXNlcjpwYXNz", "PWD": "x", "author": "Ann", "passenger": 2}),
        );
        assert_eq!(out["auth"], REDACTED);
        assert_eq!(out["PWD"], REDACTED);
        assert_eq!(out["author"], "Ann");
        assert_eq!(out["passenger"], 2);
    }

    #[test]
    fn pollution_keys_are_removed() {
        let out = clean(json!({"__proto__": {"admin": true}, "x": {"constructor": 1, "y": 2}}));
        assert_eq!(out, json!({"x": {"y": 2}}));
    }

    #[test]
    fn bounds_are_enforced() {
        let mut deep = json!({"leaf": 1});
        for _ in 0..MAX_DEPTH {
            deep = json!({ "k": deep });
        }
        assert_eq!(Metadata::sanitize(deep), Err(MetadataError::TooDeep));
        let mut ok = json!(1);
        for _ in 0..MAX_DEPTH {
            ok = json!({ "k": ok });
        }
        assert!(Metadata::sanitize(ok).is_ok());

        let many: Map<String, Value> = (0..=MAX_KEYS)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert_eq!(
            Metadata::sanitize(Value::Object(many)),
            Err(MetadataError::TooManyKeys)
        );
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            Metadata::sanitize(json!({ long_key: 1 })),
            Err(MetadataError::KeyTooLong(_))
        ));
        let big = json!({"blob": "x".repeat(MAX_BYTES)});
        assert!(matches!(
            Metadata::sanitize(big),
            Err(MetadataError::TooLarge(_))
        ));
    }

    #[test]
    fn numbers_are_kept_exactly_as_sent() {
        let text = r#"{"id":123456789012345678901234567890,"neg":-18446744073709551617,"f":0.1000000000000000055511151231257827,"e":6.02e23}"#;
        let metadata = Metadata::parse_json(text).expect("valid metadata");
        // Keys sorted, exponents written with their sign; every digit kept.
        let kept = r#"{"e":6.02e+23,"f":0.1000000000000000055511151231257827,"id":123456789012345678901234567890,"neg":-18446744073709551617}"#;
        assert_eq!(metadata.to_json(), kept);
        let written = r#"{"max":1.7976931348623157e308,"ok":1e399,"tiny":-5e-324}"#;
        let kept = r#"{"max":1.7976931348623157e+308,"ok":1e+399,"tiny":-5e-324}"#;
        assert_eq!(
            Metadata::parse_json(written)
                .map(|m| m.to_json())
                .as_deref(),
            Ok(kept)
        );
    }

    #[test]
    fn serde_json_tokens_are_refused_in_any_place() {
        for text in [
            r#"{"$serde_json::private::Number":"123"}"#,
            r#"{"a":{"$serde_json::private::RawValue":"[1,2]"}}"#,
            r#"{"x":1,"$serde_json::private::RawValue":"1"}"#,
        ] {
            assert_eq!(
                Metadata::parse_json(text),
                Err(MetadataError::SerdeToken),
                "{text}"
            );
        }
        // Escaped, and not first: seen as a key.
        let escaped = r#"{"x":1,"\u0024serde_json::private::Number":"1"}"#;
        assert_eq!(
            Metadata::parse_json(escaped),
            Err(MetadataError::SerdeToken)
        );
        // Escaped and first in its object: the parser would have made it a
        // number (it became {"n": 1} before).
        for text in [
            r#"{"n":{"\u0024serde_json::private::Number":"1"}}"#,
            r#"{"n" : { "\u0024serde_json\u003a:private::RawValue" :"[1]"}}"#,
            r#"[{"$serde_json::private::Number"  :"1"}]"#,
        ] {
            assert_eq!(
                refuse_serde_tokens(text),
                Err(MetadataError::SerdeToken),
                "{text}"
            );
        }
        // In a value it is text: stored, escaped or not, and read back the
        // same (it was accepted by the collector when escaped, then
        // dead-lettered by the consumer, which saw it unescaped).
        for text in [
            r#"{"note":"$serde_json::private::Number"}"#,
            r#"{"note":"\u0024serde_json::private::Number"}"#,
            r#"{"a":["$serde_json::private::Number", {"b": "\"$serde_json::private::\":"}]}"#,
        ] {
            let metadata = Metadata::parse_json(text).expect("a value is text");
            assert_eq!(
                Metadata::parse_json(&metadata.to_json()),
                Ok(metadata),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_too_long_written_out_are_rejected() {
        for text in [
            "1e400",
            "1E+400",
            "-1e-400",
            "1e-20000",
            "1e99999999999999999999",
            "0e-20000",
        ] {
            assert!(
                matches!(
                    Metadata::parse_json(&format!(r#"{{"n":{text}}}"#)),
                    Err(MetadataError::NumberTooLong(_))
                ),
                "{text}"
            );
        }
        assert_eq!(written_out_digits("1.5e3"), Some(4));
        assert_eq!(written_out_digits("2e-3"), Some(4));
        assert_eq!(written_out_digits("-12.25"), Some(4));
        // Each number's written-out size counts toward MAX_BYTES.
        let many: Map<String, Value> = (0..200)
            .map(|i| {
                (
                    format!("k{i}"),
                    serde_json::from_str("1e98").expect("number"),
                )
            })
            .collect();
        assert!(matches!(
            Metadata::sanitize(Value::Object(many)),
            Err(MetadataError::TooLarge(_))
        ));
    }

    #[test]
    fn other_control_characters_are_kept() {
        // JSON escapes them and jsonb stores them; only NUL cannot be stored.
        let kept = Metadata::sanitize(json!({"bell": "a\u{7}b", "tab\t": "x\ny"})).expect("kept");
        assert_eq!(kept.to_json(), r#"{"bell":"a\u0007b","tab\t":"x\ny"}"#);
    }

    #[test]
    fn nul_and_non_objects_are_rejected() {
        assert_eq!(
            Metadata::sanitize(json!({"a": "x\u{0}y"})),
            Err(MetadataError::Nul)
        );
        assert_eq!(
            Metadata::sanitize(json!({"a\u{0}": 1})),
            Err(MetadataError::Nul)
        );
        assert_eq!(
            Metadata::sanitize(json!([1])),
            Err(MetadataError::NotAnObject)
        );
        assert!(matches!(
            Metadata::parse_json("{"),
            Err(MetadataError::NotJson(_))
        ));
        assert!(matches!(
            Metadata::parse_json(r#"{"a": "\ud800"}"#),
            Err(MetadataError::NotJson(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_json_text(text in ".{0,200}") {
            let _ = Metadata::parse_json(&text);
        }

        #[test]
        fn sanitized_output_always_satisfies_the_bounds(
            keys in proptest::collection::vec("[a-zA-Z_ .-]{1,20}", 0..40),
            values in proptest::collection::vec(".{0,30}", 0..40),
        ) {
            let object: Map<String, Value> = keys.into_iter().zip(values)
                .map(|(k, v)| (k, Value::String(v))).collect();
            if let Ok(metadata) = Metadata::sanitize(Value::Object(object)) {
                let text = metadata.to_json();
                proptest::prop_assert!(text.len() <= MAX_BYTES);
                proptest::prop_assert!(!text.contains("\\u0000"));
                let reparsed = Metadata::parse_json(&text).unwrap();
                proptest::prop_assert_eq!(reparsed, metadata);
            }
        }
    }
}
