//! Checksum and structure validators that turn regex candidates into findings.
//!
//! Every function here is total: it answers `false`/`None` for any input it does not
//! understand, never panics, and allocates nothing.

/// Luhn (mod 10) check over decimal digits given as values `0..=9`, rightmost digit = check digit.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (position, &digit) in digits.iter().rev().enumerate() {
        let mut value = u32::from(digit);
        if position % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The 18-character Chinese resident identity number (GB 11643-1999): a known province code,
/// a real birth date (years 1900–2099) and the ISO 7064 MOD 11-2 check character.
pub(crate) fn cn_id_valid(id: &[u8]) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK_CHARS: &[u8; 11] = b"10X98765432";
    let Some((&check, body)) = id.split_last() else {
        return false;
    };
    if body.len() != 17 || !body.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let digit = |index: usize| body.get(index).map_or(0, |b| u32::from(b - b'0'));
    let province = digit(0) * 10 + digit(1);
    if !matches!(province, 11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83 | 91) {
        return false;
    }
    let year = digit(6) * 1000 + digit(7) * 100 + digit(8) * 10 + digit(9);
    let month = digit(10) * 10 + digit(11);
    let day = digit(12) * 10 + digit(13);
    if !(1900..=2099).contains(&year) || !date_valid(year, month, day) {
        return false;
    }
    let sum: u32 = WEIGHTS.iter().enumerate().map(|(index, weight)| weight * digit(index)).sum();
    let expected = CHECK_CHARS.get((sum % 11) as usize).copied();
    expected == Some(check.to_ascii_uppercase())
}

fn date_valid(year: u32, month: u32, day: u32) -> bool {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

/// The IBAN length registered for a country code, or `None` for a country without IBANs.
pub(crate) fn iban_length(country: [u8; 2]) -> Option<usize> {
    let length = match &country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FK" | b"FO" | b"GL" | b"NL" | b"SD" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"MN" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"OM" | b"SO" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"BI" | b"DJ" | b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"NI" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" | b"YE" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    };
    Some(length)
}

/// ISO 13616 check: upper-case alphanumerics, first four moved to the end, letters as 10–35,
/// the whole number mod 97 must be 1.
pub(crate) fn iban_mod97_valid(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut remainder = 0u32;
    for &byte in tail.iter().chain(head) {
        remainder = match byte {
            b'0'..=b'9' => (remainder * 10 + u32::from(byte - b'0')) % 97,
            b'A'..=b'Z' => (remainder * 100 + u32::from(byte - b'A') + 10) % 97,
            _ => return false,
        };
    }
    remainder == 1
}

/// Shannon entropy in bits per character, for telling random tokens from words.
pub(crate) fn entropy_bits_per_char(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in text.bytes() {
        if let Some(count) = counts.get_mut(usize::from(byte)) {
            *count += 1;
        }
    }
    let total = text.len() as f64;
    if total == 0.0 {
        return 0.0;
    }
    counts.iter().filter(|&&count| count > 0).map(|&count| f64::from(count) / total).map(|p| -p * p.log2()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(text: &str) -> Vec<u8> {
        text.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect()
    }

    #[test]
    fn luhn_accepts_known_card_numbers_and_rejects_one_digit_off() {
        assert!(luhn_valid(&digits("4111 1111 1111 1111")));
        assert!(luhn_valid(&digits("5500 0000 0000 0004")));
        assert!(luhn_valid(&digits("3782 822463 10005")));
        assert!(!luhn_valid(&digits("4111 1111 1111 1112")));
        assert!(!luhn_valid(&[]));
    }

    /// Appends the correct check character, so each case below fails for its stated reason only.
    fn with_check(body: &str) -> Vec<u8> {
        (0..11u8)
            .map(|i| if i == 10 { b'X' } else { b'0' + i })
            .map(|check| [body.as_bytes(), &[check]].concat())
            .find(|candidate| {
                let sum: u32 = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
                    .iter()
                    .zip(body.bytes())
                    .map(|(w, b)| w * u32::from(b - b'0'))
                    .sum();
                b"10X98765432"[(sum % 11) as usize] == candidate[17]
            })
            .unwrap()
    }

    #[test]
    fn cn_id_checks_checksum_province_and_date() {
        assert!(cn_id_valid(b"11010519491231002X"));
        assert!(cn_id_valid(b"11010519491231002x"));
        assert!(cn_id_valid(&with_check("44052419800101001")));
        assert!(!cn_id_valid(&with_check("44052418800101001")), "1880 is before 1900");
        assert!(!cn_id_valid(&with_check("11010519490230002")), "30 February");
        assert!(!cn_id_valid(&with_check("99010519491231002")), "unknown province");
        assert!(!cn_id_valid(b"110105194912310021"), "wrong check character");
        assert!(!cn_id_valid(b"1101051949123100"), "too short");
        assert!(!cn_id_valid(b"11010519491231002Y"));
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(date_valid(2000, 2, 29));
        assert!(date_valid(2024, 2, 29));
        assert!(!date_valid(1900, 2, 29));
        assert!(!date_valid(2023, 2, 29));
        assert!(!date_valid(2023, 13, 1));
        assert!(!date_valid(2023, 1, 0));
    }

    #[test]
    fn iban_mod97_and_lengths() {
        assert!(iban_mod97_valid(b"DE89370400440532013000"));
        assert!(iban_mod97_valid(b"GB82WEST12345698765432"));
        assert!(!iban_mod97_valid(b"DE88370400440532013000"));
        assert!(!iban_mod97_valid(b"DE89 370400440532013000"));
        assert_eq!(iban_length(*b"DE"), Some(22));
        assert_eq!(iban_length(*b"NO"), Some(15));
        assert_eq!(iban_length(*b"US"), None);
    }

    #[test]
    fn entropy_separates_random_tokens_from_repetition() {
        assert!(entropy_bits_per_char("aaaaaaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy_bits_per_char("q8Zr3LmA0xT7vKpW2nYc") > 4.0);
        assert!(entropy_bits_per_char("") == 0.0);
    }
}
