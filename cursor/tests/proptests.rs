//! Invariants of the token format, over arbitrary positions, keys, queries and tamperings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use tower_cursor::{
    CursorCodec, CursorErrorKind, CursorSecret, Direction, KeyId, KeyRing, Position,
    QueryFingerprint,
};

type Keys = (i64, [u8; 16], String);

fn secret(seed: u8) -> CursorSecret {
    CursorSecret::new([seed; 32]).unwrap()
}

fn codec(id: u8, seed: u8, encrypted: bool) -> CursorCodec {
    let codec = CursorCodec::new(KeyRing::new(KeyId::new(id), &secret(seed)));
    if encrypted {
        #[cfg(feature = "encrypt")]
        return codec.encrypted();
    }
    codec
}

/// Both token formats when the `encrypt` feature is on, signed only otherwise.
fn formats() -> impl Strategy<Value = bool> {
    if cfg!(feature = "encrypt") {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    }
}

fn query(params: &[(String, String)]) -> QueryFingerprint {
    params
        .iter()
        .fold(QueryFingerprint::builder().path("/items"), |b, (n, v)| {
            b.param(n.as_str(), v.as_str())
        })
        .finish()
}

fn position(after: bool, keys: Keys) -> Position<Keys> {
    if after {
        Position::after(keys)
    } else {
        Position::before(keys)
    }
}

fn keys() -> impl Strategy<Value = Keys> {
    (any::<i64>(), any::<[u8; 16]>(), ".{0,24}")
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[a-z]{1,4}", ".{0,6}"), 0..4)
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

proptest! {
    #[test]
    fn prop_decode_returns_what_encode_was_given(
        keys in keys(), after: bool, params in params(), encrypted in formats()
    ) {
        let codec = codec(1, 1, encrypted);
        let query = query(&params);
        let token = codec.encode(&position(after, keys.clone()), &query).unwrap();
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let decoded: Position<Keys> = codec.decode(&token, &query).unwrap();
        let direction = if after { Direction::After } else { Direction::Before };
        prop_assert_eq!(decoded.direction(), direction);
        prop_assert_eq!(decoded.into_keys(), keys);
    }

    #[test]
    fn prop_any_single_bit_change_is_rejected(
        keys in keys(), after: bool, bit in any::<prop::sample::Index>(), encrypted in formats()
    ) {
        let codec = codec(1, 1, encrypted);
        let query = query(&[]);
        let token = codec.encode(&position(after, keys), &query).unwrap();

        // In the decoded bytes: the signature (or AEAD tag) covers every one of them.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let altered = URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert!(codec.decode::<Keys>(&altered, &query).is_err());

        // In the characters sent: the base64 decoder refuses non-canonical trailing bits.
        let mut chars = token.into_bytes();
        let bit = bit % (chars.len() * 8);
        chars[bit / 8] ^= 1 << (bit % 8);
        if let Ok(altered) = String::from_utf8(chars) {
            prop_assert!(codec.decode::<Keys>(&altered, &query).is_err());
        }
    }

    #[test]
    fn prop_a_token_signed_with_another_secret_is_rejected(
        keys in keys(), seeds in (any::<u8>(), any::<u8>()).prop_filter("distinct", |(a, b)| a != b),
        encrypted in formats()
    ) {
        let query = query(&[]);
        let token = codec(1, seeds.0, encrypted).encode(&Position::after(keys), &query).unwrap();
        let error = codec(1, seeds.1, encrypted).decode::<Keys>(&token, &query).unwrap_err();
        prop_assert_eq!(error.kind(), CursorErrorKind::BadSignature);
    }

    #[test]
    fn prop_a_rotated_out_key_is_rejected_and_a_retained_key_still_verifies(
        keys in keys(), old in any::<u8>(), new in any::<u8>(), encrypted in formats()
    ) {
        prop_assume!(old != new);
        let query = query(&[]);
        let token = codec(old, 1, encrypted).encode(&Position::after(keys.clone()), &query).unwrap();

        let rotated = CursorCodec::new(
            KeyRing::new(KeyId::new(new), &secret(2)).retain(KeyId::new(old), &secret(1)).unwrap(),
        );
        prop_assert_eq!(rotated.decode::<Keys>(&token, &query).unwrap().into_keys(), keys);

        let dropped = CursorCodec::new(KeyRing::new(KeyId::new(new), &secret(2)));
        let error = dropped.decode::<Keys>(&token, &query).unwrap_err();
        prop_assert_eq!(error.kind(), CursorErrorKind::UnknownKey);
    }

    #[test]
    fn prop_a_token_is_accepted_until_its_expiry_and_rejected_from_then_on(
        keys in keys(), ttl in 1u64..10_000_000, late in 0u64..10_000_000, encrypted in formats()
    ) {
        let codec = codec(1, 1, encrypted).expire_after(Duration::from_secs(ttl)).unwrap();
        let query = query(&[]);
        let token = codec.encode_at(&Position::after(keys), &query, now()).unwrap();
        let expiry = now() + Duration::from_secs(ttl);
        let before = expiry - Duration::from_millis(1);
        prop_assert!(codec.decode_at::<Keys>(&token, &query, before).is_ok());
        let error = codec
            .decode_at::<Keys>(&token, &query, expiry + Duration::from_secs(late))
            .unwrap_err();
        prop_assert_eq!(error.kind(), CursorErrorKind::Expired);
    }

    #[test]
    fn prop_a_token_issued_for_one_query_is_rejected_on_another(
        keys in keys(), issued in params(), presented in params(), encrypted in formats()
    ) {
        let (issued, presented) = (query(&issued), query(&presented));
        prop_assume!(issued != presented);
        let codec = codec(1, 1, encrypted);
        let token = codec.encode(&Position::after(keys), &issued).unwrap();
        let error = codec.decode::<Keys>(&token, &presented).unwrap_err();
        prop_assert_eq!(error.kind(), CursorErrorKind::QueryMismatch);
    }

    #[test]
    fn prop_query_parameter_order_across_names_does_not_change_the_fingerprint(
        params in prop::collection::btree_map("[a-z]{1,4}", ".{0,6}", 0..5), seed: u64
    ) {
        let forward: Vec<_> = params.into_iter().collect();
        let mut shuffled = forward.clone();
        let len = shuffled.len().max(1);
        shuffled.rotate_left(usize::try_from(seed % len as u64).unwrap());
        prop_assert_eq!(query(&forward), query(&shuffled));
    }

    #[test]
    fn prop_decoding_hostile_input_never_panics(token in ".{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        let codec = codec(1, 1, cfg!(feature = "encrypt"));
        let query = query(&[]);
        let _ = codec.decode::<Keys>(&token, &query);
        // Well-formed base64 of arbitrary bytes reaches the header checks.
        let _ = codec.decode::<Keys>(&URL_SAFE_NO_PAD.encode(&bytes), &query);
        // Valid headers (both formats, a known key id) with arbitrary bodies reach the
        // signature and decryption checks.
        for format in [1u8, 2] {
            let mut token = vec![format, 1];
            token.extend_from_slice(&bytes);
            let error = codec.decode::<Keys>(&URL_SAFE_NO_PAD.encode(&token), &query);
            prop_assert!(error.is_err());
        }
    }
}

#[test]
fn a_timestamp_and_uuid_position_fits_in_80_characters() {
    let keys = (1_714_564_800_123_i64, uuid::Uuid::from_u128(u128::MAX));
    for encrypted in [false, cfg!(feature = "encrypt")] {
        let codec = codec(255, 1, encrypted)
            .expire_after(Duration::from_secs(3 * 86_400))
            .unwrap();
        let token = codec.encode(&Position::before(keys), &query(&[])).unwrap();
        assert!(token.len() <= 80, "{} characters: {token}", token.len());
        assert_eq!(
            token.len(),
            72,
            "the length the README states, with an expiry"
        );
    }
    let token = codec(1, 1, false)
        .encode(&Position::after(keys), &query(&[]))
        .unwrap();
    assert_eq!(
        token.len(),
        66,
        "the length the README states, without an expiry"
    );
}

#[test]
fn a_sub_second_issue_time_still_lives_the_whole_ttl() {
    let codec = codec(1, 1, false)
        .expire_after(Duration::from_secs(10))
        .unwrap();
    let issued = now() + Duration::from_millis(999);
    let token = codec
        .encode_at(&Position::after(1_u8), &query(&[]), issued)
        .unwrap();
    let last_moment = issued + Duration::from_secs(10) - Duration::from_nanos(1);
    assert!(
        codec
            .decode_at::<u8>(&token, &query(&[]), last_moment)
            .is_ok()
    );
    let position = codec.decode_at::<u8>(&token, &query(&[]), issued).unwrap();
    assert_eq!(position.expires_at(), Some(now() + Duration::from_secs(11)));
}

#[test]
fn invalid_lifetimes_are_refused_when_set() {
    assert!(codec(1, 1, false).expire_after(Duration::ZERO).is_err());
    assert!(codec(1, 1, false).expire_after(Duration::MAX).is_err());
}

#[test]
fn a_position_too_large_for_a_token_is_refused_when_encoding() {
    let codec = codec(1, 1, false);
    let error = codec
        .encode(&Position::after("x".repeat(2_000)), &query(&[]))
        .unwrap_err();
    assert_eq!(error.kind(), tower_cursor::EncodeErrorKind::TooLong);
    let too_long = "A".repeat(tower_cursor::MAX_TOKEN_LEN + 1);
    let error = codec.decode::<String>(&too_long, &query(&[])).unwrap_err();
    assert_eq!(error.kind(), CursorErrorKind::Malformed);
}

#[test]
fn a_payload_of_another_type_is_malformed_not_a_panic() {
    let codec = codec(1, 1, false);
    let token = codec.encode(&Position::after(7_u8), &query(&[])).unwrap();
    let error = codec
        .decode::<(i64, String)>(&token, &query(&[]))
        .unwrap_err();
    assert_eq!(error.kind(), CursorErrorKind::Malformed);
}

#[cfg(feature = "encrypt")]
#[test]
fn encrypted_tokens_hide_the_position_and_signed_ones_keep_verifying() {
    let marker = "visible-marker-1234";
    let query = query(&[]);
    let signed = codec(1, 1, false);
    let encrypted = codec(1, 1, true);
    let plain = signed.encode(&Position::after(marker), &query).unwrap();
    let sealed = encrypted.encode(&Position::after(marker), &query).unwrap();
    let contains = |token: &str| {
        let bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
        bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
    };
    assert!(contains(&plain), "signing alone leaves the values readable");
    assert!(!contains(&sealed));
    assert_eq!(
        encrypted
            .decode::<String>(&plain, &query)
            .unwrap()
            .into_keys(),
        marker
    );
}
