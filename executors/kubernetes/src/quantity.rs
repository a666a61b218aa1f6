//! Kubernetes resource quantities (`500m`, `2Gi`, `1.5`, `1e3`), parsed and compared exactly as
//! the API machinery does, so that an overwrite is held against its `*_overwrite_max_allowed`
//! by value (`2048Mi` equals `2Gi`, `0.5` equals `500m`), never as text or as a float.

use std::cmp::Ordering;

/// The grammar the API server accepts, as its parser names it in errors.
const FORMAT: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Why a quantity does not parse: the API machinery's three messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the form number-then-suffix.
    #[error("quantities must match the regular expression '{FORMAT}'")]
    Format,
    /// The number part is not a number.
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not one of the known ones.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// A parsed quantity: `sign * mantissa * 10^decimal * 2^binary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// The digits of the number without its point, as limbs of a big integer.
    mantissa: BigUint,
    decimal: i64,
    binary: u32,
}

/// Exponents beyond this are refused as not numeric (the API server's own bound is lower).
const MAX_EXPONENT: i64 = 1024;

impl Quantity {
    /// Parses `text` as the API server would.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Format);
        }
        let (negative, unsigned) = match text.as_bytes()[0] {
            b'+' => (false, &text[1..]),
            b'-' => (true, &text[1..]),
            _ => (false, text),
        };
        let number_length = unsigned
            .bytes()
            .take_while(|byte| byte.is_ascii_digit() || *byte == b'.')
            .count();
        let (number, suffix) = unsigned.split_at(number_length);
        if number.is_empty() {
            return Err(QuantityError::Format);
        }
        let suffix_ok = {
            let letters = suffix
                .bytes()
                .take_while(|byte| b"eEinumkKMGTP".contains(byte))
                .count();
            let rest = &suffix[letters..];
            let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            rest.bytes().all(|byte| byte.is_ascii_digit())
        };
        if !suffix_ok {
            return Err(QuantityError::Format);
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
            return Err(QuantityError::Numeric);
        }
        let mut mantissa = BigUint::zero();
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa.mul_add(10, u32::from(digit - b'0'));
        }
        let mut decimal = -(fraction.len() as i64);
        let mut binary = 0u32;
        match suffix {
            "" => {}
            "Ki" => binary = 10,
            "Mi" => binary = 20,
            "Gi" => binary = 30,
            "Ti" => binary = 40,
            "Pi" => binary = 50,
            "Ei" => binary = 60,
            "n" => decimal -= 9,
            "u" => decimal -= 6,
            "m" => decimal -= 3,
            "k" => decimal += 3,
            "M" => decimal += 6,
            "G" => decimal += 9,
            "T" => decimal += 12,
            "P" => decimal += 15,
            "E" => decimal += 18,
            exponent if exponent.starts_with(['e', 'E']) => {
                let value: i64 = exponent[1..].parse().map_err(|_| QuantityError::Suffix)?;
                if value.abs() > MAX_EXPONENT {
                    return Err(QuantityError::Numeric);
                }
                decimal += value;
            }
            _ => return Err(QuantityError::Suffix),
        }
        Ok(Self {
            negative: negative && !mantissa.is_zero(),
            mantissa,
            decimal,
            binary,
        })
    }

    /// The magnitude scaled to integers so two quantities compare: multiplied by
    /// `10^-min_decimal` and by `2^binary`.
    fn scaled(&self, min_decimal: i64) -> BigUint {
        let mut value = self.mantissa.clone();
        for _ in 0..(self.decimal - min_decimal) {
            value.mul_add(10, 0);
        }
        for _ in 0..self.binary {
            value.mul_add(2, 0);
        }
        value
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => return Ordering::Greater,
            (true, false) => return Ordering::Less,
            _ => {}
        }
        let min_decimal = self.decimal.min(other.decimal);
        let magnitude = self.scaled(min_decimal).cmp(&other.scaled(min_decimal));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

/// A small unsigned big integer: base-2^32 limbs, least significant first, no leading zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BigUint(Vec<u32>);

impl BigUint {
    fn zero() -> Self {
        Self(Vec::new())
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// `self = self * factor + addend`.
    fn mul_add(&mut self, factor: u32, addend: u32) {
        let mut carry = u64::from(addend);
        for limb in &mut self.0 {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
}

impl PartialOrd for BigUint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BigUint {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn equal_values_in_other_units_compare_equal() {
        for (a, b) in [
            ("2Gi", "2048Mi"),
            ("0.5", "500m"),
            ("1", "1000m"),
            ("1k", "1000"),
            ("1e3", "1k"),
            ("1.5Gi", "1536Mi"),
            ("100M", "1e8"),
            ("0", "-0"),
            ("+3", "3"),
            (".5", "500000u"),
        ] {
            assert_eq!(q(a).cmp(&q(b)), Ordering::Equal, "{a} vs {b}");
        }
    }

    #[test]
    fn orders_by_value() {
        assert!(q("3Gi") > q("3G"));
        assert!(q("1001m") > q("1"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert!(q("1n") > q("0"));
        assert!(q("1Ei") > q("1E"));
        assert!(q("250m") < q("0.26"));
    }

    #[test]
    fn refuses_what_the_api_server_refuses_with_its_messages() {
        for (text, error) in [
            ("", QuantityError::Format),
            ("abc", QuantityError::Format),
            ("1 Gi", QuantityError::Format),
            (" 1", QuantityError::Format),
            ("1Gx", QuantityError::Format),
            ("1.2.3", QuantityError::Numeric),
            (".", QuantityError::Numeric),
            ("1Gim", QuantityError::Suffix),
            ("1ee3", QuantityError::Suffix),
        ] {
            assert_eq!(Quantity::parse(text), Err(error.clone()), "{text:?}");
        }
        assert_eq!(
            QuantityError::Format.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    proptest::proptest! {
        /// Milli-units against the same value in whole units and in binary units.
        #[test]
        fn comparison_agrees_with_integer_arithmetic(a in 0u64..5_000_000, b in 0u64..5_000_000) {
            let (qa, qb) = (q(&format!("{a}m")), q(&format!("{b}m")));
            proptest::prop_assert_eq!(qa.cmp(&qb), a.cmp(&b));
            let (ka, kb) = (q(&format!("{a}Ki")), q(&format!("{}", b * 1024)));
            proptest::prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }
    }
}
